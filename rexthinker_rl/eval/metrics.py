"""HumanRef-style metrics: Recall, Precision and DensityF1 at IoU 0.5:0.95, rejection score, REC accuracy at 0.5.

Written from the benchmark's definitions (boxes ``[x0, y0, x1, y1]`` in original-image pixels):

- **Matching** (per ground truth, greedy): ground-truth boxes are taken in order; each takes the still unused predicted
  box of highest IoU, provided that IoU is at least the threshold (ties go to the earlier prediction).
- **Recall** = matches / |GT|, **Precision** = matches / |pred|; both 0 when nothing is predicted.
- **DensityF1** = F1 x min(1, |GT| / |pred|), 0 when nothing is predicted: an answer that lists every person in the
  image to catch one target is penalised even where its recall is perfect.
- Each metric is computed per sample at IoU 0.5, 0.55, ..., 0.95; ``*_50`` is the value at 0.5 and ``*_mean`` the mean
  over the ten thresholds, both averaged over the samples of a group (domain, sub-domain, box count, overall).
- **Rejection samples** (domain ``rejection``, or no ground-truth box) leave the box metrics out; a rejection is
  correct when nothing is predicted. ``rejection_score`` is the share of correct rejections; HumanRef reports their
  count, which is ``rejection_count``.
- **accuracy_50** (RefCOCO/+/g style): over samples with exactly one ground-truth box, the share whose first predicted
  box has IoU >= 0.5 with it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rewards.box import COCO_THRESHOLDS, iou_matrix

THRESHOLDS = COCO_THRESHOLDS  # 0.5, 0.55, ..., 0.95
METRIC_KEYS = ("recall_50", "recall_mean", "precision_50", "precision_mean", "density_f1_50", "density_f1_mean")
REJECTION_DOMAIN = "rejection"
BOX_COUNT_BUCKETS = ("1", "2-5", "6-10", ">10")

BoxList = Sequence[Sequence[float]]


@dataclass(frozen=True)
class GroundTruth:
    """One benchmark sample's target: boxes in original-image pixels and the subsets it belongs to."""

    id: str
    answer_boxes: list[list[float]]
    domain: str
    sub_domain: str

    @property
    def is_rejection(self) -> bool:
        return self.domain == REJECTION_DOMAIN or not self.answer_boxes


@dataclass(frozen=True)
class SampleScore:
    """Per-threshold recall, precision and DensityF1 of one (non-rejection) sample, in :data:`THRESHOLDS` order."""

    recall: tuple[float, ...]
    precision: tuple[float, ...]
    density_f1: tuple[float, ...]
    num_gt: int
    num_pred: int


def _as_array(boxes: BoxList) -> np.ndarray:
    return np.asarray([[float(value) for value in box] for box in boxes], dtype=np.float64).reshape(-1, 4)


def greedy_matches(gt: BoxList, pred: BoxList, threshold: float) -> int:
    """Matched pairs under HumanRef's matching: each GT box in turn takes the unused prediction of highest IoU >= t."""
    if not len(gt) or not len(pred):
        return 0
    iou = iou_matrix(_as_array(pred), _as_array(gt))  # (P, G)
    used = np.zeros(iou.shape[0], dtype=bool)
    matches = 0
    for column in range(iou.shape[1]):
        eligible = ~used & (iou[:, column] >= threshold) & (iou[:, column] > 0)
        if eligible.any():
            candidates = np.flatnonzero(eligible)
            used[candidates[np.argmax(iou[candidates, column])]] = True  # argmax: the first of equal IoUs
            matches += 1
    return matches


def density_f1(recall: float, precision: float, num_gt: int, num_pred: int) -> float:
    """F1 x min(1, |GT| / |pred|); 0 when nothing is predicted or nothing matched."""
    if num_pred == 0 or recall + precision == 0:
        return 0.0
    return 2 * recall * precision / (recall + precision) * min(1.0, num_gt / num_pred)


def score_sample(gt: BoxList, pred: BoxList, thresholds: Sequence[float] = THRESHOLDS) -> SampleScore:
    """Recall, precision and DensityF1 of one prediction at each threshold."""
    if not len(gt):
        raise ValueError("score_sample needs ground-truth boxes; a sample without any is a rejection sample")
    recalls, precisions, f1s = [], [], []
    for threshold in thresholds:
        matches = greedy_matches(gt, pred, threshold)
        recall = matches / len(gt)
        precision = matches / len(pred) if len(pred) else 0.0
        recalls.append(recall)
        precisions.append(precision)
        f1s.append(density_f1(recall, precision, len(gt), len(pred)))
    return SampleScore(tuple(recalls), tuple(precisions), tuple(f1s), len(gt), len(pred))


