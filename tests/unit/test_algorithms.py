"""Unit tests for rexthinker_rl.algo.algorithms: every estimator, loss and aggregation mode against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rexthinker_rl.algo import algorithms as alg
from rexthinker_rl.config import ConfigError, load_config

torch.set_num_threads(1)

# The modes whose micro-batch losses add up to the mini-batch loss (micro-batch-token-mean, EasyR1's, does not).
AGG_MODES = ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


# ------------------------------------------------------------------------------------------------------------
# Advantages
# ------------------------------------------------------------------------------------------------------------

# Two interleaved groups and a singleton: a = [1, 0, 0, 1] at rows 0, 2, 4, 6; b = [2, 5, 8] at rows 1, 3, 5; c = [4].
SCORES = [1.0, 2.0, 0.0, 5.0, 0.0, 8.0, 1.0, 4.0]
UIDS = ["a", "b", "a", "b", "a", "b", "a", "c"]


def test_grpo_advantages_by_hand():
    # a: mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.5773503 -> +-0.5 / 0.5773503 = +-0.8660254
    # b: mean 5, unbiased var = (9 + 0 + 9) / 2 = 9, std 3 -> -1, 0, 1; c: a group of one -> 0
    eps = 1e-6
    a = 0.5 / (math.sqrt(1 / 3) + eps)
    expected = [a, -3 / (3 + eps), -a, 0.0, -a, 3 / (3 + eps), a, 0.0]
    advantages = alg.compute_advantages("grpo", t(SCORES), UIDS, eps=eps)
    torch.testing.assert_close(advantages, t(expected), rtol=0, atol=1e-12)
    assert advantages[0].item() == pytest.approx(0.8660239, abs=1e-7)  # eps shifts sqrt(3)/2 = 0.8660254


def test_grpo_uses_unbiased_std():
    # [0, 2]: unbiased std sqrt(2) -> +-1/sqrt(2); the biased std (1) would give +-1.
    advantages = alg.compute_advantages("grpo", t([0.0, 2.0]), [0, 0], eps=0.0)
    torch.testing.assert_close(advantages, t([-1 / math.sqrt(2), 1 / math.sqrt(2)]))


def test_grpo_equal_scores_give_zero_not_nan():
    advantages = alg.compute_advantages("grpo", t([1.0, 1.0, 1.0]), ["p", "p", "p"])
    assert torch.equal(advantages, t([0.0, 0.0, 0.0]))


@pytest.mark.parametrize("name", sorted(alg.ADVANTAGE_ESTIMATORS))
@pytest.mark.parametrize("reward", [0.7, 0.1, 1 / 3, 0.9 * 0.83 + 0.1])
@pytest.mark.parametrize("size", [3, 5, 16])
def test_float32_groups_of_equal_rewards_get_exactly_zero(name, reward, size):
    """16 float32 rewards of 0.7: their float32 mean rounds off 0.7 and GRPO turned that rounding into +0.106 for every
    row (verl has the same defect). A group with no signal gets exactly 0; its neighbours are untouched."""
    scores = torch.tensor([reward] * size + [0.0, 1.0], dtype=torch.float32)
    advantages = alg.compute_advantages(name, scores, ["same"] * size + ["mixed", "mixed"])
    assert advantages.dtype == torch.float32
    assert torch.equal(advantages[:size], torch.zeros(size))
    assert advantages[size] < 0 < advantages[size + 1]


def test_drgrpo_advantages_by_hand():
    expected = [0.5, -3.0, -0.5, 0.0, -0.5, 3.0, 0.5, 0.0]
    torch.testing.assert_close(alg.compute_advantages("drgrpo", t(SCORES), UIDS), t(expected))


def test_rloo_advantages_by_hand():
    # a: 1 - (0 + 0 + 1) / 3 = 2/3 and 0 - (1 + 0 + 1) / 3 = -2/3; b: 2 - 6.5, 5 - 5, 8 - 3.5; c: alone -> 0
    expected = [2 / 3, -4.5, -2 / 3, 0.0, -2 / 3, 4.5, 2 / 3, 0.0]
    torch.testing.assert_close(alg.compute_advantages("rloo", t(SCORES), UIDS), t(expected))


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo"])
def test_tensor_group_ids_match_hashable_ids(name):
    tensor_ids = torch.tensor([10, 3, 10, 3, 10, 3, 10, 99])
    torch.testing.assert_close(
        alg.compute_advantages(name, t(SCORES), tensor_ids), alg.compute_advantages(name, t(SCORES), UIDS)
    )


@pytest.mark.parametrize("name", ["grpo", "drgrpo", "rloo"])
def test_singleton_groups_get_zero(name):
    advantages = alg.compute_advantages(name, t([3.0, -1.0, 7.0]), ["x", "y", "z"])
    assert torch.equal(advantages, t([0.0, 0.0, 0.0]))


def test_grpo_singletons_are_zero_even_without_eps():
    # std is 0 for a group of one, so (r - mean) / (std + 0) would be 0 / 0.
    advantages = alg.compute_advantages("grpo", t([3.0, 1.0, 2.0]), ["x", "y", "y"], eps=0.0)
    torch.testing.assert_close(advantages, t([0.0, -0.5 / math.sqrt(0.5), 0.5 / math.sqrt(0.5)]))


def test_default_eps_is_1e_minus_6():
    advantages = alg.compute_advantages("grpo", t([0.0, 2.0]), [0, 0])
    assert advantages[1].item() == pytest.approx(1 / (math.sqrt(2) + 1e-6), rel=1e-12)


def test_integer_scores_are_accepted():
    advantages = alg.compute_advantages("drgrpo", torch.tensor([1, 0]), ["g", "g"])
    assert advantages.dtype == torch.float32
    torch.testing.assert_close(advantages, torch.tensor([0.5, -0.5]))


def test_advantage_input_errors():
    with pytest.raises(ValueError, match="drgrpo, grpo, rloo"):
        alg.compute_advantages("ppo", t([1.0]), ["a"])
    with pytest.raises(ValueError, match="group ids"):
        alg.compute_advantages("grpo", t([1.0, 2.0]), ["a"])
    with pytest.raises(ValueError, match="1-D"):
        alg.compute_advantages("grpo", t([[1.0, 2.0]]), ["a"])


group_batches = st.lists(
    st.tuples(st.integers(0, 3), st.floats(-10, 10, allow_nan=False, width=32)), min_size=1, max_size=24
)


@settings(max_examples=60, deadline=None, database=None)
@given(group_batches)
def test_property_group_moments(rows):
    uids = [uid for uid, _ in rows]
    scores = t([score for _, score in rows])
    grpo = alg.compute_advantages("grpo", scores, uids, eps=1e-6)
    drgrpo = alg.compute_advantages("drgrpo", scores, uids)
    rloo = alg.compute_advantages("rloo", scores, uids)
    for uid in set(uids):
        members = torch.tensor([u == uid for u in uids])
        n = int(members.sum())
        assert abs(grpo[members].sum().item()) < 1e-6 * n  # zero mean per group
        assert abs(drgrpo[members].sum().item()) < 1e-9 * max(1.0, scores[members].abs().sum().item())
        if n == 1:
            continue
        torch.testing.assert_close(rloo[members], drgrpo[members] * n / (n - 1))  # RLOO = n/(n-1) Dr. GRPO
        std = scores[members].std().item()
        if std > 0.1:  # unit (unbiased) std once eps is negligible
            assert grpo[members].std().item() == pytest.approx(1.0, rel=1e-4)


@settings(max_examples=30, deadline=None, database=None)
@given(group_batches, st.randoms(use_true_random=False))
def test_property_advantages_follow_a_permutation(rows, rng):
    order = list(range(len(rows)))
    rng.shuffle(order)
    uids = [uid for uid, _ in rows]
    scores = t([score for _, score in rows])
    for name in alg.ADVANTAGE_ESTIMATORS:
        advantages = alg.compute_advantages(name, scores, uids)
        permuted = alg.compute_advantages(name, scores[order], [uids[i] for i in order])
        torch.testing.assert_close(permuted, advantages[order])


# ------------------------------------------------------------------------------------------------------------
# PPO clip (clip-higher, dual clip)
# ------------------------------------------------------------------------------------------------------------

# One token per row: (advantage, ratio, expected loss, clipped, dual clipped), with clip_low 0.2, clip_high 0.3, c 3.
PPO_CASES = [
    (1.0, 1.1, -1.1, False, False),  # A > 0, inside [0.8, 1.3]
    (1.0, 1.5, -1.3, True, False),  # A > 0, above 1.3: clipped, no gradient
    (1.0, 0.5, -0.5, False, False),  # A > 0, below 0.8: pessimistic max keeps the unclipped term
    (-1.0, 0.5, 0.8, True, False),  # A < 0, below 0.8: clipped
    (-1.0, 1.2, 1.2, False, False),  # A < 0, inside
    (-1.0, 2.0, 2.0, False, False),  # A < 0, above 1.3 but under the dual cap 3
    (-1.0, 5.0, 3.0, False, True),  # A < 0, ratio 5: dual clip caps the loss at 3 * 1
    (2.0, 5.0, -2.6, True, False),  # A = 2, ratio 5: -2 * 1.3
]


def ppo_batch(cases=PPO_CASES):
    """Rows of [case token, padding token]; the padding has garbage logprobs that must not matter."""
    advantages = t([case[0] for case in cases])
    old_logprobs = t([[-1.0, 0.0] for _ in cases])
    logprobs = t([[-1.0 + math.log(case[1]), 50.0] for case in cases]).requires_grad_()
    mask = torch.tensor([[True, False] for _ in cases])
    return logprobs, old_logprobs, advantages, mask


def test_ppo_clip_per_token_values_gradients_and_flags():
    logprobs, old_logprobs, advantages, mask = ppo_batch()
    token_loss = alg.ppo_clip_loss(logprobs, old_logprobs, advantages, mask, alg.Clip(0.2, 0.3, 3.0))
    torch.testing.assert_close(token_loss.loss[:, 0], t([case[2] for case in PPO_CASES]))
    assert token_loss.clipped[:, 0].tolist() == [case[3] for case in PPO_CASES]
    assert token_loss.dual_clipped[:, 0].tolist() == [case[4] for case in PPO_CASES]
    token_loss.loss[:, 0].sum().backward()
    # d(-A * ratio)/d logp = -A * ratio where the ratio is live; 0 where a clip took over.
    live = [not (case[3] or case[4]) for case in PPO_CASES]
    expected_grad = [-a * r if is_live else 0.0 for (a, r, *_), is_live in zip(PPO_CASES, live, strict=True)]
    torch.testing.assert_close(logprobs.grad[:, 0], t(expected_grad))


def policy_loss(name, logprobs, old_logprobs, advantages, mask, loss_agg_mode="token-mean", **kwargs):
    """``grpo_loss`` with only its policy term (no entropy, no KL): (loss, metrics)."""
    clip = alg.Clip(kwargs.pop("clip_low", 0.2), kwargs.pop("clip_high", 0.3), kwargs.pop("clip_ratio_c", 3.0))
    spec = alg.LossSpec(policy_loss=name, clip=clip, agg_mode=loss_agg_mode)
    out = alg.grpo_loss(spec, logprobs, old_logprobs, advantages, mask, alg.Normalisers(**kwargs))
    assert out.entropy is None and out.kl is None and out.total is out.policy
    return out.total, out.metrics


def test_grpo_loss_adds_entropy_bonus_and_kl_penalty_by_hand():
    """On policy (ratio 1) with A = [1, -2] over 3 + 1 tokens: policy term -(1 * 3 - 2 * 1) / 4; the entropy and k1
    KL terms are token means too, weighted by their coefficients."""
    logprobs = t([[-1.0, -2.0, -3.0], [-0.5, 0.0, 0.0]]).requires_grad_()
    mask, advantages = t([[1, 1, 1], [1, 0, 0]]), t([1.0, -2.0])
    entropy, ref = t([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]]), t([[-1.5, -2.0, -3.5], [-1.0, 7.0, 7.0]])
    spec = alg.LossSpec(entropy_coef=0.1, kl_estimator="k1", kl_coef=0.5)
    out = alg.grpo_loss(spec, logprobs, logprobs.detach(), advantages, mask, entropy=entropy, ref_logprobs=ref)
    assert out.policy.item() == pytest.approx(-(3 - 2) / 4)
    assert out.entropy.item() == pytest.approx(10 / 4)
    assert out.kl.item() == pytest.approx((0.5 + 0.0 + 0.5 + 0.5) / 4)
    assert out.total.item() == pytest.approx(-0.25 - 0.1 * 2.5 + 0.5 * 0.375)
    no_kl = alg.grpo_loss(alg.LossSpec(kl_coef=0.0), logprobs, logprobs.detach(), advantages, mask, ref_logprobs=ref)
    assert no_kl.kl is None and no_kl.total.item() == pytest.approx(-0.25)
    # old_logprobs None is on-policy: the current log-probs detached, bit for bit (the actor's on-policy update)
    none = alg.grpo_loss(spec, logprobs, None, advantages, mask, entropy=entropy, ref_logprobs=ref)
    assert torch.equal(none.total, out.total) and none.metrics == out.metrics
    (grad_none,) = torch.autograd.grad(none.total, logprobs)
    (grad_out,) = torch.autograd.grad(out.total, logprobs)
    assert torch.equal(grad_none, grad_out)


@pytest.mark.parametrize("policy_loss", sorted(alg.POLICY_LOSSES))
@pytest.mark.parametrize("mode", sorted(alg.LOSS_AGGREGATIONS))
@pytest.mark.parametrize("bad", [-math.inf, math.nan])
def test_masked_positions_never_reach_the_loss(policy_loss, mode, bad):
    """A -inf or NaN log-prob, entropy or reference log-prob at a padding position (masked) changes neither the loss,
    nor its terms, nor the gradient: masks select, they do not multiply (-inf * 0 is NaN)."""
    mask = t([[1, 1, 0], [1, 0, 0]])
    clean = t([[-1.0, -2.0, -0.5], [-0.7, -0.5, -0.5]])
    dirty = torch.where(mask.bool(), clean, t(bad))
    spec = alg.LossSpec(policy_loss=policy_loss, agg_mode=mode, entropy_coef=0.1, kl_estimator="k3", kl_coef=0.5)
    advantages, old = t([1.0, -2.0]), clean - 0.1
    results = []
    for values in (clean, dirty):
        logprobs = values.clone().requires_grad_()
        dirty_old = torch.where(mask.bool(), old, values.detach())
        out = alg.grpo_loss(
            spec, logprobs, dirty_old, advantages, mask, entropy=-values, ref_logprobs=values.detach() + 0.2
        )
        out.total.backward()
        results.append((out, logprobs.grad))
    (clean_out, clean_grad), (dirty_out, dirty_grad) = results
    assert torch.isfinite(dirty_out.total) and torch.isfinite(dirty_grad).all()
    for term in ("total", "policy", "entropy", "kl"):
        torch.testing.assert_close(getattr(dirty_out, term), getattr(clean_out, term))
    assert dirty_out.metrics == pytest.approx(clean_out.metrics)
    torch.testing.assert_close(dirty_grad, clean_grad)
    assert torch.equal(dirty_grad[~mask.bool()], torch.zeros(3, dtype=torch.float64))


def test_grpo_loss_ppo_clip_token_mean_and_metrics():
    logprobs, old_logprobs, advantages, mask = ppo_batch()
    loss, metrics = policy_loss("ppo_clip", logprobs, old_logprobs, advantages, mask)
    # (-1.1 - 1.3 - 0.5 + 0.8 + 1.2 + 2.0 + 3.0 - 2.6) / 8 = 1.5 / 8
    assert loss.item() == pytest.approx(0.1875, abs=1e-12)
    assert metrics["clipfrac"] == pytest.approx(3 / 8)
    assert metrics["dual_clipfrac"] == pytest.approx(1 / 8)
    mean_log_ratio = sum(math.log(case[1]) for case in PPO_CASES) / 8
    assert metrics["approx_kl"] == pytest.approx(-mean_log_ratio)
    assert all(isinstance(value, float) for value in metrics.values())
    loss.backward()
    assert torch.equal(logprobs.grad[:, 1], torch.zeros(8, dtype=torch.float64))  # padding gets no gradient
    assert logprobs.grad[0, 0].item() == pytest.approx(-1.1 / 8)


def test_clip_higher_is_asymmetric():
    # ratio 1.25 with A > 0 is inside [0.8, 1.3] but would be clipped by a symmetric 0.2 bound;
    # ratio 0.75 with A < 0 is clipped at the low side either way.
    logprobs = t([[math.log(1.25)], [math.log(0.75)]])
    zeros, advantages, mask = t([[0.0], [0.0]]), t([1.0, -1.0]), torch.ones(2, 1)
    higher = alg.ppo_clip_loss(logprobs, zeros, advantages, mask, alg.Clip(0.2, 0.3, 3.0))
    symmetric = alg.ppo_clip_loss(logprobs, zeros, advantages, mask, alg.Clip(0.2, 0.2, 3.0))
    torch.testing.assert_close(higher.loss[:, 0], t([-1.25, 0.8]))
    torch.testing.assert_close(symmetric.loss[:, 0], t([-1.2, 0.8]))
    assert higher.clipped[:, 0].tolist() == [False, True]
    assert symmetric.clipped[:, 0].tolist() == [True, True]


def test_dual_clip_bound_is_configurable():
    logprobs, old_logprobs, advantages, mask = ppo_batch([(-2.0, 5.0, None, None, None)])
    token_loss = alg.ppo_clip_loss(logprobs, old_logprobs, advantages, mask, alg.Clip(0.2, 0.3, 4.0))
    assert token_loss.loss[0, 0].item() == pytest.approx(8.0)  # min(2 * 5, 4 * 2)
    token_loss = alg.ppo_clip_loss(logprobs, old_logprobs, advantages, mask, alg.Clip(0.2, 0.3, 6.0))
    assert token_loss.loss[0, 0].item() == pytest.approx(10.0) and not token_loss.dual_clipped.any()


# ------------------------------------------------------------------------------------------------------------
# GSPO
# ------------------------------------------------------------------------------------------------------------

# Per-token log-ratios (logp - old_logp); the last column is padding for rows 0 and 2.
GSPO_LOG_RATIOS = [[0.1, 0.3, 9.0], [0.6, 0.0, 0.3], [-0.5, -0.3, -7.0]]
GSPO_MASK = [[1, 1, 0], [1, 1, 1], [1, 1, 0]]
GSPO_ADVANTAGES = [1.0, 1.0, -1.0]  # seq ratios exp(0.2) inside, exp(0.3) > 1.3 clipped, exp(-0.4) < 0.8 clipped


def gspo_batch():
    old_logprobs = t([[-1.0, -2.0, -3.0]] * 3)
    logprobs = (old_logprobs + t(GSPO_LOG_RATIOS)).requires_grad_()
    return logprobs, old_logprobs, t(GSPO_ADVANTAGES), t(GSPO_MASK)


def test_gspo_sequence_ratio_values_and_clipping():
    logprobs, old_logprobs, advantages, mask = gspo_batch()
    token_loss = alg.gspo_loss(logprobs, old_logprobs, advantages, mask, alg.Clip(0.2, 0.3, 3.0))
    expected_rows = [-math.exp(0.2), -1.3, 0.8]  # -A * s_i, with s_i = exp(mean masked log-ratio), clipped
    for row, value in enumerate(expected_rows):
        torch.testing.assert_close(token_loss.loss[row][mask[row].bool()], t([value] * int(mask[row].sum())))
    assert token_loss.clipped[mask.bool()].tolist() == [False, False, True, True, True, True, True]
    assert not token_loss.dual_clipped.any()


def test_gspo_gradient_is_the_sequence_level_gradient():
    logprobs, old_logprobs, advantages, mask = gspo_batch()
    loss, metrics = policy_loss("gspo", logprobs, old_logprobs, advantages, mask, loss_agg_mode="seq-mean-token-mean")
    # Only row 0 is unclipped: J = -(1/3) * A_0 * s_0, d s_0 / d logp_t = s_0 / n_0 with n_0 = 2.
    assert loss.item() == pytest.approx((-math.exp(0.2) - 1.3 + 0.8) / 3)
    loss.backward()
    row0 = -math.exp(0.2) / (3 * 2)
    torch.testing.assert_close(logprobs.grad, t([[row0, row0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert metrics["clipfrac"] == pytest.approx(5 / 7)
    assert metrics["approx_kl"] == pytest.approx(-(0.1 + 0.3 + 0.6 + 0.0 + 0.3 - 0.5 - 0.3) / 7)


def test_gspo_matches_autograd_of_the_sequence_objective_when_unclipped():
    torch.manual_seed(0)
    old_logprobs = -torch.rand(4, 5, dtype=torch.float64)
    logprobs = (old_logprobs + 0.05 * torch.randn(4, 5, dtype=torch.float64)).requires_grad_()
    mask = t([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    advantages = t([0.5, -1.0, 2.0, -0.3])
    loss, metrics = policy_loss(
        "gspo",
        logprobs,
        old_logprobs,
        advantages,
        mask,
        clip_low=1.0,
        clip_high=10.0,
        loss_agg_mode="seq-mean-token-mean",
    )
    (grad,) = torch.autograd.grad(loss, logprobs)
    seq_ratio = torch.exp(((logprobs - old_logprobs) * mask).sum(-1) / mask.sum(-1))  # (batch,)
    reference = (-advantages * seq_ratio).mean()
    (reference_grad,) = torch.autograd.grad(reference, logprobs)
    assert metrics["clipfrac"] == 0.0
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, reference_grad)


def test_gspo_and_ppo_agree_on_policy():
    logprobs = t([[-1.0, -2.0, -0.5], [-0.3, -0.7, -4.0]]).requires_grad_()
    mask, advantages = t([[1, 1, 1], [1, 1, 0]]), t([0.7, -1.2])
    grads = []
    for name in ["ppo_clip", "gspo"]:
        loss, _ = policy_loss(name, logprobs, logprobs.detach(), advantages, mask)
        grads.append(torch.autograd.grad(loss, logprobs)[0])
        assert loss.item() == pytest.approx((-0.7 * 3 + 1.2 * 2) / 5)
    torch.testing.assert_close(grads[0], grads[1])
    torch.testing.assert_close(grads[0], t([[-0.7, -0.7, -0.7], [1.2, 1.2, 0.0]]) / 5)


# ------------------------------------------------------------------------------------------------------------
# KL estimators
# ------------------------------------------------------------------------------------------------------------

KL_LOGPROBS, KL_REF = [-1.0, -2.0], [-1.5, -1.0]  # logp - ref = [0.5, -1.0]
KL_EXPECTED = {
    "k1": [0.5, -1.0],
    "k2": [0.125, 0.5],
    "mse": [0.125, 0.5],
    # ref - logp = [-0.5, 1.0]: exp(-0.5) + 0.5 - 1 = 0.1065307, exp(1) - 1 - 1 = 0.7182818
    "k3": [0.1065307, 0.7182818],
    "low_var_kl": [0.1065307, 0.7182818],
    "abs": [0.5, 1.0],
}


@pytest.mark.parametrize("name", sorted(KL_EXPECTED))
def test_kl_estimators_by_hand(name):
    kl = alg.kl_penalty(name, t([KL_LOGPROBS]), t([KL_REF]))
    torch.testing.assert_close(kl, t([KL_EXPECTED[name]]), rtol=0, atol=1e-7)
    assert torch.equal(alg.kl_penalty(name, t([[-0.3, -2.0]]), t([[-0.3, -2.0]])), t([[0.0, 0.0]]))


def test_kl_registry_covers_the_config_names():
    assert set(alg.KL_ESTIMATORS) == set(KL_EXPECTED)


def test_k3_is_clamped_and_has_finite_gradients():
    # float32, where exp(100) overflows: padding-like gaps must still give finite values and gradients.
    logprobs = t([[-100.0, -1.0, 0.0]], dtype=torch.float32).requires_grad_()
    ref = t([[0.0, -6.0, -1e4]], dtype=torch.float32)
    kl = alg.kl_penalty("k3", logprobs, ref)
    # ref - logp = [100, -5, -1e4], capped at +-20 before exp: [exp(20) - 21 -> 10, exp(-5) + 4, 19 -> 10]
    torch.testing.assert_close(kl, t([[10.0, math.exp(-5) + 4.0, 10.0]], dtype=torch.float32))
    kl.sum().backward()
    assert torch.isfinite(logprobs.grad).all()
    assert logprobs.grad[0, 1].item() == pytest.approx(1 - math.exp(-5))  # d/d logp of exp(ref-logp) + logp


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.lists(st.floats(-15, 0, allow_nan=False), min_size=1, max_size=8),
    st.lists(st.floats(-15, 0, allow_nan=False), min_size=1, max_size=8),
)
def test_property_k3_non_negative_and_bounded(logprobs, ref):
    size = min(len(logprobs), len(ref))
    kl = alg.kl_penalty("low_var_kl", t([logprobs[:size]]), t([ref[:size]]))
    assert (kl >= 0).all() and (kl <= 10).all()


def test_kl_reward_penalty_sums_masked_kl():
    scores, kl = t([1.0, 0.5]), t([[0.1, 0.2, 9.0], [0.3, 0.0, -0.1]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    # 1 - 0.5 * (0.1 + 0.2) = 0.85; 0.5 - 0.5 * (0.3 + 0 - 0.1) = 0.4
    torch.testing.assert_close(alg.kl_reward_penalty(scores, kl, mask, coef=0.5), t([0.85, 0.4]))


# ------------------------------------------------------------------------------------------------------------
# Aggregation and exact gradient accumulation
# ------------------------------------------------------------------------------------------------------------

AGG_LOSS = [[1.0, 2.0, 3.0], [4.0, 100.0, -100.0]]
AGG_MASK = [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize(
    ("mode", "kwargs", "expected"),
    [
        ("token-mean", {}, (1 + 2 + 3 + 4) / 4),
        ("token-mean", {"global_tokens": 8}, 10 / 8),
        ("seq-mean-token-sum", {}, (6 + 4) / 2),
        ("seq-mean-token-sum", {"global_seqs": 5}, 10 / 5),
        ("seq-mean-token-mean", {}, (2 + 4) / 2),
        ("seq-mean-token-mean", {"global_seqs": 4}, 6 / 4),
        ("seq-mean-token-sum-norm", {}, 10 / (2 * 3)),  # default length: the padded width 3
        ("seq-mean-token-sum-norm", {"norm_len": 5}, 10 / (2 * 5)),
        ("seq-mean-token-sum-norm", {"norm_len": 5, "global_seqs": 4}, 10 / (4 * 5)),
    ],
)
def test_aggregate_loss_by_hand(mode, kwargs, expected):
    assert alg.aggregate_loss(t(AGG_LOSS), t(AGG_MASK), mode, **kwargs).item() == pytest.approx(expected)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregate_loss_of_an_empty_mask_is_zero(mode):
    assert alg.aggregate_loss(t(AGG_LOSS), torch.zeros(2, 3), mode).item() == 0.0


def test_the_config_accepts_exactly_the_registered_aggregations():
    """actor.loss_agg_mode's choices are LOSS_AGGREGATIONS' keys, not a list of their own."""
    assert sorted(alg.LOSS_AGGREGATIONS) == sorted([*AGG_MODES, "micro-batch-token-mean"])
    for mode in alg.LOSS_AGGREGATIONS:
        assert load_config(None, [f"actor.loss_agg_mode={mode}"]).actor.loss_agg_mode == mode
    with pytest.raises(ConfigError, match=r"actor.loss_agg_mode='token-sum' is invalid: expected token-mean \|"):
        load_config(None, ["actor.loss_agg_mode=token-sum"])


def test_micro_batch_token_mean_by_hand():
    # EasyR1 (rexthinker/verl/workers/actor/dp_actor.py update_policy: loss = masked_mean(...) / gradient_accumulation,
    # with masked_mean = sum / (mask.sum() + 1e-8) from verl/utils/torch_functional.py): AGG_LOSS's two rows as two
    # micro-batches of one row each -> (1 + 2 + 3) / 3 / 2 + 4 / 1 / 2 = 1 + 2 = 3 (the token mean would be 10 / 4).
    loss, mask = t(AGG_LOSS), t(AGG_MASK)
    parts = [
        alg.aggregate_loss(loss[i : i + 1], mask[i : i + 1], "micro-batch-token-mean", micro_batches=2) for i in (0, 1)
    ]
    assert [part.item() for part in parts] == pytest.approx([1.0, 2.0], rel=1e-7)
    assert sum(part.item() for part in parts) == pytest.approx(3.0, rel=1e-7)
    # One micro-batch is the plain token mean; the other normalisers play no part.
    whole = alg.aggregate_loss(loss, mask, "micro-batch-token-mean", global_tokens=99, global_seqs=7, norm_len=5)
    assert whole.item() == pytest.approx(10 / 4, rel=1e-7)
    assert alg.aggregate_loss(loss, torch.zeros(2, 3), "micro-batch-token-mean", micro_batches=4).item() == 0.0


def test_micro_batch_token_mean_accumulates_like_easyr1():
    """Gradient accumulation over MICRO_BATCHES equals EasyR1's loop written out: per micro-batch masked mean of the
    PPO loss (clip 0.2 / 0.3, dual clip 3) divided by the number of micro-batches, backward, summed."""
    logprobs, old_logprobs, advantages, mask = accumulation_batch()
    ours = torch.zeros(())
    for rows in MICRO_BATCHES:
        loss, _ = policy_loss(
            "ppo_clip", logprobs[rows], old_logprobs[rows], advantages[rows], mask[rows],
            loss_agg_mode="micro-batch-token-mean", global_tokens=123, global_seqs=45, micro_batches=3,
        )  # fmt: skip
        loss.backward()
        ours += loss.detach()
    ours_grad, logprobs.grad = logprobs.grad.clone(), None
    reference = torch.zeros(())
    for rows in MICRO_BATCHES:  # EasyR1's core_algos.compute_policy_loss, token level, then its masked_mean / GA
        log_ratio = logprobs[rows] - old_logprobs[rows]
        adv = advantages[rows, None]
        clipped = torch.exp(torch.clamp(log_ratio, math.log(0.8), math.log(1.3)))
        higher = torch.max(-adv * torch.exp(log_ratio), -adv * clipped)
        token_loss = torch.where(adv < 0, torch.min(higher, -adv * 3.0), higher)
        micro = (token_loss * mask[rows]).sum() / (mask[rows].sum() + 1e-8) / len(MICRO_BATCHES)
        micro.backward()
        reference += micro.detach()
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours_grad, logprobs.grad, rtol=1e-6, atol=1e-7)
    full, _, _, _ = accumulate("ppo_clip", "token-mean", use_global_counts=True)
    assert abs(ours.item() - full.item()) > 1e-3  # a different estimator from the global token mean


def test_count_tokens_and_seqs_skips_empty_rows():
    assert alg.count_tokens_and_seqs(torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]])) == (3, 2)


LENGTHS = [6, 1, 4, 2, 5, 3, 6]  # uneven token counts; micro-batches of 3, 2 and 2 rows
MICRO_BATCHES = [slice(0, 3), slice(3, 5), slice(5, 7)]


def accumulation_batch():
    generator = torch.Generator().manual_seed(0)
    batch, width = len(LENGTHS), max(LENGTHS)
    mask = (torch.arange(width)[None, :] < torch.tensor(LENGTHS)[:, None]).float()  # (batch, seq)
    old_logprobs = -torch.rand(batch, width, generator=generator)
    logprobs = (old_logprobs + 0.3 * torch.randn(batch, width, generator=generator)).requires_grad_()
    advantages = torch.randn(batch, generator=generator)
    return logprobs, old_logprobs, advantages, mask


def per_token_objective(logprobs, old_logprobs, advantages, mask, rows, name):
    if name == "aggregate-only":  # a non-linear per-token loss, aggregated directly
        return lambda **kwargs: alg.aggregate_loss(
            torch.sin(3 * logprobs[rows]) * advantages[rows, None], mask[rows], **kwargs
        )
    return lambda mode, **kwargs: policy_loss(
        name, logprobs[rows], old_logprobs[rows], advantages[rows], mask[rows], loss_agg_mode=mode, **kwargs
    )[0]


def accumulate(name, mode, use_global_counts):
    """(full-batch loss, full-batch grad, summed micro-batch loss, summed micro-batch grad)."""
    logprobs, old_logprobs, advantages, mask = accumulation_batch()
    full = per_token_objective(logprobs, old_logprobs, advantages, mask, slice(None), name)(mode=mode, norm_len=8)
    (full_grad,) = torch.autograd.grad(full, logprobs)
    tokens, seqs = alg.count_tokens_and_seqs(mask)
    counts = {"global_tokens": tokens, "global_seqs": seqs} if use_global_counts else {}
    total = torch.zeros(())
    for rows in MICRO_BATCHES:
        micro = per_token_objective(logprobs, old_logprobs, advantages, mask, rows, name)(
            mode=mode, norm_len=8, **counts
        )
        micro.backward()  # accumulates into logprobs.grad like optimizer micro-steps
        total += micro.detach()
    return full.detach(), full_grad, total, logprobs.grad


@pytest.mark.parametrize("name", ["aggregate-only", "ppo_clip", "gspo"])
@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batches_with_global_counts_sum_to_the_full_batch(name, mode):
    full, full_grad, total, total_grad = accumulate(name, mode, use_global_counts=True)
    assert full_grad.abs().sum() > 0
    torch.testing.assert_close(total, full, rtol=0, atol=1e-6)
    torch.testing.assert_close(total_grad, full_grad, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batches_with_local_counts_do_not_sum_to_the_full_batch(mode):
    # The control for the test above: without global normalisers the micro-batch sum is off.
    full, _, total, _ = accumulate("aggregate-only", mode, use_global_counts=False)
    assert abs(total.item() - full.item()) > 1e-3


# ------------------------------------------------------------------------------------------------------------
# Masked mean
# ------------------------------------------------------------------------------------------------------------


def test_masked_reductions_ignore_non_finite_values_outside_the_mask():
    values, mask = t([[1.0, -math.inf], [math.nan, 3.0]]), t([[1, 0], [0, 1]])
    assert alg.masked_mean(values, mask).item() == 2.0
    assert torch.equal(alg.masked_mean(values, mask, dim=-1), t([1.0, 3.0]))
    assert torch.equal(alg.kl_reward_penalty(t([1.0, 1.0]), values, mask, 0.5), t([0.5, -0.5]))


def test_masked_mean():
    values, mask = t([[1.0, 2.0], [3.0, 100.0]]), torch.tensor([[True, True], [True, False]])
    assert alg.masked_mean(values, mask).item() == pytest.approx(2.0)
    torch.testing.assert_close(alg.masked_mean(values, mask, dim=-1), t([1.5, 3.0]))
    assert alg.masked_mean(values, torch.zeros(2, 2)).item() == 0.0


# ------------------------------------------------------------------------------------------------------------
# Unknown names
# ------------------------------------------------------------------------------------------------------------


def test_unknown_names_raise_and_list_the_valid_ones():
    logprobs, old_logprobs, advantages, mask = ppo_batch()
    with pytest.raises(ValueError, match="gspo, ppo_clip"):
        policy_loss("ppo", logprobs, old_logprobs, advantages, mask)
    with pytest.raises(ValueError, match="abs, k1, k2, k3, low_var_kl, mse"):
        alg.kl_penalty("k4", logprobs, old_logprobs)
    with pytest.raises(ValueError, match="seq-mean-token-mean"):
        alg.aggregate_loss(logprobs, mask, "seq-sum")
    with pytest.raises(ValueError, match="loss aggregation mode 'seq-sum'"):
        policy_loss("ppo_clip", logprobs, old_logprobs, advantages, mask, loss_agg_mode="seq-sum")
