"""Box accuracy: match predicted to ground-truth boxes one-to-one by IoU and score the F1.

Only the ``<answer>`` block is scored (boxes quoted in ``<think>``, e.g. the hints, do not count), in the
processor's resized frame, the same frame as the ground truth. A rejection is an empty prediction, so a
correct rejection (both sides empty) earns the full score of 1.0 and a wrong one earns 0.0.

Edge cases, decided explicitly:

- **Unparseable answer**: every component is 0.
- **Duplicates** (identical predicted boxes), by ``duplicates``: ``"unmatched"`` (default) leaves every
  copy unmatched, so each is a false positive (it cannot claim a second, overlapping target either);
  ``"merge"`` drops copies before matching; ``"zero"`` scores the whole answer 0, as Rex-Thinker does.
- **Out-of-image boxes** (a coordinate outside ``[0, w] x [0, h]`` of ``metadata["resized_size"]``), by
  ``out_of_image``: ``"clip"`` (default) clips them to the frame; ``"miss"`` makes them match nothing;
  ``"ignore"`` scores them as written. Without ``resized_size`` nothing is checked.
- **Inverted boxes** (``x1 < x0`` or ``y1 < y0``) match nothing. Identical boxes have IoU 1, zero-area ones too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from rewards.parsing import Box, box_in_frame, parse_completion, parse_ground_truth
from rewards.types import RewardInput, RewardScore

COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * step, 2) for step in range(10))  # 0.5, 0.55, ..., 0.95
# An IoU computed as 0.49999999999 for a pair that is exactly at the threshold on paper still counts.
_THRESHOLD_SLACK = 1e-9


def iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``pred`` (P, 4) and ``gt`` (G, 4) boxes as ``(x0, y0, x1, y1)``; returns (P, G)."""
    # Absurd coordinates (1e200) overflow to inf/nan; those pairs end up with IoU 0, so silence the warnings.
    with np.errstate(over="ignore", invalid="ignore"):
        return _iou_matrix(pred.reshape(-1, 4), gt.reshape(-1, 4))


def _iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    inter_w = np.minimum(pred[:, None, 2], gt[None, :, 2]) - np.maximum(pred[:, None, 0], gt[None, :, 0])  # (P, G)
    inter_h = np.minimum(pred[:, None, 3], gt[None, :, 3]) - np.maximum(pred[:, None, 1], gt[None, :, 1])  # (P, G)
    # An inverted box (x1 < x0 or y1 < y0) has a negative extent on that axis, so its intersection is 0.
    inter = np.clip(inter_w, 0.0, None) * np.clip(inter_h, 0.0, None)
    area_pred = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])  # (P,)
    area_gt = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])  # (G,)
    union = area_pred[:, None] + area_gt[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    # Identical boxes are a perfect match even where the ratio is undefined (zero area, overflow).
    iou[(pred[:, None, :] == gt[None, :, :]).all(axis=-1)] = 1.0
    return np.clip(iou, 0.0, 1.0, out=iou)  # rounding must never push a perfect match above 1


def match_hungarian(iou: np.ndarray, threshold: float) -> np.ndarray:
    """IoUs of the one-to-one assignment with the most pairs at or above ``threshold``; ties go to higher IoU.

    Maximising total IoU alone can trade a true positive away: pairs (0.43, 0.33) beat (0.5, 0.25) on the sum
    but score 0 instead of 1 match at 0.5. So each pair is worth 1 for clearing the threshold plus its IoU
    scaled to below 1 in total, which only ever breaks ties between assignments with equally many matches.
    """
    weight = (iou >= threshold - _THRESHOLD_SLACK) + iou / (min(iou.shape) + 1)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return iou[rows, cols]


def match_hungarian_iou(iou: np.ndarray, threshold: float) -> np.ndarray:
    """IoUs of the one-to-one assignment that maximises total IoU, whatever the threshold."""
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return iou[rows, cols]


def match_greedy(iou: np.ndarray, threshold: float) -> np.ndarray:
    """IoUs of the greedy one-to-one matching: repeatedly take the highest-IoU pair whose boxes are both free."""
    num_gt = iou.shape[1]
    used_pred: set[int] = set()
    used_gt: set[int] = set()
    matched = []
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        pred_index, gt_index = divmod(int(flat), num_gt)
        value = iou[pred_index, gt_index]
        if value <= 0.0:
            break
        if pred_index not in used_pred and gt_index not in used_gt:
            used_pred.add(pred_index)
            used_gt.add(gt_index)
            matched.append(value)
    return np.asarray(matched, dtype=float)


# Each takes the (pred, gt) IoU matrix and the threshold and returns the IoUs of the matched pairs.
MATCHERS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "hungarian": match_hungarian,
    "hungarian_iou": match_hungarian_iou,
    "greedy": match_greedy,
}
DUPLICATE_MODES = ("unmatched", "merge", "zero")
OUT_OF_IMAGE_MODES = ("clip", "miss", "ignore")


