"""benchmarks/sampled_gain.py: the sampled held-out reward paired over prompts, overall and by what a prompt asks."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import benchutil bare
from sampled_gain import compare  # noqa: E402

KINDS = ["colour", "position", "colour", "rejection"]


def _scores(per_prompt: list[float]) -> dict:
    return {"model": "m", "samples": 4, "per_prompt": per_prompt, "kinds": KINDS}


def test_gain_and_paired_error_by_hand_overall_and_per_kind():
    start, end = _scores([0.25, 0.5, 1.0, 0.0]), _scores([0.75, 0.5, 0.75, 1.0])  # differences 0.5, 0, -0.25, 1
    result = compare(start, end)
    whole = result["all"]
    assert (whole["start"], whole["end"], whole["gain"]) == pytest.approx((0.4375, 0.75, 0.3125))
    # deviations from the mean 0.3125: 0.1875, -0.3125, -0.5625, 0.6875; sample variance 0.921875 / 3
    assert whole["se"] == pytest.approx(math.sqrt(0.921875 / 3) / 2)
    assert (whole["prompts"], whole["improved"], whole["worse"]) == (4, 2, 1)
    assert set(result) == {"all", "colour", "position", "rejection"}
    colour = result["colour"]
    assert (colour["prompts"], colour["gain"], colour["improved"], colour["worse"]) == (2, pytest.approx(0.125), 1, 1)
    assert colour["se"] == pytest.approx(math.sqrt(0.28125) / math.sqrt(2))  # differences 0.5, -0.25
    assert result["rejection"]["gain"] == pytest.approx(1.0) and math.isnan(result["rejection"]["se"])  # one prompt
