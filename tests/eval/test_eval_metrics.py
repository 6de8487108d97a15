"""HumanRef metrics (rexthinker_rl.eval.metrics) on hand-made cases, and against a plain-Python reading of the rule."""

import numpy as np
import pytest

from rexthinker_rl.eval.metrics import (
    THRESHOLDS,
    GroundTruth,
    density_f1,
    evaluate,
    greedy_matches,
    markdown_table,
    score_sample,
)

A, B, C, D = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]  # disjoint 10x10 boxes


def test_thresholds_are_half_to_095():
    assert THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_perfect_prediction_in_any_order():
    score = score_sample([A, B], [B, A])
    assert score.recall == score.precision == score.density_f1 == (1.0,) * 10


def test_empty_prediction_scores_zero():
    score = score_sample([A], [])
    assert score.recall == score.precision == score.density_f1 == (0.0,) * 10


def test_over_prediction_is_penalised_by_density_f1():
    score = score_sample([A], [A, B, C, D])
    assert score.recall[0] == 1.0 and score.precision[0] == 0.25
    # F1 = 2 * 1 * 0.25 / 1.25 = 0.4, density penalty min(1, 1/4) = 0.25
    assert score.density_f1[0] == pytest.approx(0.1)


def test_under_prediction_has_no_density_penalty():
    score = score_sample([A, B, C, D], [A])
    assert score.recall[0] == 0.25 and score.precision[0] == 1.0
    assert score.density_f1[0] == pytest.approx(0.4)  # penalty min(1, 4/1) = 1


def test_iou_threshold_sweep():
    # IoU([0,0,10,10], [0,0,10,6]) = 60 / 100 = 0.6: a match at 0.5, 0.55 and 0.6 only
    score = score_sample([A], [[0, 0, 10, 6]])
    assert score.recall == (1.0, 1.0, 1.0) + (0.0,) * 7
    assert np.mean(score.recall) == pytest.approx(0.3)


def test_matching_is_greedy_per_ground_truth_in_order():
    first, second = [0, 0, 10, 10], [2, 0, 12, 10]  # the two targets overlap: IoU 80/120
    exact, shifted = [0, 0, 10, 10], [-2, 0, 8, 10]  # IoU(shifted, first) = 0.667, IoU(shifted, second) = 0.43
    # `first` takes `exact` (IoU 1 beats 0.667); `second` is left with `shifted` at 0.43 < 0.5: one match, although
    # a one-to-one optimum would pair both.
    assert greedy_matches([first, second], [exact, shifted], 0.5) == 1
    assert greedy_matches([second, first], [exact, shifted], 0.5) == 2
    assert greedy_matches([first], [exact, exact], 0.5) == 1  # a prediction is used once


def test_density_f1_definition():
    assert density_f1(0.0, 0.0, 1, 3) == 0.0
    assert density_f1(1.0, 1.0, 2, 0) == 0.0  # nothing predicted
    assert density_f1(1.0, 0.5, 2, 4) == pytest.approx(2 * 0.5 / 1.5 * 0.5)


def _reference_matches(gt, pred, threshold):
    """The rule in words: each GT in turn takes the unused prediction of highest IoU >= threshold."""

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    used, matches = set(), 0
    for g in gt:
        best, best_iou = None, 0.0
        for i, p in enumerate(pred):
            value = iou(g, p)
            if i not in used and value > best_iou and value >= threshold:
                best, best_iou = i, value
        if best is not None:
            used.add(best)
            matches += 1
    return matches


def test_matches_agree_with_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        boxes = []
        for _ in range(rng.integers(1, 8)):
            x0, y0 = rng.integers(0, 40, size=2)
            w, h = rng.integers(1, 20, size=2)
            boxes.append([float(x0), float(y0), float(x0 + w), float(y0 + h)])
        split = int(rng.integers(0, len(boxes)))
        gt, pred = boxes[: split + 1], boxes[split:] + [[b[0] + 1, b[1], b[2] + 1, b[3]] for b in boxes[:split]]
        for threshold in (0.5, 0.75):
            assert greedy_matches(gt, pred, threshold) == _reference_matches(gt, pred, threshold)


def test_report_groups_rejection_and_accuracy():
    truths = [
        GroundTruth("a1", [A], "attribute", "colour"),
        GroundTruth("a2", [A, B], "attribute", "colour_multi"),
        GroundTruth("p1", [C], "position", "leftmost"),
        GroundTruth("r1", [], "rejection", "rejection"),
        GroundTruth("r2", [], "rejection", "rejection"),
        GroundTruth("r3", [], "rejection", "rejection"),
    ]
    predictions = {"a1": [A], "a2": [A, B, C, D], "p1": [D, C], "r1": [], "r2": [B]}  # r3 missing: no box
    report = evaluate(truths, predictions)
    assert report["rejection_total"] == 3 and report["rejection_count"] == 2
    assert report["rejection_score"] == pytest.approx(2 / 3)
    assert report["missing_predictions"] == 1
    attribute = report["domains"]["attribute"]
    # a1: precision 1; a2: 2 of 4 predictions right -> 0.5
    assert attribute["count"] == 2 and attribute["precision_50"] == pytest.approx(0.75)
    # a2: F1 = 2/3 (recall 1, precision 0.5), penalty 2/4 -> 1/3
    assert attribute["density_f1_50"] == pytest.approx((1 + 1 / 3) / 2)
    assert report["sub_domains"]["colour_multi"] == {"domain": "attribute", **report["sub_domains"]["colour_multi"]}
    assert report["domains"]["position"]["recall_mean"] == 1.0 and report["domains"]["position"]["precision_50"] == 0.5
    overall = report["overall"]
    assert overall["count"] == 3  # rejection samples are not in the box metrics
    assert overall["recall_50"] == 1.0 and overall["precision_50"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert set(overall) == {
        "recall_50",
        "recall_mean",
        "precision_50",
        "precision_mean",
        "density_f1_50",
        "density_f1_mean",
        "count",
    }
    # single-target samples: a1 (first box A: hit) and p1 (first box D: miss)
    assert report["accuracy_count"] == 2 and report["accuracy_50"] == 0.5
    assert set(report["box_count"]) == {"1", "2-5"}
    table = markdown_table(report)
    assert "| attribute | overall |" in table and "DensityF1@0.5:0.95" in table and "2 of 3" in table


def test_all_wrong_rejections_and_no_rejection_samples():
    report = evaluate([GroundTruth("r", [], "rejection", "rejection")], {"r": [A]})
    assert report["rejection_score"] == 0.0 and report["overall"]["count"] == 0
    report = evaluate([GroundTruth("a", [A], "attribute", "x")], {"a": [A]})
    assert report["rejection_score"] is None and report["overall"]["density_f1_mean"] == 1.0
