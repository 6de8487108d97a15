"""Rollout correction: truncated importance sampling between the sampler (the rollout engine, the behaviour policy)
and the proximal policy the update starts from (the actor's ``old_logprobs``). It corrects the numerical mismatch
between a bf16 engine and the trainer, and a sampler that is a step behind (verl's and TRL's truncated IS)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rexthinker_rl.algo.masking import masked, masked_mean

MAX_LOG_WEIGHT = 20.0  # exp(20) ~ 5e8: any weight is truncated far below; the clamp only keeps exp finite


class RolloutCorrection(NamedTuple):
    """Truncated importance sampling between the sampler and the proximal policy (the actor at the start of the
    update, whose log-probs are ``old_logprobs``): ``level`` none | token | sequence, weights capped at ``cap``."""

    level: str = "none"
    cap: float = 2.0


ROLLOUT_IS_LEVELS = ("none", "token", "sequence")
ROLLOUT_METRICS = ("logprob_diff_mean", "logprob_diff_max", "is_weight_mean", "is_clipfrac")  # logged as rollout/*


def rollout_is_weights(
    proximal: Tensor, behaviour: Tensor, mask: Tensor, correction: RolloutCorrection
) -> tuple[Tensor | None, dict[str, float]]:
    """Importance weights pi_proximal / pi_behaviour, truncated at ``correction.cap``, and what they measure.

    proximal, behaviour, mask: (batch, seq). ``token``: w_t = min(exp(prox_t - beh_t), cap); ``sequence``: one
    w = min(exp(sum_t (prox_t - beh_t)), cap) for every token of a response; ``none``: no weights (None), only the
    metrics. The weights carry no gradient. Metrics, over this batch's response tokens: ``logprob_diff_mean`` and
    ``logprob_diff_max`` of |prox - beh| (the sampler/trainer mismatch, and the staleness of a pipelined batch),
    ``is_weight_mean`` (of the truncated weights; 1 when ``none``) and ``is_clipfrac`` (share of weights truncated).
    """
    diff = masked(proximal.detach() - behaviour.to(proximal.dtype), mask)  # (batch, seq), 0 on padding
    log_weights = diff
    if correction.level == "sequence":
        log_weights = diff.sum(-1, keepdim=True).expand_as(diff)  # (batch, seq)
    raw = torch.exp(log_weights.clamp(max=MAX_LOG_WEIGHT))  # (batch, seq)
    weights = masked(raw.clamp(max=correction.cap), mask)
    tokens = mask.bool()
    metrics = {
        "logprob_diff_mean": masked_mean(diff.abs(), mask).item(),
        "logprob_diff_max": diff.abs().max().item() if tokens.any() else 0.0,
        "is_weight_mean": masked_mean(weights, mask).item() if correction.level != "none" else 1.0,
        "is_clipfrac": masked_mean((raw > correction.cap).float(), mask).item() if correction.level != "none" else 0.0,
    }
    return (None if correction.level == "none" else weights), metrics
