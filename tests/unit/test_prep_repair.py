"""data_tools.repair: GT-in-hints matching and the snap / insert / drop policies on hand-made cases."""

from __future__ import annotations

import pytest

from data_tools.interchange import Candidate, Record
from data_tools.repair import (
    RepairCounts,
    box_iou,
    match_ground_truth,
    missing_ground_truth,
    repair_record,
)

FAR = [200, 200, 240, 240]


def record(answers, candidates, category="cat", index=0, record_id=None) -> Record:
    cands = [c if isinstance(c, Candidate) else Candidate(list(c), category) for c in candidates]
    return Record(index, "a.png", "the cat", category, [list(b) for b in answers], cands, record_id)


def boxes(rec: Record) -> list[list[float]]:
    return [c.bbox for c in rec.candidate_boxes]


def test_box_iou_hand_computed():
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0  # touching edges do not overlap


def test_exact_pairs_are_never_traded_for_a_better_total():
    # Hungarian alone would pair A-C2 and B-C1 (0.9 + 0.95 > 1.0 + 0): A's exact hint C1 would be lost.
    gt_a, gt_b = [0, 0, 100, 100], [0, 0, 100, 90]
    c1, c2 = [0, 0, 100, 100], [0, 0, 95, 100]
    assert box_iou(gt_b, c1) == pytest.approx(0.9) and box_iou(gt_a, c2) == pytest.approx(0.95)
    assert match_ground_truth([gt_a, gt_b], [c1, c2]) == [(0, 1.0), (1, pytest.approx(box_iou(gt_b, c2)))]


def test_matching_is_one_to_one_and_skips_disjoint_pairs():
    matches = match_ground_truth([[0, 0, 10, 10], [1, 0, 11, 10], FAR], [[0, 0, 10, 11], [300, 300, 310, 310]])
    assert [m for m, _ in matches].count(0) == 1
    assert matches[2] == (None, 0.0)


def test_snap_replaces_gt_by_its_close_candidate():
    rec = record([[10, 10, 50, 50]], [[100, 100, 150, 150], [11, 10, 50, 51]])
    outcome = repair_record(rec, "snap", snap_iou=0.5)
    assert outcome.kind == "snapped" and (outcome.snapped, outcome.inserted) == (1, 0)
    assert outcome.record.answer_boxes == [[11, 10, 50, 51]]
    assert boxes(outcome.record) == boxes(rec)  # candidates untouched
    assert rec.answer_boxes == [[10, 10, 50, 50]]  # the input record is not mutated


def test_snap_inserts_gt_below_the_iou_threshold_and_keeps_exact_ones():
    rec = record([[10, 10, 50, 50], [0, 0, 8, 8], FAR], [[30, 30, 70, 70], [0, 0, 8, 8]])
    outcome = repair_record(rec, "snap", snap_iou=0.5)
    assert outcome.kind == "inserted" and (outcome.snapped, outcome.inserted) == (0, 2)
    assert outcome.record.answer_boxes == rec.answer_boxes
    assert sorted(boxes(outcome.record)) == sorted([[30, 30, 70, 70], [0, 0, 8, 8], [10, 10, 50, 50], FAR])
    assert missing_ground_truth(outcome.record) == []


def test_two_gt_near_one_candidate_snap_one_insert_the_other():
    rec = record([[10, 10, 50, 50], [12, 10, 52, 50]], [[11, 10, 51, 50]])
    outcome = repair_record(rec, "snap")
    assert outcome.kind == "snapped+inserted" and (outcome.snapped, outcome.inserted) == (1, 1)
    assert len(boxes(outcome.record)) == 2 and missing_ground_truth(outcome.record) == []


def test_insert_keeps_gt_as_annotated():
    rec = record([[10, 10, 50, 50], [0, 0, 8, 8]], [[11, 10, 50, 51], [0, 0, 8, 8]])
    outcome = repair_record(rec, "insert")
    assert (outcome.snapped, outcome.inserted) == (0, 1)
    assert outcome.record.answer_boxes == rec.answer_boxes
    assert [11, 10, 50, 51] in boxes(outcome.record) and [10, 10, 50, 50] in boxes(outcome.record)
    assert len(boxes(outcome.record)) == 3


def test_drop_removes_rows_with_any_inexact_gt_and_keeps_exact_rows():
    assert repair_record(record([[10, 10, 50, 50]], [[11, 10, 50, 51]]), "drop").record is None
    kept = repair_record(record([[10, 10, 50, 50]], [[10, 10, 50, 50], FAR]), "drop")
    assert kept.kind == "exact" and kept.record.answer_boxes == [[10, 10, 50, 50]]


def test_rejection_rows_and_other_categories():
    assert repair_record(record([], [FAR]), "drop").kind == "exact"
    # A "dog" box equal to the "cat" ground truth is not a cat hint: the cat box is inserted.
    rec = record([[10, 10, 50, 50]], [Candidate([10, 10, 50, 50], "dog")])
    outcome = repair_record(rec, "snap")
    assert outcome.inserted == 1 and [c.category for c in outcome.record.candidate_boxes].count("cat") == 1


def test_records_without_candidates_get_the_gt_inserted():
    rec = Record(0, "a.png", "the cat", "cat", [[1, 1, 5, 5]], None)
    outcome = repair_record(rec, "snap")
    assert boxes(outcome.record) == [[1, 1, 5, 5]] and outcome.inserted == 1


def test_insert_position_is_deterministic_and_not_always_last():
    candidates = [[i * 10, 0, i * 10 + 5, 5] for i in range(6)]
    positions = []
    for index in range(40):
        rec = record([FAR], candidates, index=index, record_id=f"r{index}")
        first = repair_record(rec, "insert", seed=3)
        assert boxes(first.record) == boxes(repair_record(rec, "insert", seed=3).record)
        positions.append(boxes(first.record).index(FAR))
    assert len(set(positions)) >= 4  # spread over the list, not a giveaway position


def test_counts_over_a_file():
    counts = RepairCounts()
    cases = [
        record([[10, 10, 50, 50]], [[10, 10, 50, 50]]),  # exact
        record([[10, 10, 50, 50]], [[11, 10, 50, 51]]),  # snapped
        record([FAR], [[0, 0, 5, 5]]),  # inserted
        record([], []),  # rejection: exact
    ]
    for rec in cases:
        counts.add(repair_record(rec, "snap"))
    counts.add(repair_record(cases[1], "drop"))
    assert counts.as_dict() == {
        "rows": 5,
        "exact": 2,
        "snapped": 1,
        "inserted": 1,
        "dropped": 1,
        "boxes_snapped": 1,
        "boxes_inserted": 1,
        "kept": 0,
    }
    assert counts.line() == "GT-in-hints: 2 rows exact, 1 snapped (1 boxes), 1 inserted (1 boxes), 1 dropped"


def test_bad_policy_and_threshold():
    with pytest.raises(ValueError, match="choose one of snap, insert, drop"):
        repair_record(record([], []), "fix")
    with pytest.raises(ValueError, match="--snap-iou 0"):
        repair_record(record([], []), "snap", snap_iou=0)
