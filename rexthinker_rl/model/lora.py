"""LoRA adapters on the language model (peft), and the two views of such a model the framework needs:

- merged weights under plain Hugging Face names (W + scale * B @ A), what the rollout engine loads and what a converted
  checkpoint holds, computed out of place (``merge_lora_weights``) so the trained base weights are never touched by
  merge/unmerge round-off;
- the raw peft state dict (base + adapters), what a checkpoint stores for an exact resume.

The reference policy under LoRA is the same module with adapters disabled: no second copy of the weights.
"""

from __future__ import annotations

import re

import torch

PEFT_PREFIX = "base_model.model."
# Adapters go on the language model only: Qwen2.5-VL's vision blocks reuse the names gate_proj/up_proj/down_proj.
LANGUAGE_MODEL = r"(?:.*\.)?language_model\.(?:.*\.)?"


def apply_lora(model, lora_cfg):
    """Wrap ``model`` with trainable LoRA adapters on ``lora_cfg.target_modules``; every other weight is frozen."""
    from peft import LoraConfig, get_peft_model

    targets = "|".join(re.escape(name) for name in lora_cfg.target_modules)
    peft_config = LoraConfig(
        r=lora_cfg.rank,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=rf"{LANGUAGE_MODEL}(?:{targets})",
        bias="none",
    )
    wrapped = get_peft_model(model, peft_config)
    if not any(".lora_A." in name for name, _ in wrapped.named_parameters()):
        raise ValueError(f"model.lora.target_modules={list(lora_cfg.target_modules)} matched no language-model layer")
    return wrapped


def is_lora_state(weights: dict[str, torch.Tensor]) -> bool:
    return any(".lora_A." in name for name in weights)


def merge_lora_weights(
    weights: dict[str, torch.Tensor], lora_cfg, adapted_only: bool = False
) -> dict[str, torch.Tensor]:
    """Plain Hugging Face names -> merged weights (W + alpha / rank * B @ A, summed in float32 and rounded once to W's
    dtype) from a full peft state dict (base + adapters). The one LoRA merge: the rollout's weights (one process, every
    sharded backend, the colocated stream), the final folder and a converted checkpoint are the same numbers, in bf16
    too. Only the adapted weights are new tensors; the others are the ones given (the live weights of a one-process
    model: cloning a 7B-shaped model's 1.1B embedding and head parameters every sync would double its memory).
    ``adapted_only``: just the weights that carry adapters, the only ones training changes (what a sync sends)."""
    scale = lora_cfg.alpha / lora_cfg.rank
    merged = {}
    for name, tensor in weights.items():
        if ".lora_" in name:
            continue
        if name.endswith(".base_layer.weight"):
            prefix = name.removesuffix(".base_layer.weight")
            down, up = weights[f"{prefix}.lora_A.default.weight"], weights[f"{prefix}.lora_B.default.weight"]
            tensor = (tensor.float() + scale * (up.float() @ down.float())).to(tensor.dtype)
        elif adapted_only:
            continue
        merged[name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")] = tensor
    return merged


def merge_into(base_model, weights: dict[str, torch.Tensor], lora_cfg):
    """A plain model holding base + adapters of a raw peft state dict, merged (for conversion to Hugging Face)."""
    wrapped = apply_lora(base_model, lora_cfg)
    fits = f"LoRA checkpoint does not fit model.lora (rank {lora_cfg.rank}, targets {list(lora_cfg.target_modules)})"
    try:
        missing, unexpected = wrapped.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shape mismatches: another rank
        first = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error))
        raise ValueError(f"{fits}: {first}") from error
    lora_missing = [name for name in missing if ".lora_" in name]
    if unexpected or lora_missing:
        raise ValueError(f"{fits}: unexpected {unexpected[:3]}, missing adapters {lora_missing[:3]}")
    merged = merge_lora_weights(wrapped.state_dict(), lora_cfg)
    plain = wrapped.unload()  # the base model without its adapter layers, unmerged
    plain.load_state_dict(merged)
    return plain
