"""Pure GRPO maths: group advantages, policy losses, KL estimators, loss aggregation, entropy and logprobs.

Every function here is a pure tensor function with the shapes written beside it; variants (advantage
estimators, policy losses, KL estimators, aggregation modes) are entries in a registry dict, selected by
the names used in the config (``algorithm.adv_estimator``, ``actor.policy_loss``, ``algorithm.kl_estimator``,
``actor.loss_agg_mode``).

``grpo_loss`` is the whole objective of a (micro-)batch: every policy loss, entropy and KL term and aggregation mode
goes through it. Gradient accumulation: the aggregation divides by *global* normalisers (``Normalisers``) when given.
Pass the counts of the whole mini-batch (summed over data-parallel ranks, see ``count_tokens_and_seqs``) to every
micro-batch, and the micro-batch losses (and their gradients) add up exactly to the full mini-batch loss. This holds
when ranks all-reduce gradients by SUM; a backend that averages gradients over ranks (FSDP, DDP) needs the loss
multiplied by the world size.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import torch
from torch import Tensor

from rexthinker_rl.algo.masking import masked, masked_mean
from rexthinker_rl.algo.rollout_correction import (
    RolloutCorrection,
    rollout_is_weights,
)

# exp() of a log-ratio beyond this overflows float32 gradients; padded or wildly off-policy tokens are capped.
MAX_LOG_RATIO = 20.0
# Bound on the k3 estimate per token (as in verl/EasyR1), so one outlier token cannot dominate the KL term.
K3_BOUND = 10.0

_Entry = TypeVar("_Entry")
Count = float | Tensor | None  # a normaliser: a number, a (scalar) tensor, or None for "count this batch"


def _lookup(registry: Mapping[str, _Entry], name: str, kind: str) -> _Entry:
    """Return ``registry[name]`` or raise a ValueError that lists the valid names."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(sorted(registry))}")
    return registry[name]


# ----------------------------------------------------------------------------------------------------------
# Masked reductions, logprobs, entropy
# ----------------------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------------------
# Group advantages
# ----------------------------------------------------------------------------------------------------------


class GroupStats(NamedTuple):
    """Per-sample statistics of the sample's group, each (batch,)."""

    size: Tensor
    mean: Tensor
    std: Tensor  # unbiased (n - 1), 0 for groups of one


def group_index(group_ids: Sequence[Hashable] | Tensor, device: torch.device | None = None) -> Tensor:
    """Map arbitrary group ids (prompt uids) to dense group indices 0..G-1: (batch,) long."""
    if isinstance(group_ids, Tensor):
        return torch.unique(group_ids, return_inverse=True)[1].to(device=device, dtype=torch.long)
    first_seen: dict[Hashable, int] = {}
    indices = [first_seen.setdefault(uid, len(first_seen)) for uid in group_ids]
    return torch.tensor(indices, dtype=torch.long, device=device)


def group_stats(scores: Tensor, index: Tensor) -> GroupStats:
    """Size, mean and unbiased std of each sample's group. scores, index: (batch,)."""
    num_groups = int(index.max()) + 1 if index.numel() else 0
    zeros = scores.new_zeros(num_groups)  # (groups,)
    sizes = zeros.index_add(0, index, torch.ones_like(scores))  # (groups,)
    means = zeros.index_add(0, index, scores) / sizes.clamp(min=1)  # (groups,)
    squared_deviations = (scores - means[index]) ** 2  # (batch,)
    # Unbiased (n - 1) like torch.std, which verl/EasyR1 GRPO use; groups of one get std 0.
    variances = zeros.index_add(0, index, squared_deviations) / (sizes - 1).clamp(min=1)  # (groups,)
    return GroupStats(size=sizes[index], mean=means[index], std=variances.sqrt()[index])


def grpo_advantages(scores: Tensor, stats: GroupStats, eps: float) -> Tensor:
    """GRPO: (r - group mean) / (group std + eps). (batch,) -> (batch,)."""
    return (scores - stats.mean) / (stats.std + eps)


def drgrpo_advantages(scores: Tensor, stats: GroupStats, eps: float) -> Tensor:
    """Dr. GRPO: r - group mean, no std normalisation (removes the difficulty bias). (batch,) -> (batch,)."""
    return scores - stats.mean


def rloo_advantages(scores: Tensor, stats: GroupStats, eps: float) -> Tensor:
    """RLOO: r - mean of the *other* samples of the group = n / (n - 1) * (r - mean). (batch,) -> (batch,)."""
    return stats.size / (stats.size - 1).clamp(min=1) * (scores - stats.mean)


