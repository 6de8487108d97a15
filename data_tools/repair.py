"""GT-in-hints repair: make every ground-truth box *exactly* one of its record's candidate (hint) boxes.

After a detector step the ground-truth box is usually not among the detections to the pixel, and the exact-match
reward can then never be earned on that row, silently. Ground truth is matched one to one to the candidates of the
record's category: boxes equal to a candidate are paired first (so an exact hint is never traded away for a better
total), then the rest by IoU with the Hungarian method (``scipy.optimize.linear_sum_assignment``). Policies:

- ``snap``: a ground-truth box whose matched candidate has IoU >= ``snap_iou`` becomes that candidate's box; any other
  is inserted among the candidates.
- ``insert``: ground truth is kept as annotated; each box without an exact match is inserted among the candidates.
- ``drop``: a record with any ground-truth box not exactly among its candidates is dropped.

An inserted box goes to a position drawn from ``(seed, record id)``, not to the end of the list: a ground-truth box that
is always the last hint would be a shortcut the policy learns instead of the task.

Two policies reproduce Rex-Thinker's own tools, which do not make ground truth one of the hints; the rows they leave
with ground truth outside the hints are counted (``kept``) and the commands warn about them. Never a default:

- ``append`` (its ``add_candidates_by_grounding_dino.py``): a ground-truth box that no candidate overlaps by IoU >= 0.5
  is appended as the last candidate; one that some candidate overlaps is left out of the hints.
- ``keep`` (its ``convert_dataset.py``): nothing changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from data_tools.interchange import Box, Candidate, Record, RecordError

GT_POLICIES = ("snap", "insert", "drop")
CANDIDATE_POLICIES = (*GT_POLICIES, "append")  # add-candidates
RECORD_POLICIES = (*CANDIDATE_POLICIES, "keep")  # what repair_record applies (convert offers them all)
DEFAULT_SNAP_IOU = 0.5  # the accuracy reward's own IoU threshold: a snapped box would have scored as a hit anyway
APPEND_IOU = 0.5  # add_candidates_by_grounding_dino.py: return_maximum_overlap(min_iou=0.5)


def box_iou(first: Box, second: Box) -> float:
    """Intersection over union of two ``[x0, y0, x1, y1]`` boxes."""
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1]) - inter
    return inter / union


def match_ground_truth(gt_boxes: list[Box], candidate_boxes: list[Box]) -> list[tuple[int | None, float]]:
    """For each ground-truth box, ``(index of its matched candidate or None, IoU)``; one to one.

    Exact equals are paired first; the remaining boxes are matched by maximum total IoU, and pairs that do not overlap
    at all are left unmatched.
    """
    matches: list[tuple[int | None, float]] = [(None, 0.0)] * len(gt_boxes)
    taken: set[int] = set()
    for gt_index, box in enumerate(gt_boxes):
        for cand_index, candidate in enumerate(candidate_boxes):
            if cand_index not in taken and list(candidate) == list(box):
                matches[gt_index] = (cand_index, 1.0)
                taken.add(cand_index)
                break
    open_gt = [index for index, (match, _) in enumerate(matches) if match is None]
    open_cand = [index for index in range(len(candidate_boxes)) if index not in taken]
    if open_gt and open_cand:
        ious = np.array([[box_iou(gt_boxes[g], candidate_boxes[c]) for c in open_cand] for g in open_gt])  # (gt, cand)
        rows, cols = linear_sum_assignment(ious, maximize=True)
        for row, col in zip(rows, cols, strict=True):
            if ious[row, col] > 0:
                matches[open_gt[row]] = (open_cand[col], float(ious[row, col]))
    return matches


def missing_ground_truth(record: Record) -> list[Box]:
    """The record's ground-truth boxes that are not exactly one of its category's candidate boxes."""
    candidates = [list(box) for box in record.category_candidates()]
    return [box for box in record.answer_boxes if list(box) not in candidates]


@dataclass
class RepairOutcome:
    """What repair did to one record; ``record`` is None when the record was dropped."""

    record: Record | None
    snapped: int = 0  # ground-truth boxes replaced by their matched candidate
    inserted: int = 0  # ground-truth boxes added to the candidates
    kept: int = 0  # ground-truth boxes left outside the candidates (append, keep)

    @property
    def kind(self) -> str:
        if self.record is None:
            return "dropped"
        counts = (("snapped", self.snapped), ("inserted", self.inserted), ("kept", self.kept))
        return "+".join(name for name, count in counts if count) or "exact"


@dataclass
class RepairCounts:
    """Rows (and boxes) snapped, inserted or dropped over a file; a row can be both snapped and inserted."""

    rows: int = 0
    exact: int = 0
    snapped: int = 0
    inserted: int = 0
    dropped: int = 0
    boxes_snapped: int = 0
    boxes_inserted: int = 0
    kept: int = 0  # rows left with a ground-truth box outside the hints (append, keep)

    def add(self, outcome: RepairOutcome) -> None:
        self.add_kind(outcome.kind, outcome.snapped, outcome.inserted)

    def add_kind(self, kind: str, snapped: int = 0, inserted: int = 0) -> None:
        """Count an outcome known by its kind and box counts (as it comes back from a parallel map)."""
        self.rows += 1
        self.dropped += kind == "dropped"
        self.exact += kind == "exact"
        self.snapped += snapped > 0
        self.inserted += inserted > 0
        self.boxes_snapped += snapped
        self.boxes_inserted += inserted
        self.kept += "kept" in kind.split("+")

    def line(self) -> str:
        kept = f", {self.kept} kept with ground truth outside the hints" if self.kept else ""
        return (
            f"GT-in-hints: {self.exact} rows exact, {self.snapped} snapped ({self.boxes_snapped} boxes), "
            f"{self.inserted} inserted ({self.boxes_inserted} boxes), {self.dropped} dropped{kept}"
        )

    def kept_warning(self, policy: str) -> str | None:
        """The warning for rows left with ground truth outside their hints, or None when there are none."""
        if not self.kept:
            return None
        return (
            f"warning: {self.kept} of {self.rows} rows keep a ground-truth box that is not among their hints "
            f"(--gt-policy {policy}, as Rex-Thinker's tools leave them): the exact-match reward can never be earned "
            "on them; `rexthinker-data repair` (or --gt-policy snap) makes the ground truth one of the hints"
        )

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def repair_record(record: Record, policy: str, snap_iou: float = DEFAULT_SNAP_IOU, seed: int = 0) -> RepairOutcome:
    """Apply a GT-in-hints policy to one record; afterwards every ground-truth box is exactly a candidate box, except
    under ``append`` and ``keep`` (Rex-Thinker's), whose outcome counts the boxes left outside as ``kept``."""
    if policy not in RECORD_POLICIES:
        raise ValueError(f"--gt-policy {policy!r}: choose one of {', '.join(RECORD_POLICIES)}")
    if not 0 < snap_iou <= 1:
        raise ValueError(f"--snap-iou {snap_iou} must be in (0, 1]")
    if policy in ("append", "keep"):
        return _as_rexthinker(record, policy)
    candidates = list(record.candidate_boxes or [])
    same_category = [index for index, candidate in enumerate(candidates) if candidate.category == record.category]
    matches = match_ground_truth(record.answer_boxes, [candidates[index].bbox for index in same_category])
    answers, to_insert, snapped = [], [], 0
    for box, (match, iou) in zip(record.answer_boxes, matches, strict=True):
        if match is not None and list(candidates[same_category[match]].bbox) == list(box):
            answers.append(box)
        elif policy == "drop":
            return RepairOutcome(None)
        elif policy == "snap" and match is not None and iou >= snap_iou:
            answers.append(list(candidates[same_category[match]].bbox))
            snapped += 1
        else:
            answers.append(box)
            to_insert.append(box)
    rng = random.Random(f"{seed}:{record.id if record.id is not None else record.index}")
    for box in to_insert:
        candidates.insert(rng.randint(0, len(candidates)), Candidate(list(box), record.category))
    repaired = replace(record, answer_boxes=answers, candidate_boxes=candidates)
    if missing_ground_truth(repaired):  # cannot happen by construction; a bug here must not write a broken row
        raise AssertionError(f"record {record.index}: repair left {missing_ground_truth(repaired)} out of the hints")
    return RepairOutcome(repaired, snapped=snapped, inserted=len(to_insert))


def _as_rexthinker(record: Record, policy: str) -> RepairOutcome:
    """``append``: add_candidates_by_grounding_dino.py lines 196-204 (the ground truth becomes the last candidate when
    no candidate reaches IoU 0.5 with it, lines 82-90); ``keep``: convert_dataset.py lines 199-216 (the record as it
    is). Boxes left outside the candidates are counted, never silently."""
    if record.candidate_boxes is None:
        raise RecordError(record.index, f"no 'candidate_boxes' (--gt-policy {policy} keeps a record's own candidates)")
    candidates = list(record.candidate_boxes)
    same_category = [candidate.bbox for candidate in candidates if candidate.category == record.category]
    inserted = kept = 0
    for box in missing_ground_truth(record):
        if policy == "append" and not any(box_iou(box, other) >= APPEND_IOU for other in same_category):
            candidates.append(Candidate(list(box), record.category))  # measured against the detections only
            inserted += 1
        else:
            kept += 1
    return RepairOutcome(replace(record, candidate_boxes=candidates), inserted=inserted, kept=kept)
