"""Masked reductions over (batch, seq) tensors. Masks select (``torch.where``), they do not multiply: a -inf or NaN at
a masked position (a padding token's log-prob) must reach neither a loss nor its gradient, and -inf * 0 is NaN."""

from __future__ import annotations

import torch
from torch import Tensor


def masked(values: Tensor, mask: Tensor) -> Tensor:
    """``values`` where ``mask`` is set, 0 elsewhere, selected rather than multiplied: a -inf or NaN at a masked
    position (a padding token's log-prob) gives 0 here, where ``values * mask`` gives NaN, and no gradient flows to it."""
    return torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` where ``mask`` is set (over all elements, or along ``dim``); 0 where nothing is set."""
    kept, mask = masked(values, mask), mask.to(values.dtype)
    if dim is None:
        return kept.sum() / mask.sum().clamp(min=1)
    return kept.sum(dim) / mask.sum(dim).clamp(min=1)