ADVANTAGE_ESTIMATORS: dict[str, Callable[[Tensor, GroupStats, float], Tensor]] = {
    "grpo": grpo_advantages,
    "drgrpo": drgrpo_advantages,
    "rloo": rloo_advantages,
}


def compute_advantages(name: str, scores: Tensor, group_ids: Sequence[Hashable] | Tensor, eps: float = 1e-6) -> Tensor:
    """Outcome advantages, one per response, normalised within groups of responses to the same prompt.

    name: a key of ADVANTAGE_ESTIMATORS; scores: (batch,) rewards; group_ids: (batch,) prompt uids (any
    hashables, or a tensor). Returns (batch,) in the scores' float dtype; groups of one get advantage 0.
    """
    estimator = _lookup(ADVANTAGE_ESTIMATORS, name, "advantage estimator")
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D (batch,), got shape {tuple(scores.shape)}")
    if len(group_ids) != scores.shape[0]:
        raise ValueError(f"got {len(group_ids)} group ids for {scores.shape[0]} scores; need one per score")
    dtype = scores.dtype if scores.is_floating_point() else torch.float32
    # Group statistics in float64: in float32 the mean of 16 rewards of 0.7 rounds away from 0.7, and GRPO divides
    # that rounding by a std of ~1e-8 + eps into an advantage of +0.106 for every row of a group that has no signal.
    wide = scores.to(torch.float64)
    index = group_index(group_ids, device=scores.device)
    stats = group_stats(wide, index)
    advantages = estimator(wide, stats, eps)  # (batch,)
    # A group of one, or one whose rewards are all equal, carries no signal: exactly 0, whatever the estimator.
    informative = (stats.size > 1) & (_group_extreme(wide, index, "amax") > _group_extreme(wide, index, "amin"))
    return torch.where(informative, advantages, torch.zeros_like(advantages)).to(dtype)


def _group_extreme(scores: Tensor, index: Tensor, reduce: str) -> Tensor:
    """The largest (``amax``) or smallest (``amin``) score of each sample's group. scores, index: (batch,)."""
    num_groups = int(index.max()) + 1 if index.numel() else 0
    extremes = scores.new_zeros(num_groups).scatter_reduce(0, index, scores, reduce, include_self=False)
    return extremes[index]


def informative_rows(scores: Tensor, group_ids: Sequence[Hashable]) -> list[int]:
    """Rows of the groups whose rewards are not all equal (online filtering: an all-equal group has zero advantage,
    no signal). scores: (batch,)."""
    groups: dict[Hashable, list[int]] = {}
    for row, uid in enumerate(group_ids):
        groups.setdefault(uid, []).append(row)
    return [row for rows in groups.values() if scores[rows].max() > scores[rows].min() for row in rows]


# ----------------------------------------------------------------------------------------------------------
# KL estimators (per token, policy vs reference)
# ----------------------------------------------------------------------------------------------------------


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1: logp - ref_logp (unbiased, high variance, can be negative). (batch, seq) -> (batch, seq)."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k2 / mse: 0.5 * (logp - ref_logp)^2. (batch, seq) -> (batch, seq)."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 / low_var_kl: exp(ref - logp) - (ref - logp) - 1 (>= 0), clamped to [-10, 10]. (batch, seq) -> same.

    Written as expm1(x) - x: exp(x) - x - 1 cancels catastrophically near x = 0 and can come out slightly negative
    in float32."""
    log_ratio = (ref_logprobs - logprobs).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # keeps exp() and its grad finite
    return (torch.expm1(log_ratio) - log_ratio).clamp(-K3_BOUND, K3_BOUND)


def kl_abs(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """abs: |logp - ref_logp|. (batch, seq) -> (batch, seq)."""
    return (logprobs - ref_logprobs).abs()


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "k1": kl_k1,
    "k2": kl_k2,
    "mse": kl_k2,
    "k3": kl_k3,
    "low_var_kl": kl_k3,
    "abs": kl_abs,
}


def kl_penalty(name: str, logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token KL estimate between policy and reference. (batch, seq), (batch, seq) -> (batch, seq), unmasked."""
    return _lookup(KL_ESTIMATORS, name, "KL estimator")(logprobs, ref_logprobs)


def kl_reward_penalty(scores: Tensor, kl: Tensor, response_mask: Tensor, coef: float) -> Tensor:
    """Outcome rewards minus the KL summed over each response: scores - coef * sum_t kl.

    scores: (batch,); kl, response_mask: (batch, seq) -> (batch,).
    """
    return scores - coef * masked(kl, response_mask).sum(-1)


