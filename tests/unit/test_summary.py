"""summary.json (the validation gain and its paired standard error) and the curves' running mean."""

from __future__ import annotations

import math

import pytest

from rexthinker_rl.run.summary import describe_summary, summarize


def _history(before: float, after: float) -> list[dict[str, float]]:
    return [
        {"step": 0, "val/reward": before},
        {"step": 1, "reward/overall": 0.1},
        {"step": 2, "reward/overall": 0.3, "val/reward": after},
    ]


def test_paired_standard_error_by_hand():
    first, final = [0.1, 0.1, 1.0, 0.1], [1.0, 0.1, 1.0, 0.55]  # differences 0.9, 0, 0, 0.45
    summary = summarize(_history(0.325, 0.6625), {"0": first, "2": final})
    assert summary["val_reward_gain"] == pytest.approx(0.3375)
    # mean 0.3375; sample variance ((0.5625^2 + 0.3375^2 * 2 + 0.1125^2) / 3) = 0.185625
    assert summary["val_reward_gain_se"] == pytest.approx(math.sqrt(0.185625) / 2)
    assert (summary["val_prompts"], summary["val_prompts_improved"], summary["val_prompts_worse"]) == (4, 2, 0)
    assert summary["train_reward_first_quarter"] == pytest.approx(0.1)
    assert summary["train_reward_last_quarter"] == pytest.approx(0.3)


def test_no_paired_figures_without_both_validations():
    assert "val_reward_gain_se" not in summarize(_history(0.2, 0.3))
    assert "val_reward_gain_se" not in summarize(_history(0.2, 0.3), {"2": [0.1, 0.2]})
    assert "val_reward_gain_se" not in summarize(_history(0.2, 0.3), {"0": [0.1, 0.2], "2": [0.1]})


def test_end_of_run_lines_name_both_numbers():
    text = describe_summary(
        summarize(_history(0.325, 0.6625), {"0": [0.1, 0.1, 1.0, 0.1], "2": [1.0, 0.1, 1.0, 0.55]})
    )
    assert "before 0.325 -> after 0.662, gain +0.337" in text
    assert "paired standard error over 4 prompts 0.215, 1.6 SE; 2 prompts better, 0 worse" in text
    assert "first quarter of steps 0.100 -> last quarter 0.300" in text
    assert describe_summary({"val_reward_gain": float("nan"), "train_reward_first_quarter": float("nan")}) == ""


def test_rolling_mean_by_hand():
    from rexthinker_rl.run.plots import rolling_mean

    points = [(1, 0.0), (2, 1.0), (3, 2.0), (4, 6.0)]
    assert rolling_mean(points, 2) == [(1, 0.0), (2, 0.5), (3, 1.5), (4, 4.0)]
    assert rolling_mean(points, 10) == [(1, 0.0), (2, 0.5), (3, 1.0), (4, 2.25)]