def canonical_iou_matrix(pred: Sequence[Box], gt: Sequence[Box]) -> np.ndarray:
    """IoU matrix (P, G) of the boxes sorted by coordinates.

    Sorting first makes every matcher independent of the order in which the model listed its boxes: with
    tied IoUs, the chosen pairs (and so the count above a threshold) could otherwise depend on it.
    """
    if not pred or not gt:
        return np.zeros((len(pred), len(gt)))
    return iou_matrix(np.asarray(sorted(pred), dtype=float), np.asarray(sorted(gt), dtype=float))


def match_boxes(
    pred: Sequence[Box], gt: Sequence[Box], matching: str = "hungarian", threshold: float = 0.5
) -> np.ndarray:
    """IoUs of the matched (pred, gt) pairs; at most ``min(len(pred), len(gt))`` of them."""
    iou = canonical_iou_matrix(pred, gt)
    return MATCHERS[matching](iou, threshold) if iou.size else np.zeros(0)


def f1_at(matched_ious: np.ndarray, num_pred: int, num_gt: int, threshold: float) -> tuple[float, float, float]:
    """(precision, recall, F1) counting matched pairs with IoU >= threshold as true positives.

    No predictions means precision 1 (nothing wrong was said); no ground truth means recall 1; so both
    empty is F1 1, and exactly one side empty is F1 0.
    """
    true_pos = int(np.count_nonzero(matched_ious >= threshold - _THRESHOLD_SLACK))
    precision = true_pos / num_pred if num_pred else 1.0
    recall = true_pos / num_gt if num_gt else 1.0
    f1 = 2 * true_pos / (num_pred + num_gt) if num_pred + num_gt else 1.0
    return precision, recall, f1


def _prepare_predictions(
    boxes: Sequence[Box], frame: Sequence[float] | None, duplicates: str, out_of_image: str
) -> tuple[list[Box], int, float, int]:
    """Apply the duplicate and out-of-image rules; return (boxes to match, number predicted, out rate, copies)."""
    distinct = list(dict.fromkeys(boxes))
    num_copies = len(boxes) - len(distinct)
    # Only distinct boxes take part in matching; under "unmatched" the copies still count as predictions,
    # so each is a false positive even when a second, overlapping target could have taken it.
    num_pred = len(distinct) if duplicates == "merge" else len(boxes)
    if frame is None or out_of_image == "ignore" or not boxes:
        return distinct, num_pred, 0.0, num_copies
    width, height = float(frame[0]), float(frame[1])
    out_rate = sum(not box_in_frame(box, (width, height)) for box in boxes) / len(boxes)
    if out_of_image == "miss":
        # An out-of-frame box still counts as predicted (a false positive) but can never match.
        return [box for box in distinct if box_in_frame(box, (width, height))], num_pred, out_rate, num_copies
    clipped = [
        (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))
        for x0, y0, x1, y1 in distinct
    ]
    return clipped, num_pred, out_rate, num_copies