def box_count_bucket(count: int) -> str:
    """HumanRef's target-count ranges: 1, 2-5, 6-10, >10."""
    if count <= 1:
        return "1"
    if count <= 5:
        return "2-5"
    return "6-10" if count <= 10 else ">10"


def group_metrics(scores: Sequence[SampleScore]) -> dict[str, float | int]:
    """Sample means of the HumanRef metrics over a group, with its ``count``."""
    if not scores:
        return dict.fromkeys(METRIC_KEYS, 0.0) | {"count": 0}
    values: dict[str, float | int] = {}
    for name in ("recall", "precision", "density_f1"):
        table = np.asarray([getattr(score, name) for score in scores])  # (samples, thresholds)
        values[f"{name}_50"] = float(table[:, 0].mean())
        values[f"{name}_mean"] = float(table.mean())
    return {key: values[key] for key in METRIC_KEYS} | {"count": len(scores)}


def _first_box_hit(gt: BoxList, pred: BoxList) -> bool:
    return bool(len(pred)) and float(iou_matrix(_as_array(pred[:1]), _as_array(gt))[0, 0]) >= 0.5


def evaluate(ground_truths: Sequence[GroundTruth], predictions: Mapping[str, BoxList]) -> dict:
    """The full report: overall (non-rejection), per domain, sub-domain and box count, rejection and REC accuracy.

    A sample without an entry in ``predictions`` counts as predicting nothing (and is counted in
    ``missing_predictions``).
    """
    domains: dict[str, list[SampleScore]] = defaultdict(list)
    sub_domains: dict[str, list[SampleScore]] = defaultdict(list)
    sub_domain_parent: dict[str, str] = {}
    box_counts: dict[str, list[SampleScore]] = defaultdict(list)
    overall: list[SampleScore] = []
    rejection_total = rejection_correct = single_total = single_hits = missing = 0
    for truth in ground_truths:
        if truth.id not in predictions:
            missing += 1
        pred = list(predictions.get(truth.id, []))
        if truth.is_rejection:
            rejection_total += 1
            rejection_correct += not pred
            continue
        score = score_sample(truth.answer_boxes, pred)
        overall.append(score)
        domains[truth.domain].append(score)
        sub_domains[truth.sub_domain].append(score)
        sub_domain_parent.setdefault(truth.sub_domain, truth.domain)
        box_counts[box_count_bucket(len(truth.answer_boxes))].append(score)
        if len(truth.answer_boxes) == 1:
            single_total += 1
            single_hits += _first_box_hit(truth.answer_boxes, pred)
    return {
        "thresholds": list(THRESHOLDS),
        "num_samples": len(ground_truths),
        "missing_predictions": missing,
        "overall": group_metrics(overall),
        "domains": {name: group_metrics(domains[name]) for name in sorted(domains)},
        "sub_domains": {
            name: {"domain": sub_domain_parent[name], **group_metrics(sub_domains[name])}
            for name in sorted(sub_domains)
        },
        "box_count": {name: group_metrics(box_counts[name]) for name in BOX_COUNT_BUCKETS if name in box_counts},
        "rejection_score": rejection_correct / rejection_total if rejection_total else None,
        "rejection_count": rejection_correct,
        "rejection_total": rejection_total,
        "accuracy_50": single_hits / single_total if single_total else None,
        "accuracy_count": single_total,
    }


def _row(label: str, sub: str, metrics: Mapping) -> str:
    cells = [f"{float(metrics[key]):.3f}" for key in METRIC_KEYS]
    return f"| {label} | {sub} | " + " | ".join(cells) + f" | {metrics['count']} |"


def markdown_table(report: Mapping) -> str:
    """The report as a Markdown table (HumanRef's columns), then rejection and REC accuracy lines."""
    lines = [
        "| Domain | Sub-domain | Recall@0.5 | Recall@0.5:0.95 | Precision@0.5 | Precision@0.5:0.95 | DensityF1@0.5 "
        "| DensityF1@0.5:0.95 | Samples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for domain, metrics in report["domains"].items():
        lines.append(_row(domain, "overall", metrics))
        for sub, sub_metrics in report["sub_domains"].items():
            if sub_metrics["domain"] == domain and sub != domain:
                lines.append(_row("", sub, sub_metrics))
    lines.append(_row("**all**", "non-rejection", report["overall"]))
    total = report["rejection_total"]
    if total:
        lines.append(
            f"\nRejection score: {report['rejection_score']:.3f} ({report['rejection_count']} of {total} rejection "
            "samples answered with no box)"
        )
    if report["accuracy_count"]:
        lines.append(f"Accuracy@0.5 (first box, single-target samples): {report['accuracy_50']:.3f}")
    if report["missing_predictions"]:
        lines.append(f"Missing predictions (scored as empty): {report['missing_predictions']}")
    return "\n".join(lines)