# ----------------------------------------------------------------------------------------------------------
# Loss aggregation
# ----------------------------------------------------------------------------------------------------------


def count_tokens_and_seqs(response_mask: Tensor) -> tuple[int, int]:
    """(response tokens, sequences with at least one response token) in a (batch, seq) mask.

    These are the local normalisers ``aggregate_loss`` uses; sum them over every micro-batch (and
    data-parallel rank) of a mini-batch to get ``global_tokens`` and ``global_seqs``.
    """
    tokens_per_seq = response_mask.sum(-1)  # (batch,)
    return int(tokens_per_seq.sum()), int((tokens_per_seq > 0).sum())


class Normalisers(NamedTuple):
    """The denominators of a loss aggregation, for the whole mini-batch (summed over its micro-batches and every
    data-parallel rank); None counts this batch alone. ``norm_len``: the constant length of ``seq-mean-token-sum-norm``
    (None: mask.shape[-1]; pass the max response length so that micro-batches padded to different lengths still add
    up). ``micro_batches``: how many micro-batches (over every rank) the mini-batch was split into, for
    ``micro-batch-token-mean`` (None: 1)."""

    global_tokens: Count = None
    global_seqs: Count = None
    norm_len: float | None = None
    micro_batches: Count = None


def _normaliser(value: Count, local: float | Tensor, like: Tensor) -> Tensor:
    """``value`` (or the local count when None) as a scalar tensor, at least 1 so empty batches give 0."""
    chosen = local if value is None else value
    return torch.as_tensor(chosen, dtype=like.dtype, device=like.device).clamp(min=1)


def _seqs(mask: Tensor, norms: Normalisers, like: Tensor) -> Tensor:
    return _normaliser(norms.global_seqs, (mask.sum(-1) > 0).sum(), like)


def _token_mean(loss: Tensor, mask: Tensor, norms: Normalisers) -> Tensor:
    """sum(loss * mask) / tokens."""
    return masked(loss, mask).sum() / _normaliser(norms.global_tokens, mask.sum(), loss)


def _seq_mean_token_sum(loss: Tensor, mask: Tensor, norms: Normalisers) -> Tensor:
    """sum over sequences of the per-sequence token sums / sequences."""
    return masked(loss, mask).sum(-1).sum() / _seqs(mask, norms, loss)


