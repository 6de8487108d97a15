"""Box accuracy (rewards.box): IoU, one-to-one matching, F1 and the edge-case rules, with hand-computed values."""

import itertools
import json

import numpy as np
import pytest

from rewards.box import COCO_THRESHOLDS, iou_f1, iou_matrix, match_boxes
from rewards.parsing import REJECTION_TEXT


def answer_text(boxes: list[list[float]]) -> str:
    if not boxes:
        return REJECTION_TEXT
    return "```json\n" + json.dumps([{"bbox_2d": box, "label": "person"} for box in boxes]) + "\n```"


def completion(boxes: list[list[float]], think: str = "planning, action, summary") -> str:
    return f"<think>{think}</think><answer>{answer_text(boxes)}</answer>"


def score(response: str, gt_boxes: list[list[float]], metadata: dict | None = None, **kwargs) -> dict:
    item = {"response": response, "ground_truth": answer_text(gt_boxes), "metadata": metadata or {}}
    return iou_f1([item], **kwargs)[0]


def strip(*boxes: tuple[float, float]) -> list[list[float]]:
    """Boxes of height 10 spanning the given x intervals, so IoU is the 1-D interval IoU."""
    return [[x0, 0, x1, 10] for x0, x1 in boxes]


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [0, 0, 10, 20], 0.5),  # inside, half the area
        ([0, 0, 10, 10], [1, 0, 11, 10], 90 / 110),
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
        ([10, 10, 0, 0], [0, 0, 10, 10], 0.0),  # inverted prediction matches nothing
        ([5, 5, 5, 5], [5, 5, 5, 5], 1.0),  # identical zero-area boxes
        ([5, 5, 5, 5], [5, 5, 5, 6], 0.0),
    ],
)
def test_iou_matrix_hand_values(pred, gt, expected):
    iou = iou_matrix(np.array([pred], dtype=float), np.array([gt], dtype=float))
    assert iou.shape == (1, 1)
    assert iou[0, 0] == pytest.approx(expected)


def test_single_box_exact_and_near_miss_at_the_threshold():
    gt = [[0, 0, 10, 10]]
    assert score(completion([[0, 0, 10, 10]]), gt)["overall"] == 1.0
    at_threshold = score(completion([[0, 0, 10, 20]]), gt)  # IoU exactly 0.5 counts
    assert at_threshold["overall"] == 1.0
    assert at_threshold["iou"] == pytest.approx(0.5)
    just_below = score(completion([[0, 0, 10, 20.2]]), gt)  # IoU 100/202 = 0.495
    assert just_below["overall"] == 0.0
    assert just_below["iou"] == pytest.approx(100 / 202)
    assert score(completion([[0, 0, 10, 20.2]]), gt, iou_threshold=0.49)["overall"] == 1.0


def test_rejection_both_ways():
    assert score(completion([]), []) == {
        "overall": 1.0,
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "iou": 1.0,
        "out_of_image": 0.0,
        "duplicates": 0.0,
        "parsed": 1.0,
    }
    hallucinated = score(completion([[0, 0, 10, 10]]), [])
    assert (hallucinated["overall"], hallucinated["precision"], hallucinated["recall"]) == (0.0, 0.0, 1.0)
    false_rejection = score(completion([]), [[0, 0, 10, 10]])
    assert (false_rejection["overall"], false_rejection["precision"], false_rejection["recall"]) == (0.0, 1.0, 0.0)


@pytest.mark.parametrize("ground_truth", ["[]", "```json\n[]\n```", REJECTION_TEXT])
def test_empty_list_ground_truth_is_a_rejection(ground_truth):
    item = {"response": completion([]), "ground_truth": ground_truth, "metadata": {}}
    assert iou_f1([item])[0]["overall"] == 1.0


