"""Prompts for images that are not rows of a training set (HumanRef annotations, the inference CLI, the demo).

The text comes from the prompt preset of ``data_cfg`` (``data.prompt_preset``): the hints are moved into the resized
frame with the preset's box rounding, written into its ``problem`` template, and the chat prompt is built exactly as
:class:`rexthinker_rl.data.dataset.RLDataset` builds it for a training row (a test holds the two equal), so a model sees at
evaluation exactly what it was trained on, or, with a Rex-Thinker preset, what the original code showed it.
"""

from __future__ import annotations

from PIL import Image

from rexthinker_rl.config import DataConfig
from rexthinker_rl.data.dataset import DataError, PromptSample, boxes_to_resized, check_fixed_point, resized_size
from rexthinker_rl.data.prompts import chat_prompt, preset_for
from rexthinker_rl.data.reserved import check_text, tokenizer_tokens


def check_prompt_text(processor, referring: str, categories, where: str) -> None:
    """DataError naming ``where`` when the referring expression or a hint category holds a special token of the
    processor's tokenizer, reasoning markup or the image mark (``rexthinker_rl.data.reserved``)."""
    tokens = tokenizer_tokens(processor)
    for field, text in [("referring", referring), *(("hint category", str(name)) for name in categories)]:
        reason = check_text(field, text, tokens)
        if reason is not None:
            raise DataError(f"{where}: {reason}")


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
    check_prompt_text(processor, referring, hints, f"record {uid!r}" if uid else "the prompt")
    preset = preset_for(data_cfg)
    resized, size = resize_to_frame(image, data_cfg)
    rounding = preset.box_rounding
    resized_hints = {
        category: boxes_to_resized(boxes, image.size, size, rounding) for category, boxes in hints.items()
    }
    messages, prompt_text = chat_prompt(processor, preset, preset.problem_text(resized_hints, referring))
    metadata = {"image_size": list(image.size), "resized_size": list(size), "row_id": uid, "hints": resized_hints}
    metadata |= {"referring": referring, "box_rounding": rounding}
    return PromptSample(uid, messages, prompt_text, resized, "", metadata, num_prompt_tokens=0)