def _seq_mean_token_mean(loss: Tensor, mask: Tensor, norms: Normalisers) -> Tensor:
    """sum over sequences of the per-sequence token means / sequences."""
    seq_means = masked(loss, mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (batch,)
    return seq_means.sum() / _seqs(mask, norms, loss)


def _seq_mean_token_sum_norm(loss: Tensor, mask: Tensor, norms: Normalisers) -> Tensor:
    """Dr. GRPO: sum(loss * mask) / (sequences * a constant length; default the padded length, mask.shape[-1])."""
    length = mask.shape[-1] if norms.norm_len is None else norms.norm_len
    return masked(loss, mask).sum() / (_seqs(mask, norms, loss) * length)


def _micro_batch_token_mean(loss: Tensor, mask: Tensor, norms: Normalisers) -> Tensor:
    """EasyR1's (and so Rex-Thinker's) aggregation: this micro-batch's own token mean, divided by the number of
    micro-batches the mini-batch was split into (gradient accumulation steps x data-parallel ranks, since ranks here
    sum gradients). Tokens of a short micro-batch weigh more than those of a long one: a biased estimator of the
    mini-batch token mean, kept to reproduce the paper's runs. The 1e-8 is EasyR1's masked_mean epsilon."""
    token_mean = masked(loss, mask).sum() / (mask.sum() + 1e-8)
    return token_mean / _normaliser(norms.micro_batches, 1, loss)


LOSS_AGGREGATIONS: dict[str, Callable[[Tensor, Tensor, Normalisers], Tensor]] = {
    "token-mean": _token_mean,
    "seq-mean-token-sum": _seq_mean_token_sum,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
    "micro-batch-token-mean": _micro_batch_token_mean,
}


def aggregate_loss(
    loss: Tensor,
    mask: Tensor,
    mode: str,
    global_tokens: Count = None,
    global_seqs: Count = None,
    norm_len: float | None = None,
    micro_batches: Count = None,
) -> Tensor:
    """Reduce a per-token loss (batch, seq) over the response tokens in ``mask`` (batch, seq) to a scalar.

    mode: a key of LOSS_AGGREGATIONS; the normalisers as in :class:`Normalisers`.
    """
    aggregate = _lookup(LOSS_AGGREGATIONS, mode, "loss aggregation mode")
    norms = Normalisers(global_tokens, global_seqs, norm_len, micro_batches)
    return aggregate(loss, mask.to(loss.dtype), norms)


# ----------------------------------------------------------------------------------------------------------
# Policy losses
# ----------------------------------------------------------------------------------------------------------


class TokenLoss(NamedTuple):
    """A per-token policy loss and where clipping engaged, each (batch, seq)."""

    loss: Tensor
    clipped: Tensor  # bool: the clipped objective was the pessimistic one (no gradient through the ratio)
    dual_clipped: Tensor  # bool: the dual-clip cap c * -A engaged (negative advantages only)


class Clip(NamedTuple):
    """The ratio's clip range [1 - low, 1 + high] (asymmetric: DAPO clip-higher) and the dual-clip bound c."""

    low: float = 0.2
    high: float = 0.3
    dual: float = 3.0


def _clipped_objective(ratio: Tensor, advantages: Tensor, clip: Clip) -> TokenLoss:
    """max(-A * ratio, -A * clip(ratio, 1 - low, 1 + high)); ratio: (batch, seq), A: (batch, 1)."""
    unclipped = -advantages * ratio  # (batch, seq)
    clipped = -advantages * ratio.clamp(1 - clip.low, 1 + clip.high)  # (batch, seq)
    return TokenLoss(torch.maximum(unclipped, clipped), clipped > unclipped, torch.zeros_like(ratio, dtype=torch.bool))


def ppo_clip_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip: Clip) -> TokenLoss:
    """PPO clipped surrogate with asymmetric bounds (DAPO clip-higher) and dual clip, per token.

    ratio_t = exp(logp_t - old_logp_t), clipped to [1 - clip.low, 1 + clip.high]; for A < 0 the loss is also capped
    at clip.dual * -A (dual clip), so a huge ratio on a bad sample cannot blow up the step.
    logprobs, old_logprobs, mask (the response mask): (batch, seq); advantages: (batch,).
    """
    log_ratio = masked(logprobs - old_logprobs.detach(), mask)  # (batch, seq), 0 on padding
    ratio = torch.exp(log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))  # (batch, seq)
    advantages = advantages.detach().unsqueeze(-1)  # (batch, 1)
    clipped = _clipped_objective(ratio, advantages, clip)
    cap = -advantages * clip.dual  # (batch, 1), positive where A < 0
    dual_clipped = (advantages < 0) & (clipped.loss > cap)  # (batch, seq)
    loss = torch.where(dual_clipped, cap.expand_as(clipped.loss), clipped.loss)  # (batch, seq)
    return TokenLoss(loss, clipped.clipped, dual_clipped)


def gspo_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip: Clip) -> TokenLoss:
    """GSPO-token: a sequence-level importance ratio, clipped per sequence, with per-token gradients.

    s_i = exp(mean over response tokens of (logp - old_logp)) and s_i,t = sg[s_i] * exp(logp_t - sg[logp_t]):
    its value is s_i, its gradient w.r.t. logp_t is s_i. With ``seq-mean-token-mean`` aggregation (the
    paper's) this is exactly the gradient of the sequence objective. No dual clip (clip.dual unused),
    as in the GSPO paper; note the paper uses much tighter clip ranges (3e-4 / 4e-4) than token-level PPO.
    logprobs, old_logprobs, mask (the response mask): (batch, seq); advantages: (batch,).
    """
    logprobs = masked(logprobs, mask)  # -inf - -inf below would be NaN
    log_ratio = masked(logprobs - old_logprobs.detach(), mask)  # (batch, seq)
    mask = mask.to(logprobs.dtype)
    seq_log_ratio = log_ratio.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)  # (batch, 1)
    token_log_ratio = seq_log_ratio.detach() + logprobs - logprobs.detach()  # (batch, seq), value = seq ratio
    ratio = torch.exp(token_log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))  # (batch, seq)
    return _clipped_objective(ratio, advantages.detach().unsqueeze(-1), clip)


POLICY_LOSSES: dict[str, Callable[..., TokenLoss]] = {
    "ppo_clip": ppo_clip_loss,
    "gspo": gspo_loss,
}


