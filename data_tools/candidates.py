"""``add-candidates``: run a detector over every record's image and category, then repair GT-in-hints.

The detector runs once per distinct ``(image, category)`` pair (RefCOCO-style sets have several expressions per image),
in batches of ``batch_size`` pairs. Its boxes replace the records' ``candidate_boxes``; then every record goes through
the chosen GT-in-hints policy (:mod:`data_tools.repair`), so that in the written file every ground-truth box is exactly
one of its record's candidate boxes; ``append`` instead does what Rex-Thinker's ``add_candidates_by_grounding_dino.py``
does (the rows it leaves with ground truth outside the hints are counted and warned about).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_tools.detectors import DetectFunction, check_detections
from data_tools.interchange import (
    Candidate,
    Record,
    RecordError,
    check_inside,
    parse_record,
    read_raw_records,
    write_records,
    write_report,
)
from data_tools.repair import CANDIDATE_POLICIES, DEFAULT_SNAP_IOU, RepairCounts, repair_record
from rexthinker_rl.data import DataError, decode_image


@dataclass
class CandidatesReport:
    """Counts and bad records of one ``add-candidates`` run (written as JSON beside the output)."""

    anno: str
    out: str
    detector: str
    records: int = 0
    written: int = 0
    detector_calls: int = 0
    pairs: int = 0  # distinct (image, category) pairs the detector saw
    detections: int = 0  # boxes it returned over all pairs
    replaced: int = 0  # records whose own candidate_boxes were replaced by the detector's
    errors: list[tuple[int, str]] = field(default_factory=list)
    repair: RepairCounts = field(default_factory=RepairCounts)

    def error_lines(self) -> list[str]:
        return [f"{Path(self.anno).name} record {index}: {reason}" for index, reason in self.errors]

    def summary(self) -> str:
        action = f"wrote {self.written} records to {self.out}" if self.written else "wrote nothing"
        per_pair = self.detections / self.pairs if self.pairs else 0.0
        return (
            f"add-candidates: {self.records} records, {len(self.errors)} bad, {self.pairs} image/category pairs, "
            f"{per_pair:.1f} detections each; {action}. {self.repair.line()}"
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = [{"record": index, "reason": reason} for index, reason in self.errors]
        return data


def add_candidates(
    anno: str | Path,
    image_root: str | Path,
    detect: DetectFunction,
    out: str | Path,
    *,
    detector_spec: str = "detector",
    detector_kwargs: dict[str, Any] | None = None,
    gt_policy: str = "snap",
    snap_iou: float = DEFAULT_SNAP_IOU,
    seed: int = 0,
    batch_size: int = 16,
    on_error: str = "fail",
) -> CandidatesReport:
    """Detect candidates for every record of ``anno``, repair GT-in-hints, write ``out`` and a report beside it.

    With ``on_error="fail"`` and any bad record (malformed, image missing or unreadable, box outside the image), only
    the report is written.
    """
    image_root, kwargs = Path(image_root), detector_kwargs or {}
    _check_arguments(image_root, detect, detector_spec, kwargs, gt_policy, on_error, batch_size)
    raws = read_raw_records(anno)
    report = CandidatesReport(str(anno), str(out), detector_spec, records=len(raws))
    records: list[Record] = []
    for index, raw in enumerate(raws):
        try:
            records.append(parse_record(raw, index))
        except RecordError as err:
            report.errors.append((index, err.reason))
    pairs = list(dict.fromkeys((record.image_name, record.category) for record in records))
    report.pairs = len(pairs)
    found, pair_errors, report.detector_calls = _detect_pairs(
        pairs, image_root, detect, detector_spec, kwargs, batch_size
    )
    report.detections = sum(len(detections) for _, detections in found.values())
    kept = []
    for record in records:
        pair = (record.image_name, record.category)
        if pair in pair_errors:
            report.errors.append((record.index, pair_errors[pair]))
            continue
        size, detections = found[pair]
        report.replaced += record.candidate_boxes is not None
        candidates = [Candidate(item["bbox"], record.category, item["score"]) for item in detections]
        record = replace(record, candidate_boxes=candidates)
        try:
            check_inside(record, *size)
        except RecordError as err:
            report.errors.append((record.index, err.reason))
            continue
        outcome = repair_record(record, gt_policy, snap_iou, seed)
        report.repair.add(outcome)
        if outcome.record is not None:
            kept.append(outcome.record)
    report.errors.sort()
    if not (report.errors and on_error == "fail"):
        write_records(out, kept)
        report.written = len(kept)
    write_report(out, report.as_dict())
    return report


def _check_arguments(
    image_root: Path,
    detect: DetectFunction,
    spec: str,
    kwargs: dict[str, Any],
    gt_policy: str,
    on_error: str,
    batch_size: int,
) -> None:
    if gt_policy not in CANDIDATE_POLICIES:
        raise ValueError(f"--gt-policy {gt_policy!r}: choose one of {', '.join(CANDIDATE_POLICIES)}")
    if on_error not in ("fail", "skip"):
        raise ValueError(f"--on-error {on_error!r}: choose fail or skip")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} must be >= 1")
    if not image_root.is_dir():
        raise FileNotFoundError(f"--image-root {image_root} is not a folder")
    try:  # a missing or misspelt detector argument fails here, before any image is read
        inspect.signature(detect).bind([], [], **kwargs)
    except TypeError as err:
        raise ValueError(f"detector {spec}: {err} (detector arguments are --detector-arg key=value)") from None


def _detect_pairs(
    pairs: list[tuple[str, str]],
    image_root: Path,
    detect: DetectFunction,
    spec: str,
    kwargs: dict[str, Any],
    batch_size: int,
) -> tuple[dict[tuple[str, str], tuple[tuple[int, int], list[dict]]], dict[tuple[str, str], str], int]:
    """``({pair: (image size, detections)}, {pair: reason its image could not be used}, detector calls)``."""
    found: dict[tuple[str, str], tuple[tuple[int, int], list[dict]]] = {}
    errors: dict[tuple[str, str], str] = {}
    calls = 0
    progress = tqdm(total=len(pairs), desc="add-candidates", unit="image")
    for start in range(0, len(pairs), batch_size):
        batch, images = [], []
        for pair in pairs[start : start + batch_size]:
            path = image_root / pair[0]
            if not path.is_file():
                errors[pair] = f"image file {pair[0]!r} not found under {image_root}"
                continue
            try:
                images.append(decode_image(path, pair[0]))
            except DataError as err:
                errors[pair] = str(err)
                continue
            batch.append(pair)
        if batch:
            sizes = [image.size for image in images]
            output = detect(images, [category for _, category in batch], **kwargs)
            calls += 1
            for pair, size, detections in zip(batch, sizes, check_detections(output, sizes, spec), strict=True):
                found[pair] = (size, detections)
        progress.update(len(pairs[start : start + batch_size]))
    progress.close()
    return found, errors, calls