def _resolve_thresholds(iou_threshold: float, iou_thresholds: Sequence[float] | str | None) -> tuple[float, ...]:
    """The thresholds to average F1 over: none, ``"coco"`` (0.5:0.05:0.95) or the given list."""
    if iou_thresholds is None:
        averaged: tuple[float, ...] = ()
    elif isinstance(iou_thresholds, str):
        if iou_thresholds != "coco":
            raise ValueError(f"iou_thresholds must be a list of floats or 'coco', got {iou_thresholds!r}")
        averaged = COCO_THRESHOLDS
    else:
        averaged = tuple(float(t) for t in iou_thresholds)
        if not averaged:
            raise ValueError("iou_thresholds must not be empty; leave it unset to score at iou_threshold alone")
    if not all(0.0 < t <= 1.0 for t in (float(iou_threshold), *averaged)):
        raise ValueError(f"IoU thresholds must be in (0, 1], got {iou_threshold!r} and {iou_thresholds!r}")
    return averaged


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def score_boxes(
    pred: Sequence[Box],
    gt: Sequence[Box],
    frame: Sequence[float] | None = None,
    iou_threshold: float = 0.5,
    averaged_thresholds: Sequence[float] = (),
    matching: str = "hungarian",
    duplicates: str = "unmatched",
    out_of_image: str = "clip",
) -> RewardScore:
    """Score one parsed prediction against its ground-truth boxes (keys as in :func:`iou_f1`).

    ``overall`` is the F1 at ``iou_threshold``, or the mean F1 over ``averaged_thresholds`` when given.
    """
    pred, num_pred, out_rate, num_copies = _prepare_predictions(pred, frame, duplicates, out_of_image)
    if duplicates == "zero" and num_copies:
        return _zero_score(parsed=1.0, out_of_image=out_rate, duplicates=float(num_copies))
    iou = canonical_iou_matrix(pred, gt)

    def matched_at(threshold: float) -> np.ndarray:
        return MATCHERS[matching](iou, threshold) if iou.size else np.zeros(0)

    matched = matched_at(iou_threshold)
    precision, recall, f1 = f1_at(matched, num_pred, len(gt), iou_threshold)
    overall = f1
    if averaged_thresholds:
        overall = float(np.mean([f1_at(matched_at(t), num_pred, len(gt), t)[2] for t in averaged_thresholds]))
    denominator = max(num_pred, len(gt))
    return {
        "overall": overall,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "iou": float(matched.sum()) / denominator if denominator else 1.0,
        "out_of_image": out_rate,
        "duplicates": float(num_copies),
        "parsed": 1.0,
    }


def iou_f1(
    inputs: list[RewardInput],
    iou_threshold: float = 0.5,
    iou_thresholds: Sequence[float] | str | None = None,
    matching: str = "hungarian",
    duplicates: str = "unmatched",
    out_of_image: str = "clip",
) -> list[RewardScore]:
    """Score each answer's boxes against the ground truth by one-to-one IoU matching.

    Args:
        inputs: completions with their ground truths and metadata (``resized_size`` enables the frame check).
        iou_threshold: a matched pair with IoU >= this is a true positive.
        iou_thresholds: if given (a list, or ``"coco"`` for 0.5:0.05:0.95), ``overall`` is the mean F1 over
            these thresholds instead of the F1 at ``iou_threshold``.
        matching: ``"hungarian"`` (most pairs above the threshold, then highest IoU; the default),
            ``"hungarian_iou"`` (maximise total IoU, then count pairs above the threshold) or ``"greedy"``
            (highest IoU first).
        duplicates: ``"unmatched"``, ``"merge"`` or ``"zero"``; see the module docstring.
        out_of_image: ``"clip"``, ``"miss"`` or ``"ignore"``; see the module docstring.

    Returns:
        Per input: ``overall`` in [0, 1]; ``precision``, ``recall``, ``f1`` (at ``iou_threshold``) in [0, 1];
        ``iou``: summed IoU of the matched pairs over ``max(#pred, #gt)`` in [0, 1] (1 when both are
        empty), a soft signal below the threshold; ``out_of_image``: fraction of predicted boxes outside
        the frame, in [0, 1]; ``duplicates``: number of repeated predicted boxes, >= 0; ``parsed``: 1 if
        the answer parsed, else 0.
    """
    averaged = _resolve_thresholds(iou_threshold, iou_thresholds)
    iou_threshold = float(iou_threshold)
    _check_choice("matching", matching, tuple(MATCHERS))
    _check_choice("duplicates", duplicates, DUPLICATE_MODES)
    _check_choice("out_of_image", out_of_image, OUT_OF_IMAGE_MODES)
    scores: list[RewardScore] = []
    for item in inputs:
        metadata = item.get("metadata") or {}
        gt = parse_ground_truth(item["ground_truth"], metadata).boxes
        answer = parse_completion(item.get("response")).answer
        if not answer.ok:
            scores.append(_zero_score(parsed=0.0))
            continue
        frame = metadata.get("resized_size")
        scores.append(
            score_boxes(answer.boxes, gt, frame, iou_threshold, averaged, matching, duplicates, out_of_image)
        )
    return scores


def _zero_score(parsed: float, out_of_image: float = 0.0, duplicates: float = 0.0) -> RewardScore:
    return {
        "overall": 0.0,
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "iou": 0.0,
        "out_of_image": out_of_image,
        "duplicates": duplicates,
        "parsed": parsed,
    }
