"""Rollout correction: truncated importance weights between the sampler and the proximal policy, against values
worked out by hand, and their place in the GRPO loss."""

from __future__ import annotations

import math

import pytest
import torch

from rexthinker_rl.algo import algorithms as alg
from rexthinker_rl.algo.rollout_correction import RolloutCorrection, rollout_is_weights
from rexthinker_rl.config import ConfigError, load_config


def t(values):
    return torch.tensor(values, dtype=torch.float64)


# Two responses, 3 and 2 tokens. proximal - behaviour per token: [ln 1.5, ln 4, -ln 2] and [ln 0.5, 0]; padding holds
# -inf in the behaviour log-probs, which must change nothing.
MASK = t([[1, 1, 1], [1, 1, 0]])
BEHAVIOUR = t([[-2.0, -3.0, -1.0], [-1.0, -0.5, -math.inf]])
PROXIMAL = BEHAVIOUR.nan_to_num(neginf=0.0) + t(
    [[math.log(1.5), math.log(4.0), -math.log(2.0)], [-math.log(2.0), 0, 0]]
)


def test_token_weights_are_truncated_per_token():
    weights, metrics = rollout_is_weights(PROXIMAL, BEHAVIOUR, MASK, RolloutCorrection("token", cap=2.0))
    torch.testing.assert_close(weights, t([[1.5, 2.0, 0.5], [0.5, 1.0, 0.0]]))  # 4 truncated to 2
    assert metrics["is_weight_mean"] == pytest.approx((1.5 + 2 + 0.5 + 0.5 + 1) / 5)
    assert metrics["is_clipfrac"] == pytest.approx(1 / 5)
    diffs = [math.log(1.5), math.log(4.0), math.log(2.0), math.log(2.0), 0.0]
    assert metrics["logprob_diff_mean"] == pytest.approx(sum(diffs) / 5)
    assert metrics["logprob_diff_max"] == pytest.approx(math.log(4.0))


def test_sequence_weights_are_one_product_per_response():
    # Response 1: 1.5 * 4 * 0.5 = 3 -> truncated to 2.5; response 2: 0.5 * 1 = 0.5.
    weights, metrics = rollout_is_weights(PROXIMAL, BEHAVIOUR, MASK, RolloutCorrection("sequence", cap=2.5))
    torch.testing.assert_close(weights, t([[2.5, 2.5, 2.5], [0.5, 0.5, 0.0]]))
    assert metrics["is_clipfrac"] == pytest.approx(3 / 5)
    assert metrics["is_weight_mean"] == pytest.approx((3 * 2.5 + 2 * 0.5) / 5)


def test_none_gives_no_weights_but_still_measures_the_mismatch():
    weights, metrics = rollout_is_weights(PROXIMAL, BEHAVIOUR, MASK, RolloutCorrection("none"))
    assert weights is None
    assert metrics["is_weight_mean"] == 1.0 and metrics["is_clipfrac"] == 0.0
    assert metrics["logprob_diff_max"] == pytest.approx(math.log(4.0))


def test_weights_carry_no_gradient():
    proximal = PROXIMAL.clone().requires_grad_()
    weights, _ = rollout_is_weights(proximal, BEHAVIOUR, MASK, RolloutCorrection("token"))
    assert not weights.requires_grad


def test_the_loss_weights_each_token_of_the_policy_term():
    """On policy (ratio 1), A = [1, -1], token-mean over 5 tokens: -sum_t(w_t * A) / 5 with the token weights above."""
    logprobs = PROXIMAL.clone().requires_grad_()
    advantages = t([1.0, -1.0])
    spec = alg.LossSpec(rollout=RolloutCorrection("token", cap=2.0))
    out = alg.grpo_loss(spec, logprobs, logprobs.detach(), advantages, MASK, rollout_logprobs=BEHAVIOUR)
    assert out.policy.item() == pytest.approx(-((1.5 + 2.0 + 0.5) - (0.5 + 1.0)) / 5)
    assert out.metrics["is_clipfrac"] == pytest.approx(1 / 5)
    out.total.backward()
    assert torch.isfinite(logprobs.grad).all()
    assert logprobs.grad[0, 0].item() == pytest.approx(-1.5 / 5)  # the weight scales the token's gradient
    plain = alg.grpo_loss(alg.LossSpec(), logprobs, logprobs.detach(), advantages, MASK, rollout_logprobs=BEHAVIOUR)
    assert plain.policy.item() == pytest.approx(-(3 - 2) / 5)  # rollout_is=none: metrics only, loss unchanged
    assert plain.metrics["logprob_diff_max"] == pytest.approx(math.log(4.0))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algorithm.rollout_is=tokens"], r"algorithm\.rollout_is"),
        (["algorithm.rollout_is_cap=0.5"], r"algorithm\.rollout_is_cap"),
        (["algorithm.rollout_is=token", "rollout.temperature=0.7"], r"needs rollout\.temperature=1"),
    ],
)
def test_config_refuses_what_cannot_be_corrected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_config_accepts_each_level():
    for level in ("none", "token", "sequence"):
        assert load_config(None, [f"algorithm.rollout_is={level}"]).algorithm.rollout_is == level