def test_multi_box_precision_recall_f1():
    gt = [[0, 0, 10, 10], [20, 0, 30, 10]]
    both_and_extra = score(completion([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]]), gt)
    assert both_and_extra["precision"] == pytest.approx(2 / 3)
    assert both_and_extra["recall"] == 1.0
    assert both_and_extra["overall"] == pytest.approx(0.8)  # 2 * 2 / (3 + 2)
    one_of_two = score(completion([[20, 0, 30, 10]]), gt)
    assert (one_of_two["precision"], one_of_two["recall"]) == (1.0, 0.5)
    assert one_of_two["overall"] == pytest.approx(2 / 3)
    assert one_of_two["iou"] == pytest.approx(0.5)  # 1.0 summed over max(1, 2) boxes


def test_permuted_boxes_score_the_same():
    gt = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 52, 10]]
    pred = [[41, 0, 52, 10], [0, 0, 10, 10], [20, 0, 31, 10]]
    first = score(completion(pred), gt)
    assert first["overall"] == 1.0
    assert score(completion(pred[::-1]), gt[::-1]) == first


def test_only_the_answer_block_is_scored():
    gt = [[0, 0, 10, 10]]
    quoting_the_target = completion([], think="hint [0, 0, 10, 10] is a person")
    assert score(quoting_the_target, gt)["overall"] == 0.0
    quoting_other_hints = completion([[0, 0, 10, 10]], think="hints [50, 50, 60, 60] and [0, 0, 10, 10]")
    assert score(quoting_other_hints, gt)["overall"] == 1.0


def test_unparseable_answer_scores_zero_everywhere():
    result = score("<think>x</think><answer>somewhere on the left</answer>", [[0, 0, 10, 10]])
    assert result["parsed"] == 0.0
    assert all(value == 0.0 for value in result.values())
    assert score("no tags at all", [])["overall"] == 0.0  # not even a rejection


def test_duplicates_rules():
    gt = [[0, 0, 10, 10]]
    twice = completion([[0, 0, 10, 10], [0, 0, 10, 10]])
    unmatched = score(twice, gt)
    assert unmatched["overall"] == pytest.approx(2 / 3)  # the copy is a false positive
    assert unmatched["duplicates"] == 1.0
    assert score(twice, gt, duplicates="merge")["overall"] == 1.0
    assert score(twice, gt, duplicates="zero")["overall"] == 0.0
    # Two copies of the same box cannot claim two different targets.
    assert score(twice, [[0, 0, 10, 10], [0, 0, 10, 11]])["recall"] == 0.5


def test_greedy_and_hungarian_differ_where_greedy_is_shortsighted():
    # IoUs: p(0,14)-g(6,14) 8/14, p(0,14)-g(8,12) 4/14, p(4,12)-g(6,14) 6/10, p(4,12)-g(8,12) 4/8.
    # Greedy takes 0.6 first and is left with 4/14; the optimum pairs 8/14 and 4/8, both >= 0.5.
    gt = strip((6, 14), (8, 12))
    pred = completion(strip((0, 14), (4, 12)))
    assert score(pred, gt, matching="hungarian")["overall"] == 1.0
    assert score(pred, gt, matching="hungarian_iou")["overall"] == 1.0
    assert score(pred, gt, matching="greedy")["overall"] == pytest.approx(0.5)


def test_hungarian_maximises_matches_not_total_iou():
    # Assignments: p(10,18)-g(4,16) 6/14 + p(8,14)-g(12,14) 2/6 = 0.762 (no pair >= 0.5), versus
    # p(8,14)-g(4,16) 6/12 + p(10,18)-g(12,14) 2/8 = 0.75 (one pair at 0.5).
    gt = strip((4, 16), (12, 14))
    pred = completion(strip((10, 18), (8, 14)))
    assert score(pred, gt, matching="hungarian_iou")["overall"] == 0.0
    assert score(pred, gt, matching="hungarian")["overall"] == pytest.approx(0.5)
    assert score(pred, gt, matching="greedy")["overall"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("matching", "pred", "gt"),
    [
        # Tied IoUs of 4/6: taking p(1,7)-g(3,7) leaves 1/5, taking p(1,7)-g(1,5) leaves 2/4 = 0.5.
        ("greedy", strip((1, 7), (4, 6)), strip((3, 7), (1, 5))),
        # Tied total IoU: 3/6 + 1/6 = 2/6 + 2/6, with one pair at 0.5 or none.
        ("hungarian_iou", strip((2, 6), (3, 6)), strip((0, 5), (0, 4))),
    ],
)
def test_tied_matchings_do_not_depend_on_listing_order(matching, pred, gt):
    results = {
        score(completion(list(p)), list(g), matching=matching)["overall"]
        for p in itertools.permutations(pred)
        for g in itertools.permutations(gt)
    }
    assert len(results) == 1


