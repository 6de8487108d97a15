"""Real Qwen2.5-VL shapes by name, and random models of such a shape with fewer blocks, built offline.

``shape_config("qwen2.5-vl-7b")`` is the released checkpoint's configuration (every dimension, rope/mRoPE settings,
the vision tower's window attention, special-token ids, vocabulary size); ``layers`` / ``vision_layers`` keep only
that many text and vision blocks. :func:`build_shaped_model` writes such a model with random weights (bf16 on disk,
as released), the real processor settings and a tokenizer whose special tokens sit at Qwen's ids, so it loads exactly
like a user's Qwen2.5-VL-7B folder. ``rexthinker-plan`` builds the full shape on the meta device to count parameters.

Facts: the dimensions are those of the Hugging Face ``config.json`` and ``preprocessor_config.json`` of
Qwen/Qwen2.5-VL-7B-Instruct and Qwen/Qwen2.5-VL-3B-Instruct (as published; cross-checked against printed module
trees of the released models: 152,064 x 3,584 embedding, k/v projections 3,584 -> 512, MLP 18,944, vision MLP 3,420).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rexthinker_rl.model.tiny import QWEN_SPECIAL_TOKENS, TinySpec, build_processor, build_tokenizer
from rexthinker_rl.run.outputs import check_new_folder, is_model_folder

_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,  # pixels: 8 x 8 patches, 4 x 4 merged tokens per attention window
    "fullatt_block_indexes": [7, 15, 23, 31],  # every other block attends within its window only
    "tokens_per_second": 2,
    "hidden_act": "silu",
}
_TEXT = {
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    "hidden_act": "silu",
    "use_sliding_window": False,
    "sliding_window": 32768,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-vl-7b": {
        "text": {
            **_TEXT,
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_window_layers": 28,
            "tie_word_embeddings": False,
        },
        "vision": {**_VISION, "out_hidden_size": 3584},
    },
    "qwen2.5-vl-3b": {
        "text": {
            **_TEXT,
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "max_window_layers": 70,
            "tie_word_embeddings": True,
        },
        "vision": {**_VISION, "out_hidden_size": 2048},
    },
}
# Hub ids of released models, by shape: a plan of a recipe that names one needs no download. Rex-Thinker-GRPO-7B is
# Qwen2.5-VL-7B-Instruct fine-tuned (its README: "implemented on top of QwenVL-2.5", SFT then GRPO; the weights keep
# the base's architecture), so it has the 7B's shape.
HUB_SHAPES: dict[str, str] = {
    "IDEA-Research/Rex-Thinker-GRPO-7B": "qwen2.5-vl-7b",
    "Qwen/Qwen2.5-VL-7B-Instruct": "qwen2.5-vl-7b",
    "Qwen/Qwen2.5-VL-3B-Instruct": "qwen2.5-vl-3b",
}
# Qwen2's tokenizer: 151,643 byte-level BPE tokens, then these special tokens from id 151643 on.
FIRST_SPECIAL_ID = 151643
TOKEN_IDS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}
# preprocessor_config.json of the released models (image mean/std are the processor's defaults, CLIP's).
PROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}


def hub_shape(path: str) -> str:
    """The shape of a released model named by its hub id (``HUB_SHAPES``) when no such folder is here, else ""."""
    return "" if (Path(path) / "config.json").is_file() else HUB_SHAPES.get(path, "")


class ShapeError(ValueError):
    """An unknown shape name or block count, naming the valid ones."""


def kept_fullatt_blocks(fullatt: list[int], depth: int, kept: int) -> list[int]:
    """Full-attention block indexes of a tower cut to its last ``kept`` of ``depth`` blocks (renumbered from 0).

    The released pattern ends ..., window, full (block 31): any cut of 2 or more blocks holds a window-attention
    block and a full-attention one, in the released order."""
    first = depth - kept
    return [index - first for index in fullatt if index >= first]


def shape_config(name: str, layers: int | None = None, vision_layers: int | None = None):
    """The ``Qwen2_5_VLConfig`` of the named shape, with ``layers`` text / ``vision_layers`` vision blocks if given."""
    from transformers import Qwen2_5_VLConfig

    if name not in SHAPES:
        raise ShapeError(f"unknown shape {name!r}; known shapes: {', '.join(sorted(SHAPES))}")
    text, vision = dict(SHAPES[name]["text"]), dict(SHAPES[name]["vision"])
    if layers is not None:
        if not 1 <= layers <= text["num_hidden_layers"]:
            raise ShapeError(f"--layers {layers}: {name} has 1 to {text['num_hidden_layers']} text blocks")
        text["num_hidden_layers"] = layers
    if vision_layers is not None:
        if not 1 <= vision_layers <= vision["depth"]:
            raise ShapeError(f"--vision-layers {vision_layers}: {name} has 1 to {vision['depth']} vision blocks")
        vision["fullatt_block_indexes"] = kept_fullatt_blocks(
            vision["fullatt_block_indexes"], vision["depth"], vision_layers
        )
        vision["depth"] = vision_layers
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=text["tie_word_embeddings"], **TOKEN_IDS
    )


def build_shaped_model(
    out_dir: str | Path, like: str, layers: int, vision_layers: int, seed: int = 0, overwrite: bool = False
) -> Path:
    """Write a random model of shape ``like`` with ``layers`` text and ``vision_layers`` vision blocks: bf16
    safetensors, config, generation config, the real processor settings and a tokenizer with Qwen's special-token ids
    (a small trained BPE below them; every id is under the vocabulary size). ``out_dir`` is a new or empty folder, or
    with ``overwrite`` a model folder (never anything else)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    # modeling imports torch: rexthinker-plan reads the shapes without it.
    from rexthinker_rl.model.loading import save_hf_folder

    config = shape_config(like, layers, vision_layers)
    check_new_folder(out_dir, overwrite, is_model_folder, "Hugging Face model folder", "OUT_DIR")  # before any work
    tokenizer = build_tokenizer(4096, first_special_id=FIRST_SPECIAL_ID)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    assert ids["<|image_pad|>"] == TOKEN_IDS["image_token_id"], ids  # the ids the config names
    spec = TinySpec(min_pixels=PROCESSOR["min_pixels"], max_pixels=PROCESSOR["max_pixels"])
    processor = build_processor(tokenizer, spec)
    torch.manual_seed(seed)
    # Built in bf16 directly: the float32 copy of a 7B-shaped embedding and head alone would take 4.4 GB.
    model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    text = config.text_config
    model.generation_config = GenerationConfig(
        bos_token_id=text.bos_token_id,
        eos_token_id=[text.eos_token_id, FIRST_SPECIAL_ID],
        pad_token_id=FIRST_SPECIAL_ID,
    )
    out = save_hf_folder(model, processor, out_dir, overwrite=overwrite, key="OUT_DIR")
    record = {"like": like, "layers": layers, "vision_layers": vision_layers, "seed": seed}
    (out / "shape.json").write_text(json.dumps(record, indent=2))
    return out
