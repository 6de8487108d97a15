"""How far one AdamW step of a sharded run may land from one process's, weight by weight, when the two gradients differ
only by float32 rounding (another summation order: ranks, micro-batches, packing): a bound from Adam's arithmetic, for
the tests that compare a sharded run with one process.

Why a fixed tolerance is wrong: Adam divides each gradient entry by its own running scale, so an entry whose gradient
is within rounding of zero takes a step of up to ``lr`` whose size and direction are the rounding's. One process and
two ranks round differently, and where depends on the CPU's kernels (AVX2 vs AVX-512): a fixed ``atol`` either fails on
another machine (1 of 32,768 entries off by 7.2e-5 against 5e-5 on an AVX-512 Xeon) or hides real errors. After that
first step the two runs' weights differ, every later gradient with them, and the gap is no longer rounding alone: so
the weights are compared entry by entry after the first update, where Adam's arithmetic bounds the gap exactly.

The first AdamW step from the same weights and an empty state moves each entry by ``lr * g / (|g| + eps)`` (the bias
corrections cancel at step 1), plus the same weight decay. With ``|g_a - g_b| <= delta``, the two steps differ by at
most ``lr * eps * delta / (max(|g| - delta, 0) + eps)**2`` (the largest slope of ``x / (|x| + eps)`` within ``delta``
of ``g``), and never by more than ``2 * lr``: nothing where the gradient is well away from zero, up to a whole step
where it is within rounding of zero.

``delta`` is measured on the machine running the test: the difference between the gradient as the one-process
reference computes it and as a second one-process policy computes it at the same weights on the same mini-batch with
another layout (packed, one row per micro-batch, chunked head), i.e. another summation order with this CPU's kernels.
A weight matrix's gradient entry ``(j, i)`` is a sum over tokens of ``dy_j * x_i``, so its rounding is bounded by a
product ``a_j * b_i`` (Cauchy-Schwarz): each entry is given the largest difference measured in its row (output
feature ``j``), which a lucky zero in one entry cannot shrink; a vector, its largest. ``ROUNDING_MARGIN`` covers the
sharded run being another sample of that rounding (measured: 8 covers the worst entry with 2.5x to spare, and allows
more than 1e-6 to 0.13% of the entries).
"""

from __future__ import annotations

import torch

from rexthinker_rl.algo.batch import split_mini_batches

ROUNDING_MARGIN = 8.0  # the sharded run's rounding against the measured reorder's: another sample of it
LOOSE_SHARE = 0.01  # at most this share of entries may be allowed a visible (> 1e-6) difference: no blanket bound
# Beyond the step itself, each run rounds the updated weight (decay, then the step): 2 x 2**-24 relative each.
FLOOR = {"atol": 1e-9, "rtol": 1e-6}


class _Captured(Exception):
    """Raised by the second policy's optimizer hook: its gradient is read, its step not taken."""


def first_update(policy, other, mini_batch) -> tuple[dict, dict[str, torch.Tensor]]:
    """Update ``policy`` on ``mini_batch`` (its first update: the same weights and an empty optimizer state as the
    sharded run's); its metrics, and the bound of :func:`first_step_bound` by parameter name, from the gradients it
    stepped with and those ``other`` (another layout) computes at the same weights."""
    params = {name: p for name, p in policy.model.named_parameters() if p.requires_grad}
    other.backend.load_full_state_dict(policy.checkpoint_state())
    theirs = _gradients(other, mini_batch)
    ours: dict[str, torch.Tensor] = {}
    group = policy.optimizer.param_groups[0]  # the learning rate of this step (before the schedule moves it)
    group = {"eps": group["eps"], "lr": group["lr"]}

    def capture(optimizer, args, kwargs):
        ours.update({n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None})

    handle = policy.optimizer.register_step_pre_hook(capture)
    try:
        metrics = policy.update(split_mini_batches(mini_batch, policy.config)[0])
    finally:
        handle.remove()
    return metrics, first_step_bound(ours, theirs, eps=group["eps"], lr=group["lr"])


def _gradients(policy, mini_batch) -> dict[str, torch.Tensor]:
    """The gradients ``policy`` would step with on ``mini_batch`` (clipped), without stepping."""
    params = {name: p for name, p in policy.model.named_parameters() if p.requires_grad}
    grads: dict[str, torch.Tensor] = {}

    def capture(optimizer, args, kwargs):
        grads.update({n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None})
        raise _Captured

    handle = policy.optimizer.register_step_pre_hook(capture)
    try:
        policy.update(split_mini_batches(mini_batch, policy.config)[0])
    except _Captured:
        pass
    finally:
        handle.remove()
    return grads


def rounding_scale(difference: torch.Tensor) -> torch.Tensor:
    """Per entry, the rounding a gradient tensor's entries carry, from one measured difference (module docstring)."""
    if difference.dim() == 2:
        return difference.amax(1, keepdim=True).expand_as(difference)
    return torch.full_like(difference, difference.max().item())


def first_step_bound(ours: dict, theirs: dict, eps: float, lr: float) -> dict[str, torch.Tensor]:
    """Per parameter name, the largest |difference| each entry may show after the first AdamW step."""
    bound = {}
    for name, gradient in ours.items():
        delta = ROUNDING_MARGIN * rounding_scale((gradient - theirs[name]).abs())
        nearest = (gradient.abs() - delta).clamp(min=0)
        bound[name] = lr * (eps * delta / (nearest + eps) ** 2).clamp(max=2.0)
    return bound


def by_state_dict_name(policy, bound: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``bound`` keyed by the names of ``policy.checkpoint_state()`` (a tied weight appears under both names)."""
    by_storage = {p.data_ptr(): name for name, p in policy.model.named_parameters()}
    out = {}
    for name, tensor in policy.model.state_dict().items():
        param_name = by_storage.get(tensor.data_ptr())
        if param_name in bound:
            out[name] = bound[param_name]
    return out


def assert_within(result: dict, expected: dict, bound: dict, initial: dict, what: str) -> None:
    """Every entry of ``result[name]`` within ``bound`` (plus the rounding floor) of ``expected[name]``; the weights
    moved; and the bound is no blanket: a whole step is allowed only where the gradient is within rounding of zero."""
    assert set(result) == set(expected), f"{what}: {sorted(set(result) ^ set(expected))[:4]}"
    loose, entries, moved = 0, 0, 0.0
    for name, reference in expected.items():
        allowed = FLOOR["atol"] + FLOOR["rtol"] * reference.abs() + bound.get(name, 0.0)
        gap = (result[name] - reference).abs()
        worst = int((gap - allowed).argmax())
        assert bool((gap <= allowed).all()), (
            f"{what} {name}: entry {worst} differs by {gap.flatten()[worst].item():.3g}, more than the "
            f"{allowed.flatten()[worst].item():.3g} float32 rounding can explain through AdamW "
            f"({int((gap > allowed).sum())} of {gap.numel()} entries)"
        )
        loose += int((allowed > 1e-6).sum())
        entries += reference.numel()
        moved = max(moved, (reference - initial[name]).abs().max().item())
    assert loose <= LOOSE_SHARE * entries, f"{what}: {loose} of {entries} entries are allowed more than 1e-6"
    assert moved > 1e-4, f"{what}: training did not move the weights: the comparison would be empty"
