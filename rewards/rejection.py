"""Rejection correctness: say "There is no such thing in the image." exactly when nothing matches.

Four cases by (ground truth has boxes?, answer has boxes?), plus an unreadable answer:

=====================  ========================  =================================
ground truth           answer                    ``overall``
=====================  ========================  =================================
empty                  rejection                 ``+correct_rejection`` (1.0)
has boxes              boxes                     ``+correct_detection`` (0.0)
empty                  boxes (hallucination)     ``-hallucination_penalty`` (-1.0)
has boxes              rejection (false reject)  ``-false_rejection_penalty`` (-1.0)
either                 unparseable               ``-invalid_penalty`` (0.0)
=====================  ========================  =================================

Whether the boxes are *right* is ``rewards.box``'s business; this only scores the present/absent decision, as
an optional extra component next to the default box + format reward. An empty JSON list counts as a rejection.
"""

from __future__ import annotations

import math

from rewards.parsing import parse_completion, parse_ground_truth
from rewards.types import RewardInput, RewardScore


def rejection_reward(
    inputs: list[RewardInput],
    correct_rejection: float = 1.0,
    correct_detection: float = 0.0,
    hallucination_penalty: float = 1.0,
    false_rejection_penalty: float = 1.0,
    invalid_penalty: float = 0.0,
) -> list[RewardScore]:
    """Score the decision to reject or to answer with boxes; see the module docstring for the table.

    Returns:
        Per input: ``overall`` in ``[-max(penalties), max(correct_rejection, correct_detection)]``;
        ``correct`` in {0, 1} (1 when the present/absent decision matches the ground truth);
        ``rejected`` in {0, 1} (the answer was a rejection).
    """
    values = {
        "correct_rejection": correct_rejection,
        "correct_detection": correct_detection,
        "hallucination_penalty": hallucination_penalty,
        "false_rejection_penalty": false_rejection_penalty,
        "invalid_penalty": invalid_penalty,
    }
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"rejection_reward: {name} must be a finite number, got {value!r}")
    scores: list[RewardScore] = []
    for item in inputs:
        gt_empty = not parse_ground_truth(item["ground_truth"], item.get("metadata")).boxes
        answer = parse_completion(item.get("response")).answer
        rejected = answer.kind == "rejection"
        if not answer.ok:
            overall = -invalid_penalty
        elif gt_empty:
            overall = correct_rejection if rejected else -hallucination_penalty
        else:
            overall = -false_rejection_penalty if rejected else correct_detection
        correct = answer.ok and rejected == gt_empty
        scores.append({"overall": float(overall), "correct": float(correct), "rejected": float(rejected)})
    return scores