@dataclass(frozen=True)
class LossSpec:
    """Which loss ``grpo_loss`` computes: the names of the registries' entries and the coefficients (from the config's
    actor and algorithm sections, built once by the policy)."""

    policy_loss: str = "ppo_clip"  # a key of POLICY_LOSSES
    clip: Clip = Clip()
    agg_mode: str = "token-mean"  # a key of LOSS_AGGREGATIONS
    entropy_coef: float = 0.0
    kl_estimator: str = "low_var_kl"  # a key of KL_ESTIMATORS
    kl_coef: float = 0.0  # 0: no KL term in the loss
    rollout: RolloutCorrection = RolloutCorrection()


class GRPOLoss(NamedTuple):
    """The scalar to back-propagate and its terms (each aggregated like the policy loss)."""

    total: Tensor  # policy - entropy_coef * entropy + kl_coef * kl
    policy: Tensor
    entropy: Tensor | None
    kl: Tensor | None
    metrics: dict[str, float]  # clipfrac, dual_clipfrac, approx_kl (+ rollout_is_weights'): this batch's tokens


def grpo_loss(
    spec: LossSpec,
    logprobs: Tensor,
    old_logprobs: Tensor | None,
    advantages: Tensor,
    response_mask: Tensor,
    norms: Normalisers | None = None,
    entropy: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    rollout_logprobs: Tensor | None = None,
) -> GRPOLoss:
    """The GRPO objective of one (micro-)batch: policy loss, entropy bonus and KL penalty, each aggregated by
    ``spec.agg_mode`` over the same normalisers, so that micro-batch losses add up to the mini-batch's.

    logprobs (with grad), old_logprobs, response_mask, entropy, ref_logprobs: (batch, seq); advantages: (batch,).
    ``old_logprobs`` None: on-policy, the old policy is the current one (``logprobs`` detached: ratio exactly 1).
    ``norms``: the mini-batch's normalisers (None: this batch's own counts). The entropy term is skipped when
    ``entropy`` is None, the KL term when ``spec.kl_coef`` is 0 or there are no
    ``ref_logprobs``. Metrics: clipfrac (share of tokens where the clip engaged), dual_clipfrac, and approx_kl (mean of
    old_logp - logp, a k1 estimate of KL(old || new)). With ``rollout_logprobs`` (the sampler's), the policy loss of
    each token is weighted by the truncated importance weight of ``spec.rollout`` (:func:`rollout_is_weights`, whose
    metrics are added) against ``old_logprobs``, the proximal policy.
    """
    policy_loss = _lookup(POLICY_LOSSES, spec.policy_loss, "policy loss")
    aggregate = _lookup(LOSS_AGGREGATIONS, spec.agg_mode, "loss aggregation mode")
    norms = norms or Normalisers()
    old_logprobs = logprobs.detach() if old_logprobs is None else old_logprobs
    # Padding and prompt positions are selected away before anything is computed from them: a -inf or NaN there (a
    # padding token's log-prob) reaches neither the loss nor, through an exp or a difference, the gradient.
    logprobs, old_logprobs = masked(logprobs, response_mask), masked(old_logprobs, response_mask)
    entropy = None if entropy is None else masked(entropy, response_mask)
    ref_logprobs = None if ref_logprobs is None else masked(ref_logprobs, response_mask)
    mask = response_mask.to(logprobs.dtype)
    token_loss = policy_loss(logprobs, old_logprobs, advantages, response_mask, spec.clip)
    per_token, rollout_metrics = token_loss.loss, {}
    if rollout_logprobs is not None:
        behaviour = masked(rollout_logprobs, response_mask)
        weights, rollout_metrics = rollout_is_weights(old_logprobs, behaviour, response_mask, spec.rollout)
        per_token = per_token if weights is None else per_token * weights.to(per_token.dtype)
    policy = aggregate(per_token, mask, norms)
    total = policy
    entropy_term = kl_term = None
    if entropy is not None:
        entropy_term = aggregate(entropy, mask.to(entropy.dtype), norms)
        total = total - spec.entropy_coef * entropy_term
    if spec.kl_coef > 0 and ref_logprobs is not None:
        kl_term = aggregate(kl_penalty(spec.kl_estimator, logprobs, ref_logprobs), mask, norms)
        total = total + spec.kl_coef * kl_term
    with torch.no_grad():
        metrics = {
            "clipfrac": masked_mean(token_loss.clipped.to(logprobs.dtype), response_mask).item(),
            "dual_clipfrac": masked_mean(token_loss.dual_clipped.to(logprobs.dtype), response_mask).item(),
            "approx_kl": masked_mean(old_logprobs - logprobs, response_mask).item(),
        } | rollout_metrics
    return GRPOLoss(total, policy, entropy_term, kl_term, metrics)
