"""The Rex-Thinker reward, reproduced exactly, for runs that must be comparable with the paper.

Behaviour (every quirk kept on purpose; see the README, "Departures and fix-ups", for where our default differs):

1. Whitespace around every ``<``, ``>`` and ``/`` in the prediction is removed.
2. ``format`` is 1.0 if the whole prediction matches ``<think>.*?</think>\\s*<answer>.*?</answer>`` (dot
   matches newline), else 0.0.
3. ``accuracy``: every bracketed list of unsigned numbers, ``[`` numbers made of digits and dots separated by
   a comma and at most one space ``]``, is taken from anywhere in the prediction (``<think>`` included) and
   in the ground truth. Numbers with a dot become floats, others ints; a malformed number such as ``1.2.3``
   makes accuracy 0. Both lists empty scores 1.0; duplicate predicted lists score 0.0; otherwise it is the
   F1 of exact-equality matches (precision 1.0 with no predictions, recall 1.0 with no ground truth).
4. ``overall = (1 - format_weight) * accuracy + format_weight * format``.
"""

from __future__ import annotations

import re

from rewards.parsing import parse_ground_truth
from rewards.types import RewardInput, RewardScore

_SPACE_AROUND_MARKS = re.compile(r"\s*([<>/])\s*")
_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_NUMBER_LIST = re.compile(r"\[([\d.]+(?:, ?[\d.]+)*)\]")

Numbers = tuple[int | float, ...]


def _extract_lists(text: str) -> list[Numbers]:
    """All bracketed number lists in ``text``; raises ValueError on a malformed number such as ``1.2.3``."""
    lists = []
    for match in _NUMBER_LIST.finditer(text):
        numbers = [part.strip() for part in match.group(1).split(",")]
        lists.append(tuple(float(number) if "." in number else int(number) for number in numbers))
    return lists


def format_score(predict: str) -> float:
    """1.0 if the (whitespace-normalised) prediction is exactly a think block then an answer block."""
    return 1.0 if _FORMAT.fullmatch(predict) else 0.0


def accuracy_score(predict: str, ground_truth: str) -> float:
    """F1 of exact-equality matches between the number lists of the prediction and of the ground truth."""
    try:
        pred_lists = _extract_lists(predict)
        gt_lists = _extract_lists(ground_truth)
    except ValueError:
        return 0.0
    if not pred_lists and not gt_lists:
        return 1.0
    if len(set(pred_lists)) != len(pred_lists):
        return 0.0
    # Python equality makes [1, 2] equal to [1.0, 2.0], as in the original.
    precision = sum(box in gt_lists for box in pred_lists) / len(pred_lists) if pred_lists else 1.0
    recall = sum(box in pred_lists for box in gt_lists) / len(gt_lists) if gt_lists else 1.0
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def compute_score(predicts: list[str], ground_truths: list[str], format_weight: float = 0.1) -> list[dict]:
    """Rex-Thinker's reward, with its EasyR1-style signature: one dict of overall/format/accuracy per pair."""
    if len(predicts) != len(ground_truths):
        raise ValueError(f"compute_score: {len(predicts)} predictions but {len(ground_truths)} ground truths")
    scores = []
    for predict, ground_truth in zip(predicts, ground_truths, strict=True):
        # Not part of the original: a non-string is scored as an empty prediction instead of raising.
        predict = _SPACE_AROUND_MARKS.sub(r"\1", predict if isinstance(predict, str) else "")
        format_value = format_score(predict)
        accuracy = accuracy_score(predict, ground_truth)
        scores.append(
            {
                "overall": (1.0 - format_weight) * accuracy + format_weight * format_value,
                "format": format_value,
                "accuracy": accuracy,
            }
        )
    return scores


def rexthinker_reward(inputs: list[RewardInput], format_weight: float = 0.1) -> list[RewardScore]:
    """:func:`compute_score` behind our reward contract; a malformed ground truth raises naming the row."""
    for item in inputs:
        parse_ground_truth(item["ground_truth"], item.get("metadata"))
    return compute_score(
        [item.get("response") for item in inputs], [item["ground_truth"] for item in inputs], format_weight
    )
