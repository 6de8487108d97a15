"""``add-candidates``: run a detector over every record's image and category, then repair GT-in-hints.

The detector runs once per distinct ``(image, category)`` pair (RefCOCO-style sets have several expressions per image),
in batches of ``batch_size`` pairs. Its boxes replace the records' ``candidate_boxes`` (boxes it returns inverted, empty
or outside the image are left out and counted); then every record goes through the chosen GT-in-hints policy
(:mod:`data_tools.repair`), so that in the written file every ground-truth box is exactly one of its record's candidate
boxes; ``append`` instead does what Rex-Thinker's ``add_candidates_by_grounding_dino.py`` does (the rows it leaves with
ground truth outside the hints are counted and warned about). A detector that raises on a batch is called again image
by image, so only the records of the images it fails on are bad records (named, skippable with ``on_error="skip"``).
Ids are kept as given and must be unique. The report is written whatever happens.
"""

from __future__ import annotations

import inspect
from collections import Counter
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
    duplicate_ids,
    image_path,
    parse_record,
    read_raw_records,
    write_records,
    write_report,
)
from data_tools.repair import CANDIDATE_POLICIES, DEFAULT_SNAP_IOU, RepairCounts, repair_record
from rexthinker_rl.data.dataset import DataError, decode_image
from rexthinker_rl.data.images import describe_error
from rexthinker_rl.run.outputs import stop_reason


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
    dropped: dict[str, int] = field(default_factory=dict)  # detector boxes left out, by reason (data_tools.detectors)
    errors: list[tuple[int, str]] = field(default_factory=list)
    repair: RepairCounts = field(default_factory=RepairCounts)
    aborted: str | None = None  # why the run stopped before writing (an error no record caused)

    def error_lines(self) -> list[str]:
        return [f"{Path(self.anno).name} record {index}: {reason}" for index, reason in self.errors]

    def summary(self) -> str:
        action = f"wrote {self.written} records to {self.out}" if self.written else "wrote nothing"
        per_pair = self.detections / self.pairs if self.pairs else 0.0
        dropped = "; ".join(f"{count} {reason}" for reason, count in sorted(self.dropped.items()))
        return (
            f"add-candidates: {self.records} records, {len(self.errors)} bad, {self.pairs} image/category pairs, "
            f"{per_pair:.1f} detections each; {action}. {self.repair.line()}. Detector boxes left out: "
            f"{dropped or 'none'}"
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
    allow_outside_root: bool = False,
) -> CandidatesReport:
    """Detect candidates for every record of ``anno``, repair GT-in-hints, write ``out`` and a report beside it.

    With ``on_error="fail"`` and any bad record (malformed, image missing or unreadable, box outside the image), only
    the report is written.
    """
    image_root, kwargs = Path(image_root), detector_kwargs or {}
    _check_arguments(image_root, detect, detector_spec, kwargs, gt_policy, on_error, batch_size)
    raws = read_raw_records(anno)
    report = CandidatesReport(str(anno), str(out), detector_spec, records=len(raws))
    detector = _Detector(detect, detector_spec, kwargs, image_root, allow_outside_root)
    try:
        kept = _candidate_records(raws, detector, report, gt_policy, snap_iou, seed, batch_size)
        if not (report.errors and on_error == "fail"):
            write_records(out, kept)
            report.written = len(kept)
    except Exception as err:
        report.aborted = stop_reason(err)
        raise
    finally:  # the report, whatever stopped the run
        report.errors.sort()
        write_report(out, report.as_dict())
    return report


def _candidate_records(
    raws: list, detector: _Detector, report: CandidatesReport, gt_policy: str, snap_iou: float, seed: int, batch: int
) -> list[Record]:
    """The records with the detector's candidates, repaired; bad records go to ``report.errors``."""
    records: list[Record] = []
    for index, raw in enumerate(raws):
        try:
            records.append(parse_record(raw, index))
        except RecordError as err:
            report.errors.append((index, err.reason))
    parsed = {record.index for record in records}
    repeated = [(index, reason) for index, reason in duplicate_ids(raws) if index in parsed]
    report.errors.extend(repeated)
    records = [record for record in records if record.index not in {index for index, _ in repeated}]
    pairs = list(dict.fromkeys((record.image_name, record.category) for record in records))
    report.pairs = len(pairs)
    found, pair_errors = detector.run(pairs, batch)
    report.detector_calls, report.dropped = detector.calls, dict(detector.dropped)
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
    return kept


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


class _Detector:
    """The detector over (image, category) pairs: batches, and image by image where a batch raises."""

    def __init__(self, detect: DetectFunction, spec: str, kwargs: dict[str, Any], root: Path, allow_outside: bool):
        self.detect, self.spec, self.kwargs, self.root, self.allow_outside = detect, spec, kwargs, root, allow_outside
        self.calls = 0
        self.worked = False  # some call has returned detections
        self.dropped: Counter[str] = Counter()  # boxes left out, by reason

    def run(self, pairs: list[tuple[str, str]], batch_size: int) -> tuple[dict, dict[tuple[str, str], str]]:
        """``({pair: (image size, detections)}, {pair: reason it has none})``."""
        found: dict[tuple[str, str], tuple[tuple[int, int], list[dict]]] = {}
        errors: dict[tuple[str, str], str] = {}
        progress = tqdm(total=len(pairs), desc="add-candidates", unit="image")
        for start in range(0, len(pairs), batch_size):
            batch, images = [], []
            for pair in pairs[start : start + batch_size]:
                try:
                    images.append(self._image(pair[0]))
                except (RecordError, DataError) as err:
                    errors[pair] = getattr(err, "reason", str(err))
                    continue
                batch.append(pair)
            if batch:
                self._detect(batch, images, found, errors)
            progress.update(len(pairs[start : start + batch_size]))
        progress.close()
        return found, errors

    def _image(self, name: str):
        return decode_image(image_path(self.root, name, self.allow_outside, -1), name)

    def _detect(self, batch: list, images: list, found: dict, errors: dict) -> None:
        """Detect ``batch``; when the detector raises, again one image at a time, and name the images it fails on.
        A detector that has never worked and fails on every image of a batch alike is broken itself (a wrong
        checkpoint path, a missing package): DataError, rather than every record named bad."""
        try:
            self.calls += 1
            output = self.detect(images, [category for _, category in batch], **self.kwargs)
        except Exception as err:  # noqa: BLE001 - the user's detector: its failure on an image is that record's
            reason = f"detector {self.spec} raised {describe_error(err)}"
            if len(batch) == 1:
                errors[batch[0]] = reason
                return
            for pair, image in zip(batch, images, strict=True):
                self._detect([pair], [image], found, errors)
            if not self.worked and {errors.get(pair) for pair in batch} == {reason}:
                raise DataError(
                    f"{reason}, on each of the {len(batch)} images it was given: fix the detector"
                ) from None
            return
        sizes = [image.size for image in images]
        checked = check_detections(output, sizes, self.spec, self.dropped)
        self.worked = True
        for pair, size, detections in zip(batch, sizes, checked, strict=True):
            found[pair] = (size, detections)
