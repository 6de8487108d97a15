"""The Rex-Thinker reward (``rexthinker/scripts/reward_func.py``), reproduced exactly, for runs comparable with the paper.

Behaviour, every quirk kept on purpose (docs/departures.md says where our default differs):

1. Whitespace around every ``<``, ``>`` and ``/`` in the prediction is removed.
2. ``format`` is 1.0 if the whole prediction matches ``<think>.*?</think>\\s*<answer>.*?</answer>`` (dot
   matches newline), else 0.0.
3. ``accuracy``: every bracketed list of unsigned numbers, ``[`` ASCII digits and dots separated by a comma and at
   most one space ``]``, is taken from anywhere in the prediction (``<think>`` included) and in the ground truth.
   Numbers with a dot become floats, others ints. Both lists empty scores 1.0; duplicate predicted lists score 0.0;
   otherwise F1 of precision = (predicted lists found in the ground truth) / (predicted lists) and recall = the same
   count / (ground-truth lists), so a ground truth that lists a box twice caps recall at 1/2 (precision is 1.0 with
   no predictions, recall 1.0 with no ground truth). Anything that goes wrong while scoring (a malformed number such
   as ``1.2.3``, a ground truth that is not a string) scores 0.0: this reward never raises on its inputs.
4. ``overall = (1 - format_weight) * accuracy + format_weight * format``.

Not reproduced: the original's debug log files (``DEBUG_MODE``/``LOG_PATH``), and with ``DEBUG_MODE=true`` (which its
launch script sets) a scoring error becomes an ``UnboundLocalError`` that stops the run; here it scores 0.0. A
prediction that is not a string, which makes the original raise, is scored as an empty one.
"""

from __future__ import annotations

import re

from rewards.types import RewardInput, RewardScore

_SPACE_AROUND_MARKS = re.compile(r"\s*([<>/])\s*")
_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_NUMBER_LIST = re.compile(r"\[([0-9.]+(?:, ?[0-9.]+)*)\]")  # [0-9], not \d: Unicode digits are no numbers

Numbers = tuple[int | float, ...]


def number_lists(text: str) -> list[Numbers]:
    """All bracketed number lists in ``text``, as Rex-Thinker's reward and evaluation read them; raises ValueError on
    a malformed number such as ``1.2.3`` (``int``/``float`` accept the space a list may hold after a comma)."""
    return [
        tuple(float(number) if "." in number else int(number) for number in match.group(1).split(","))
        for match in _NUMBER_LIST.finditer(text)
    ]


def format_score(predict: str) -> float:
    """1.0 if the (whitespace-normalised) prediction is exactly a think block then an answer block."""
    return 1.0 if _FORMAT.fullmatch(predict) else 0.0


def accuracy_score(predict: str, ground_truth: str) -> float:
    """F1 of exact-equality matches between the number lists of the prediction and of the ground truth."""
    try:
        gt_lists = number_lists(ground_truth)
        pred_lists = number_lists(predict)
    except Exception:  # the original scores any failure 0 (a bare except); a ground truth of another type lands here
        return 0.0
    if not pred_lists and not gt_lists:
        return 1.0
    if len(set(pred_lists)) != len(pred_lists):
        return 0.0
    # Python equality makes [1, 2] equal to [1.0, 2.0], as in the original.
    found = sum(box in gt_lists for box in pred_lists)
    recall = found / len(gt_lists) if gt_lists else 1.0
    precision = found / len(pred_lists) if pred_lists else 1.0
    if recall + precision == 0:
        return 0.0
    return 2 * recall * precision / (recall + precision)


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
    """:func:`compute_score` behind our reward contract. Unlike our other rewards it scores a malformed ground truth 0
    instead of raising, as the original does (the dataset scan still reports such rows before training)."""
    return compute_score(
        [item.get("response") for item in inputs], [item.get("ground_truth") for item in inputs], format_weight
    )
