"""The one LoRA merge (``lora.merge_lora_weights``) on a hand-made peft state dict: W + alpha / rank * B @ A summed in
float32 and rounded once, unadapted weights passed through uncopied, and ``adapted_only`` (what a weight sync sends)
holding exactly the adapted weights."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from rexthinker_rl.model.lora import merge_lora_weights

PREFIX = "base_model.model.model.language_model.layers.0.self_attn.q_proj"


def _peft_state(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        f"{PREFIX}.base_layer.weight": torch.randn(6, 5, generator=generator).to(dtype),
        f"{PREFIX}.lora_A.default.weight": torch.randn(2, 5, generator=generator).to(dtype),
        f"{PREFIX}.lora_B.default.weight": torch.randn(6, 2, generator=generator).to(dtype),
        "base_model.model.lm_head.weight": torch.randn(7, 5, generator=generator).to(dtype),
    }


def test_full_merge_rounds_once_and_passes_the_rest_through():
    weights = _peft_state(torch.bfloat16)
    merged = merge_lora_weights(weights, SimpleNamespace(alpha=4, rank=2))
    assert set(merged) == {"model.language_model.layers.0.self_attn.q_proj.weight", "lm_head.weight"}
    base, down, up = (
        weights[f"{PREFIX}.{part}.weight"] for part in ("base_layer", "lora_A.default", "lora_B.default")
    )
    expected = (base.float() + 2.0 * (up.float() @ down.float())).to(torch.bfloat16)
    assert torch.equal(merged["model.language_model.layers.0.self_attn.q_proj.weight"], expected)
    assert merged["lm_head.weight"] is weights["base_model.model.lm_head.weight"]  # no copy of a frozen weight


def test_adapted_only_holds_just_the_adapted_weights():
    weights = _peft_state(torch.float32)
    full = merge_lora_weights(weights, SimpleNamespace(alpha=4, rank=2))
    adapted = merge_lora_weights(weights, SimpleNamespace(alpha=4, rank=2), adapted_only=True)
    assert set(adapted) == {"model.language_model.layers.0.self_attn.q_proj.weight"}
    assert all(torch.equal(tensor, full[name]) for name, tensor in adapted.items())