def test_match_boxes_returns_matched_ious():
    matched = match_boxes([(0, 0, 10, 10)], [(0, 0, 10, 20), (100, 100, 110, 110)])
    assert matched.tolist() == [0.5]
    assert match_boxes([], [(0, 0, 1, 1)]).size == 0


def test_coco_averaged_f1():
    assert COCO_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    result = score(completion([[1, 0, 11, 10]]), [[0, 0, 10, 10]], iou_thresholds="coco")  # IoU 90/110 = 0.818
    assert result["overall"] == pytest.approx(0.7)  # passes 0.5 ... 0.8: 7 of 10 thresholds
    assert result["f1"] == 1.0  # still reported at iou_threshold
    custom = score(completion([[1, 0, 11, 10]]), [[0, 0, 10, 10]], iou_thresholds=[0.5, 0.9])
    assert custom["overall"] == pytest.approx(0.5)


def test_scored_in_the_resized_frame():
    # Original 1000x500 image, resized by smart_resize to 504x252: both answer and ground truth use 504x252.
    metadata = {"image_size": [1000, 500], "resized_size": [504, 252], "row_id": "r1"}
    gt = [[100, 50, 200, 150]]
    assert score(completion([[100, 50, 200, 150]]), gt, metadata)["overall"] == 1.0
    in_original_pixels = [[198.4, 99.2, 396.8, 297.6]]  # the same box scaled by 1000 / 504
    result = score(completion(in_original_pixels), gt, metadata)
    assert result["overall"] == 0.0
    assert result["out_of_image"] == 1.0  # y1 = 297.6 > 252


def test_ground_truth_outside_the_resized_frame_raises():
    metadata = {"image_size": [1000, 500], "resized_size": [504, 252], "row_id": "r9"}
    with pytest.raises(ValueError, match="r9.*outside the resized frame"):
        score(completion([]), [[600, 10, 900, 200]], metadata)


def test_out_of_image_rules():
    metadata = {"resized_size": [100, 100]}
    gt = [[0, 0, 40, 40]]
    overshoot = completion([[-10, 0, 40, 40]])  # 10 px past the left edge
    clipped = score(overshoot, gt, metadata)
    assert clipped["overall"] == 1.0
    assert clipped["iou"] == 1.0
    assert clipped["out_of_image"] == 1.0
    assert score(overshoot, gt, metadata, out_of_image="miss")["overall"] == 0.0
    ignored = score(overshoot, gt, metadata, out_of_image="ignore")
    assert ignored["iou"] == pytest.approx(1600 / 2000)
    assert ignored["out_of_image"] == 0.0
    assert score(overshoot, gt, {}, out_of_image="miss")["overall"] == 1.0  # no frame, nothing to check


def test_inverted_prediction_is_a_false_positive():
    result = score(completion([[10, 10, 0, 0], [0, 0, 10, 10]]), [[0, 0, 10, 10]])
    assert (result["precision"], result["recall"]) == (0.5, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"matching": "optimal"}, "matching must be one of"),
        ({"duplicates": "keep"}, "duplicates must be one of"),
        ({"out_of_image": "drop"}, "out_of_image must be one of"),
        ({"iou_threshold": 0.0}, r"\(0, 1\]"),
        ({"iou_thresholds": "voc"}, "coco"),
        ({"iou_thresholds": []}, "must not be empty"),
    ],
)
def test_bad_configuration_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        score(completion([]), [], **kwargs)


def test_malformed_ground_truth_names_the_row():
    item = {"response": completion([]), "ground_truth": "[[1, 2]]", "metadata": {"row_id": "abc"}}
    with pytest.raises(ValueError, match="row 'abc'"):
        iou_f1([item])
