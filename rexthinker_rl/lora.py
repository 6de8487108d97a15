"""LoRA adapters on the language model (peft), and the two views of such a model the framework needs:

- merged weights under plain Hugging Face names (W + scale * B @ A), what the rollout engine loads and what a converted
  checkpoint holds, computed out of place so the trained base weights are never touched by merge/unmerge round-off;
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


def _deltas(model) -> dict[str, torch.Tensor]:
    """Plain weight name -> scaling * B @ A (summed over active adapters), in float32, on CPU."""
    from peft.tuners.lora import LoraLayer

    deltas: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, LoraLayer) and not module.disable_adapters:
            key = module_name.removeprefix(PEFT_PREFIX) + ".weight"
            for adapter in module.active_adapters:
                down, up = module.lora_A[adapter].weight, module.lora_B[adapter].weight
                delta = (up.detach().float() @ down.detach().float()).cpu() * module.scaling[adapter]
                delta = delta.T if module.fan_in_fan_out else delta
                deltas[key] = deltas[key] + delta if key in deltas else delta
    return deltas


def merged_state_dict(model, adapted_only: bool = False) -> dict[str, torch.Tensor]:
    """Plain Hugging Face names -> merged weights of a peft-wrapped model, on CPU: W + scaling * B @ A summed in
    float32 and rounded once to W's dtype (the rollout's weights, the final folder and a converted checkpoint are the
    same numbers, in bf16 too). Only the adapted weights are copies; the others are the live tensors, as
    ``Policy.state_dict`` returns without LoRA: cloning a 7B-shaped model's 1.1B embedding and head parameters for
    every sync would double the actor's memory. ``adapted_only``: just the weights that carry adapters, the only ones
    training can change."""
    deltas = _deltas(model)
    merged: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if ".lora_" in name:
            continue
        key = name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")
        base = tensor.detach().cpu()
        if key in deltas:
            merged[key] = (base.float() + deltas[key]).to(base.dtype)
        elif not adapted_only:
            merged[key] = base
    return merged


def merged_model(wrapped):
    """The plain model inside peft-wrapped ``wrapped`` (adapters removed, no longer usable as LoRA) holding the
    merged weights of :func:`merged_state_dict`."""
    weights = merged_state_dict(wrapped, adapted_only=True)
    plain = wrapped.unload()
    missing, unexpected = plain.load_state_dict(weights, strict=False)
    if unexpected:
        raise KeyError(f"merged LoRA weights do not fit the base model: {unexpected[:3]}")
    return plain


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
    return merged_model(wrapped)
