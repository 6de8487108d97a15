"""Build a tiny, randomly initialised Qwen2.5-VL offline: tokenizer, processor and weights in a Hugging Face folder.

The folder loads with ``from_pretrained`` exactly like a real checkpoint (the trainer, vLLM and the tests use the same
loading code for it as for Qwen2.5-VL-7B). Deterministic given a seed. No network.

CLI (``rexthinker_rl.apps.tiny_cli``): ``rexthinker-tiny OUT_DIR [--seed 0] [--hidden 256] [--layers 2]``; ``rexthinker-tiny
--like qwen2.5-vl-7b --layers 1 --vision-layers 2 OUT_DIR`` writes a random model of the real 7B shape with fewer blocks
(``rexthinker_rl.model.shapes``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rexthinker_rl.run.outputs import check_new_folder, is_model_folder, staging_folder, swap_folder

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Tokens a sampler must never produce (vision placeholders); the rollout engines suppress them.
VISION_SPECIAL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# Our own Jinja rendering of Qwen2.5-VL's chat format: system turn (default one when absent), image placeholders for
# image content parts, and the assistant header when a generation prompt is asked for.
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text the byte-level BPE is trained on: the task's vocabulary, so that words the tiny model must produce are few tokens.
_CORPUS_LINES = [
    "You are a helpful assistant. Please detect the object described by the referring expression.",
    "First think about the reasoning process in the mind and then provide the answer. The reasoning process and "
    "answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think><answer> answer here </answer>.",
    "Hint: Object and its coordinates in this image: ",
    "Please detect {referring} in the image.",
    "There is no such thing in the image.",
    "<think>Planning: find the box hints of the category. Action: check each hint. Summary: the matching boxes are "
    'listed.</think><answer>```json\n[{"bbox_2d": [12, 34, 56, 78], "label": "red circle"}]\n```</answer>',
    "Box 1 matches. Box 2 does not match. Box 3 matches. So the answer is boxes 1 and 3. None of the hints match.",
    "the leftmost rightmost topmost bottommost largest smallest left right top bottom middle all every each one",
    "red green blue yellow purple orange white black gray cyan magenta pink brown",
    "circle square triangle ellipse star rectangle diamond shape shapes object objects person man woman shirt hat",
    '0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 [ ] { } , : " ` json bbox_2d label',
    "planning action summary check the hint region candidate category referring expression image coordinates",
    "<think>Planning: find the red circle among the 3 circle hints. Action: Box 1 red circle at x 40: yes. Box 2 blue "
    "circle at y 12: no. Summary: 1 match. Summary: none match.</think><answer>There is no such thing in the image."
    "</answer>",
]


@dataclass
class TinySpec:
    """Sizes of the tiny model. head_dim must be >= 64 (vLLM's CPU attention needs it)."""

    hidden_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    vision_hidden_size: int = 128
    vision_depth: int = 2
    vision_heads: int = 2
    vocab_size: int = 4096
    max_position_embeddings: int = 4096
    rope_theta: float = 1e6
    min_pixels: int = 16 * 28 * 28
    max_pixels: int = 1280 * 28 * 28


def build_tokenizer(vocab_size: int, extra_corpus: list[str] | None = None, first_special_id: int | None = None):
    """Byte-level BPE with Qwen's special tokens and chat template, as a ``PreTrainedTokenizerFast``.

    ``first_special_id`` (a real shape's tokenizer): the special tokens take Qwen's ids from there on, after the
    trained BPE and unused placeholder entries that no merge produces, and Qwen's other added tokens follow."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    # Unlike Qwen (one token per digit), numbers up to 999 are single tokens here: a 2-layer model copies a hint box
    # as 4 tokens instead of ~12, which is what makes the grounding task learnable on a CPU in minutes.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIAL_TOKENS if first_special_id is None else [],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    numbers = [f"[{i}, {i}]" for i in range(1000)] * 3
    corpus = _CORPUS_LINES * 4 + numbers + list(extra_corpus or [])
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    if first_special_id is not None:
        tokenizer = _with_special_ids_at(tokenizer, first_special_id)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        additional_special_tokens=QWEN_SPECIAL_TOKENS[1:],
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


# Qwen2's added tokens after the special ones (ordinary added tokens, not special).
QWEN_EXTRA_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]


def _with_special_ids_at(tokenizer, first_special_id: int):
    """``tokenizer`` (a trained BPE without special tokens) padded with placeholder entries up to
    ``first_special_id``, then Qwen's special and extra tokens at their real ids."""
    from tokenizers import AddedToken, Tokenizer

    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    if len(vocab) > first_special_id:
        raise ValueError(f"a BPE of {len(vocab)} tokens does not fit below id {first_special_id}")
    # Placeholders: no merge produces them, so they never appear in encoded text; they decode to their own name.
    vocab.update({f"<|placeholder_{index}|>": index for index in range(len(vocab), first_special_id)})
    padded = Tokenizer.from_str(json.dumps(data))
    padded.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in QWEN_SPECIAL_TOKENS])
    padded.add_tokens([AddedToken(token, special=False, normalized=False) for token in QWEN_EXTRA_TOKENS])
    return padded


def build_processor(tokenizer, spec: TinySpec):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(
        min_pixels=spec.min_pixels,
        max_pixels=spec.max_pixels,
        size={"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels},
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
    )
    video_processor = Qwen2VLVideoProcessor(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_model_config(tokenizer, spec: TinySpec):
    from transformers import Qwen2_5_VLConfig

    head_dim = spec.hidden_size // spec.num_heads
    if head_dim < 64:
        raise ValueError(f"hidden_size/num_heads = {head_dim}: head_dim must be >= 64 for vLLM on CPU")
    quarter = head_dim // 2 // 4
    mrope_section = [head_dim // 2 - 3 * quarter, quarter + quarter // 2, quarter + quarter - quarter // 2]
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": spec.num_layers,
            "num_attention_heads": spec.num_heads,
            "num_key_value_heads": spec.num_kv_heads,
            "max_position_embeddings": spec.max_position_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": spec.rope_theta, "mrope_section": mrope_section},
            "tie_word_embeddings": True,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_hidden_size * 2,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [spec.vision_depth - 1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_model(
    out_dir: str | Path, seed: int = 0, spec: TinySpec | None = None, overwrite: bool = False
) -> Path:
    """Write a complete Hugging Face folder (model.safetensors, config, tokenizer, processor) to ``out_dir``: a new or
    empty folder, or with ``overwrite`` a model folder (never anything else)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    spec = spec or TinySpec()
    out = check_new_folder(out_dir, overwrite, is_model_folder, "Hugging Face model folder", "OUT_DIR")
    staged = staging_folder(out)  # built aside, then swapped in: a replaced model folder keeps no stale file
    tokenizer = build_tokenizer(spec.vocab_size)
    processor = build_processor(tokenizer, spec)
    config = build_model_config(tokenizer, spec)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    text = config.text_config
    model.generation_config = GenerationConfig(
        eos_token_id=text.eos_token_id, pad_token_id=text.pad_token_id, bos_token_id=text.bos_token_id
    )
    try:
        model.save_pretrained(staged, safe_serialization=True)
        processor.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        (staged / "tiny_spec.json").write_text(json.dumps(spec.__dict__, indent=2))
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return swap_folder(staged, out)
