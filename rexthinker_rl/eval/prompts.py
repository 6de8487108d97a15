"""Prompts for images that are not rows of a training set (HumanRef annotations, the inference CLI, the demo).

The text is the one ``rexthinker-data convert`` writes and the chat prompt the one
:class:`rexthinker_rl.data.RLDataset` builds (a test holds the two equal), so a model sees at evaluation exactly what
it was trained on.
"""

from __future__ import annotations

import json

from PIL import Image

from rexthinker_rl.config import DataConfig
from rexthinker_rl.data import PromptSample, boxes_to_resized, check_fixed_point, resized_size

HINT_PREFIX = "Hint: Object and its coordinates in this image: "  # as data_tools.synthetic / convert write it


def problem_text(hints: dict[str, list[list[int]]], referring: str) -> str:
    """Hint JSON (resized frame) and the request, as in the dataset's ``problem`` column."""
    return f"{HINT_PREFIX}{json.dumps(hints)}\nPlease detect {referring} in the image."


def chat_prompt(processor, data_cfg: DataConfig, problem: str) -> tuple[list[dict], str]:
    """``(messages, prompt_text)`` for a problem, with the format instruction and system prompt of ``data_cfg``."""
    problem = problem.replace("<image>", "").strip()
    text = f"{problem}\n{data_cfg.format_prompt}" if data_cfg.format_prompt else problem
    messages = [{"role": "system", "content": data_cfg.system_prompt}] if data_cfg.system_prompt else []
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]})
    return messages, processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def resize_to_frame(image: Image.Image, data_cfg: DataConfig) -> tuple[Image.Image, tuple[int, int]]:
    """The RGB image resized to the processor's frame (smart_resize with ``data_cfg``'s bounds) and that size."""
    size = resized_size(image.width, image.height, data_cfg.min_pixels, data_cfg.max_pixels)
    check_fixed_point(size, data_cfg.min_pixels, data_cfg.max_pixels)
    image = image.convert("RGB")
    return (image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)), size


def make_prompt(
    processor,
    data_cfg: DataConfig,
    image: Image.Image,
    referring: str,
    hints: dict[str, list[list[float]]],
    uid: str = "",
) -> PromptSample:
    """A prompt for ``image`` with box ``hints`` in original-image pixels; metadata records both frames."""
    resized, size = resize_to_frame(image, data_cfg)
    resized_hints = {category: boxes_to_resized(boxes, image.size, size) for category, boxes in hints.items()}
    messages, prompt_text = chat_prompt(processor, data_cfg, problem_text(resized_hints, referring))
    metadata = {"image_size": list(image.size), "resized_size": list(size), "row_id": uid, "hints": resized_hints}
    metadata["referring"] = referring
    return PromptSample(uid, messages, prompt_text, resized, "", metadata, num_prompt_tokens=0)
