"""Interchange records (original-image pixels) -> training parquet (resized frame), with every bad record reported.

Each record becomes one row of the training schema (:data:`data_tools.synthetic.FEATURES`): the image (embedded bytes
by default), ``problem`` (box-hint text and the referring expression), ``answer`` (fenced JSON boxes or the rejection
sentence) and the metadata columns the rewards read. Boxes move to the resized frame through
:func:`rexthinker_rl.data.dataset.boxes_to_resized`, and ground truth stays *exactly* among the hints after rounding: each
candidate box is converted once and each ground-truth box takes the converted box of the candidate it equals (converting
the two separately can round them apart, and rounding can merge two close candidates, which are then listed once).

Images are decoded the one way training decodes them (``rexthinker_rl.data.images``): EXIF orientation applied (sizes and
boxes are in the upright frame photo tools show) unless ``apply_exif=False``, any PIL mode to 8-bit RGB; the report
counts the images turned upright, the modes converted and how grey values were scaled. An image whose decoding changed
anything is embedded as that decoded picture (PNG, lossless, no orientation tag), so any reader (``datasets``, EasyR1, a
viewer) sees the frame the boxes are in; an image decoding left as it was is embedded as the file's own bytes. Images
are read only under ``image_root`` (a name that leaves it is a bad record unless ``allow_outside_root``). When the pixel
bounds cannot hold an image's resized frame, the summary suggests bounds that hold every image of the file.

Rows are mapped in parallel with ``datasets`` (``num_proc``) in file order, so the output does not depend on the number
of processes. A bad record (missing or unreadable image, box outside the image, malformed or unknown field, a repeated
id, a text field holding a special token or reasoning markup (``rexthinker_rl.data.reserved``), ground truth not among the
candidates) is reported as ``"<file> record <i>: <reason>"``; ``on_error="skip"`` writes the good rows, ``"fail"``
writes nothing. Ids are unique in the output: a record without an id gets ``<prefix>-<index>``, moved aside (and
counted) when another record already uses that id. The report is written whatever happens, a failed run included.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets

from data_tools.interchange import (
    Record,
    RecordError,
    assign_ids,
    check_inside,
    duplicate_ids,
    image_path,
    parse_record,
    read_raw_records,
    report_path,
    write_report,
)
from data_tools.repair import (
    DEFAULT_SNAP_IOU,
    RECORD_POLICIES,
    RepairCounts,
    RepairOutcome,
    missing_ground_truth,
    repair_record,
)
from data_tools.synthetic import FEATURES, format_answer
from rexthinker_rl.config import DataConfig
from rexthinker_rl.data.dataset import IMAGE_FACTOR, DataError, boxes_to_resized, check_fixed_point, resized_size
from rexthinker_rl.data.images import decode, stored_bytes
from rexthinker_rl.data.parquet_meta import write_frame_metadata
from rexthinker_rl.data.prompts import BOX_ROUNDINGS, DEFAULT_PRESET, load_preset
from rexthinker_rl.data.reserved import check_text
from rexthinker_rl.run.outputs import check_new_file, check_new_folder, is_shard_folder, stop_reason, swap_folder

ON_ERROR = ("fail", "skip")
MAX_ASPECT_RATIO = 200  # smart_resize refuses a longer side over 200 times the shorter one, whatever the bounds
CONVERT_POLICIES = ("check", *RECORD_POLICIES)  # keep, append: Rex-Thinker's (data_tools.repair)
_STATUS = datasets.Features(
    {
        "record_index": datasets.Value("int64"),
        "error": datasets.Value("string"),
        "outcome": datasets.Value("string"),
        "snapped": datasets.Value("int32"),
        "inserted": datasets.Value("int32"),
        "merged": datasets.Value("int32"),
        "degenerate": datasets.Value("int32"),
        "width": datasets.Value("int32"),  # the image's size (upright frame), 0 when it did not decode
        "height": datasets.Value("int32"),
        "source_mode": datasets.Value("string"),  # PIL mode of the file
        "orientation": datasets.Value("int32"),  # EXIF orientation tag (1: upright or none)
        "reencoded": datasets.Value("int32"),  # 1: stored as the decoded picture (PNG), not the file's bytes
        "scaling": datasets.Value("string"),  # how grey values were scaled to 8 bits (rexthinker_rl.data.images)
    }
)


@dataclass
class ConvertOptions:
    """How records become rows; everything a worker process needs (plain values, so it pickles)."""

    image_root: str
    min_pixels: int = DataConfig.min_pixels
    max_pixels: int = DataConfig.max_pixels
    gt_policy: str = "check"  # check: a ground-truth box not among the candidates is a bad record
    snap_iou: float = DEFAULT_SNAP_IOU
    seed: int = 0
    embed_images: bool = True
    image_path_base: str = ""  # folder that stored image paths are relative to (the output's folder)
    id_prefix: str = ""  # ids of records without one: "<id_prefix>-<index>"; empty: the annotation file's stem
    apply_exif: bool = True  # False: boxes are in the stored frame (tagged images are re-encoded without the tag)
    prompt_preset: str = DEFAULT_PRESET  # writes the problem text (rexthinker_rl/data/assets/prompt_presets.yaml)
    box_rounding: str = "round"  # round (ours) | original (Rex-Thinker's int() truncation, clamped to size - 1)
    allow_outside_root: bool = False  # read image_name that is absolute or climbs above image_root with ".."

    def frame_record(self) -> dict[str, Any]:
        """What the written parquet records about the frame its boxes are in (rexthinker_rl.data.parquet_meta)."""
        return {
            "box_rounding": self.box_rounding,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "prompt_preset": self.prompt_preset,
        }

    def check(self) -> None:
        if self.gt_policy not in CONVERT_POLICIES:
            raise ValueError(f"--gt-policy {self.gt_policy!r}: choose one of {', '.join(CONVERT_POLICIES)}")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"--min-pixels {self.min_pixels} and --max-pixels {self.max_pixels} need 0 < min <= max")
        if self.box_rounding not in BOX_ROUNDINGS:
            raise ValueError(f"--box-rounding {self.box_rounding!r}: choose one of {', '.join(BOX_ROUNDINGS)}")
        load_preset(self.prompt_preset)  # an unknown preset fails here, before any record is read
        if not Path(self.image_root).is_dir():
            raise FileNotFoundError(f"--image-root {self.image_root} is not a folder")
        if not self.apply_exif and not self.embed_images:
            raise ValueError(
                "--ignore-exif needs embedded images (the files on disk keep their orientation tags, which training "
                "applies): drop --no-embed-images, or train with data.apply_exif_orientation=false"
            )


@dataclass
class ConvertReport:
    """Counts and bad records of one conversion (written as JSON beside the output)."""

    anno: str
    out: str
    records: int = 0
    written: int = 0
    shards: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (record index, reason)
    repair: RepairCounts = field(default_factory=RepairCounts)
    candidates_merged: int = 0  # candidates that rounded onto another candidate's box and are listed once
    candidates_degenerate: int = 0  # candidates too small to keep x1 > x0 in the resized frame, left out
    exif_rotated: int = 0  # images turned upright by their EXIF orientation (boxes read in that frame)
    exif_ignored: int = 0  # --ignore-exif: images with an orientation tag, kept in the stored frame (re-encoded, PNG)
    modes_converted: dict[str, int] = field(default_factory=dict)  # PIL mode -> images converted to 8-bit RGB
    grey_scaling: dict[str, int] = field(default_factory=dict)  # how 16/32-bit or float grey became 8-bit -> images
    images_reencoded: int = 0  # embedded as the decoded picture (PNG), since decoding changed the file's pixels
    paths_decoded_differently: int = 0  # --no-embed-images: stored paths whose file a plain reader shows otherwise
    ids_moved_aside: int = 0  # records without an id whose automatic id another record uses: given another one
    suggested_bounds: list[int] | None = None  # [min_pixels, max_pixels] that hold every image, when these do not
    aborted: str | None = None  # why the conversion stopped before writing (an error the records did not cause)

    def error_lines(self) -> list[str]:
        name = Path(self.anno).name
        return [f"{name} record {index}: {reason}" for index, reason in self.errors]

    def summary(self) -> str:
        action = f"wrote {self.written} rows to {self.out}" if self.written else "wrote nothing"
        modes = ", ".join(f"{mode} x{count}" for mode, count in sorted(self.modes_converted.items())) or "none"
        scaling = ", ".join(f"{how} x{count}" for how, count in sorted(self.grey_scaling.items()))
        line = (
            f"convert: {self.records} records, {len(self.errors)} bad, {self.repair.dropped} dropped by the GT policy; "
            f"{action}. {self.repair.line()}; {self.candidates_merged} candidates merged by rounding, "
            f"{self.candidates_degenerate} too small for the resized frame. Images: {self.exif_rotated} turned upright "
            f"by their EXIF orientation, {self.exif_ignored} orientation tags ignored (--ignore-exif); converted to "
            f"8-bit RGB: {modes}{f' ({scaling})' if scaling else ''}; {self.images_reencoded} "
            f"{'stored' if self.written else 'to store'} as the decoded picture (PNG), so that every reader sees the "
            "frame the boxes are in"
        )
        if self.paths_decoded_differently:  # only our decoding reads those files in the boxes' frame
            line += f"; {self.paths_decoded_differently} paths to files other readers decode otherwise (embed them)"
        if self.ids_moved_aside:
            line += f"; {self.ids_moved_aside} automatic ids moved aside from ids records already use"
        if self.suggested_bounds:
            low, high = self.suggested_bounds
            line += f". These pixel bounds hold every image of the file: --min-pixels {low} --max-pixels {high}"
        return line

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = [{"record": index, "reason": reason} for index, reason in self.errors]
        return data


# ------------------------------------------------------------------------------------------------------- one record
def load_image(record: Record, options: ConvertOptions) -> tuple[bytes, tuple[int, int], dict[str, Any]]:
    """The record's encoded image bytes, ``(w, h)`` in the frame training will see, and what decoding changed (the
    status columns); decoded fully once, the way training decodes it, to catch truncated files."""
    data = image_path(
        Path(options.image_root), record.image_name, options.allow_outside_root, record.index
    ).read_bytes()
    try:
        decoded = decode(data, record.image_name, options.apply_exif)
    except DataError as err:
        raise RecordError(record.index, str(err)) from None
    # Whatever decoding changed (an orientation applied or dropped, a mode or a bit depth converted) is stored as the
    # decoded picture, so a reader other than ours sees the frame the boxes are in.
    data, reencoded = stored_bytes(data, decoded) if options.embed_images else (data, decoded.changed)
    status = {"width": decoded.image.width, "height": decoded.image.height, "source_mode": decoded.source_mode}
    status |= {"orientation": decoded.orientation, "reencoded": int(reencoded), "scaling": decoded.scaling}
    return data, decoded.image.size, status


def build_row(record: Record, size: tuple[int, int], options: ConvertOptions) -> tuple[dict[str, Any], int, int]:
    """``(row without images, candidates merged, candidates dropped as degenerate)`` for a repaired record."""
    try:
        resized = resized_size(size[0], size[1], options.min_pixels, options.max_pixels)
        check_fixed_point(resized, options.min_pixels, options.max_pixels)
    except ValueError as err:
        raise RecordError(record.index, f"{size[0]}x{size[1]} image: {err}") from None
    candidates = record.candidate_boxes or []
    texts = [("referring", record.referring), ("category", record.category)]
    for field_name, text in texts + [("candidate category", candidate.category) for candidate in candidates]:
        reason = check_text(field_name, text)
        if reason is not None:  # refused, not escaped: the text would reach the model other than as written
            raise RecordError(record.index, reason)
    boxes = [candidate.bbox for candidate in candidates]
    converted = boxes_to_resized(boxes, size, resized, options.box_rounding)  # each candidate once
    hints: dict[str, list[list[int]]] = {record.category: []}
    merged = degenerate = 0
    for candidate, box in zip(candidates, converted, strict=True):
        category_hints = hints.setdefault(candidate.category, [])
        if not (box[2] > box[0] and box[3] > box[1]):
            degenerate += 1
            if options.box_rounding == "original":  # Rex-Thinker's convert lists every candidate as it maps
                category_hints.append(box)
        elif box in category_hints:
            merged += 1
            if options.box_rounding == "original":
                category_hints.append(box)
        else:
            category_hints.append(box)
    answers: list[list[int]] = []
    for gt in record.answer_boxes:
        position = next((i for i, c in enumerate(candidates) if c.category == record.category and c.bbox == gt), None)
        if position is None:  # --gt-policy keep | append left it out of the hints: mapped on its own, as Rex-Thinker
            box = boxes_to_resized([gt], size, resized, options.box_rounding)[0]
        else:
            box = converted[position]
        too_small = not (box[2] > box[0] and box[3] > box[1])
        if too_small if position is None else box not in hints[record.category]:
            raise RecordError(
                record.index,
                f"answer box {gt} becomes {box} in the {resized[0]}x{resized[1]} resized frame, too small to keep "
                "x1 > x0 and y1 > y0 (raise --min-pixels, or remove the record)",
            )
        if box not in answers:  # two targets that rounding made one box are one target in this frame
            answers.append(box)
    row = {
        "problem": load_preset(options.prompt_preset).problem_text(hints, record.referring, record.category),
        "answer": format_answer(answers, record.referring),
        "image_size": list(size),
        "resized_size": list(resized),
        "hints": json.dumps(hints),
        "referring": record.referring,
        "category": record.category,
        "sft_target": None,
        "answer_boxes": json.dumps(answers),
    }
    return row, merged, degenerate


def check_or_repair(record: Record, options: ConvertOptions) -> RepairOutcome:
    """GT-in-hints at convert time: with ``gt_policy="check"`` a RecordError unless it already holds, else a repair."""
    if options.gt_policy != "check":
        return repair_record(record, options.gt_policy, options.snap_iou, options.seed)
    if record.candidate_boxes is None:
        raise RecordError(
            record.index,
            "no 'candidate_boxes' (run `rexthinker-data add-candidates`, or convert with --gt-policy snap)",
        )
    missing = missing_ground_truth(record)
    if missing:
        raise RecordError(
            record.index,
            f"answer box {missing[0]} is not exactly one of the {record.category!r} candidate boxes (run "
            "add-candidates, or convert with --gt-policy snap|insert|drop to repair)",
        )
    return RepairOutcome(record)


def convert_record(raw: Any, index: int, options: ConvertOptions, row_id: str | None = None) -> dict[str, Any]:
    """One raw record -> a row plus status columns (``error`` set and the row empty when the record is bad).
    ``row_id``: the id :func:`assign_ids` gave it (default: the record's own, else ``<id_prefix>-<index>``)."""
    status = {"record_index": index, "error": None, "outcome": None, "snapped": 0, "inserted": 0}
    status |= {"merged": 0, "degenerate": 0, "width": 0, "height": 0, "source_mode": None, "orientation": 1}
    status |= {"reencoded": 0, "scaling": None}
    empty = dict.fromkeys(FEATURES, None)
    try:
        record = parse_record(raw, index)
        data, size, image_status = load_image(record, options)
        status |= image_status
        check_inside(record, *size)
        outcome = check_or_repair(record, options)
        status |= {"outcome": outcome.kind, "snapped": outcome.snapped, "inserted": outcome.inserted}
        if outcome.record is None:
            return empty | status
        record = outcome.record
        row, merged, degenerate = build_row(record, size, options)
    except RecordError as err:
        return empty | status | {"error": err.reason}
    if options.embed_images:
        image = {"bytes": data, "path": record.image_name}
    else:
        image = {"bytes": None, "path": _relative_path(record.image_name, options)}
    if row_id is None:
        row_id = record.id if record.id is not None else f"{options.id_prefix}-{index:06d}"
    return row | {"id": row_id, "images": [image]} | status | {"merged": merged, "degenerate": degenerate}


def _relative_path(image_name: str, options: ConvertOptions) -> str:
    """Image path relative to the output folder (how ``read_rows`` resolves a stored path)."""
    absolute = (Path(options.image_root) / image_name).resolve()
    return os.path.relpath(absolute, Path(options.image_path_base).resolve())


def _convert_example(example: dict[str, Any], options: ConvertOptions) -> dict[str, Any]:
    return convert_record(json.loads(example["raw"]), example["record_index"], options, example["row_id"])


# ------------------------------------------------------------------------------------------------------------ a file
def convert_file(
    anno: str | Path,
    out: str | Path,
    options: ConvertOptions,
    on_error: str = "fail",
    num_proc: int = 1,
    shard_size: int = 0,
    overwrite: bool = False,
) -> ConvertReport:
    """Convert an interchange file to ``out``: one parquet file, or with ``shard_size > 0`` a folder of shards.

    Writes a JSON report beside ``out`` (``OUT.report.json``: counts and every bad record). With ``on_error="fail"``
    and any bad record, nothing but the report is written. An existing ``out`` is replaced only with ``overwrite``,
    and a folder only when it holds nothing but shards.
    """
    anno, out = Path(anno), Path(out)
    _check_arguments(anno, out, options, on_error, num_proc, shard_size, overwrite)
    raws = read_raw_records(anno)
    report = ConvertReport(str(anno), str(out), records=len(raws))
    options = replace(
        options,
        id_prefix=options.id_prefix or anno.stem,
        image_path_base=options.image_path_base or str(out if shard_size else out.parent),
    )
    try:
        _convert_rows(raws, out, options, report, on_error, num_proc, shard_size)
    except Exception as err:
        report.aborted = stop_reason(err)
        write_report(out, report.as_dict())  # what was found up to here, whatever stopped the run
        raise
    if report.written:
        write_frame_metadata(out, options.frame_record())
    write_report(out, report.as_dict() | ({"frame": options.frame_record()} if report.written else {}))
    if not report.written and not (report.errors and on_error == "fail"):
        raise DataError(f"{anno}: no rows left to write ({len(report.errors)} bad records, see {report_path(out)})")
    return report


def _convert_rows(
    raws: list[Any],
    out: Path,
    options: ConvertOptions,
    report: ConvertReport,
    on_error: str,
    num_proc: int,
    shard_size: int,
) -> None:
    """Map every record to a row, tally the report, and write the rows unless bad records stop it."""
    row_ids, report.ids_moved_aside = assign_ids(raws, options.id_prefix)
    report.errors.extend(duplicate_ids(raws))
    duplicates = {index for index, _ in report.errors}
    kept_raws = [(index, raw) for index, raw in enumerate(raws) if index not in duplicates]
    source = datasets.Dataset.from_dict(
        {
            "record_index": [index for index, _ in kept_raws],
            "raw": [json.dumps(raw) for _, raw in kept_raws],
            "row_id": [row_ids[index] for index, _ in kept_raws],
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.work-") as work:
        converted = source.map(
            _convert_example,
            fn_kwargs={"options": options},
            remove_columns=["raw", "row_id"],
            features=datasets.Features({**FEATURES, **_STATUS}),
            num_proc=num_proc if num_proc > 1 and len(source) > 1 else None,  # 1: in this process
            cache_file_name=str(Path(work) / "converted.arrow"),
            desc="convert",
        )
        _tally(converted, report, options)
        report.errors.sort()
        if report.errors and on_error == "fail":
            return
        kept = converted.filter(
            lambda error, outcome: error is None and outcome != "dropped",
            input_columns=["error", "outcome"],
            cache_file_name=str(Path(work) / "kept.arrow"),
        ).select_columns(list(FEATURES))
        if len(kept):
            report.written = len(kept)
            report.shards = _write(kept, out, shard_size, Path(work), options.embed_images)


def _check_arguments(
    anno: Path, out: Path, options: ConvertOptions, on_error: str, num_proc: int, shard_size: int, overwrite: bool
) -> None:
    """convert_file's arguments, and that ``out`` may be written (never over an input, a foreign folder or, without
    ``overwrite``, anything that exists)."""
    options.check()
    if on_error not in ON_ERROR:
        raise ValueError(f"--on-error {on_error!r}: choose one of {', '.join(ON_ERROR)}")
    if num_proc < 1 or shard_size < 0:
        raise ValueError(f"--num-proc {num_proc} must be >= 1 and --shard-size {shard_size} >= 0")
    if shard_size and out.suffix == ".parquet":
        raise ValueError(f"with --shard-size, --out names a folder of shards, not a .parquet file: {out}")
    if shard_size:
        check_new_folder(
            out, overwrite, is_shard_folder, "folder of parquet shards", inputs=[anno, options.image_root]
        )
    else:
        check_new_file(out, overwrite, inputs=[anno])


def _tally(converted: datasets.Dataset, report: ConvertReport, options: ConvertOptions) -> None:
    statuses = converted.select_columns(list(_STATUS)).to_list()
    modes: Counter[str] = Counter()
    scalings: Counter[str] = Counter()
    for status in statuses:
        if status["error"] is not None:
            report.errors.append((status["record_index"], status["error"]))
            continue
        if status["source_mode"] != "RGB":
            modes[status["source_mode"]] += 1
        if status["scaling"]:
            scalings[status["scaling"]] += 1
        if options.embed_images:
            report.images_reencoded += status["reencoded"]
        else:
            report.paths_decoded_differently += status["reencoded"]
        turned = status["orientation"] != 1
        report.exif_rotated += turned and options.apply_exif
        report.exif_ignored += turned and not options.apply_exif
        report.repair.add_kind(status["outcome"], status["snapped"], status["inserted"])
        report.candidates_merged += status["merged"]
        report.candidates_degenerate += status["degenerate"]
    report.modes_converted, report.grey_scaling = dict(modes), dict(scalings)
    # An image over the processor's aspect-ratio limit (200) has no frame under any bounds (its record says so).
    sizes = [(status["width"], status["height"]) for status in statuses if status["width"] and status["height"]]
    sizes = [(w, h) for w, h in sizes if max(w, h) <= MAX_ASPECT_RATIO * min(w, h)]
    report.suggested_bounds = suggest_bounds(sizes, options.min_pixels, options.max_pixels)


def suggest_bounds(sizes: list[tuple[int, int]], min_pixels: int, max_pixels: int) -> list[int] | None:
    """``[min_pixels, max_pixels]`` whose resized frame every image keeps (a second resize leaves it unchanged), when
    the given bounds do not: keep ``max_pixels`` and lower ``min_pixels`` to the smallest resized area; None when the
    given bounds already hold every image or no such pair exists."""

    def holds(low: int, high: int) -> bool:
        try:
            for width, height in sizes:
                check_fixed_point(resized_size(width, height, low, high), low, high)
        except ValueError:
            return False
        return True

    if not sizes or holds(min_pixels, max_pixels):
        return None
    floor = IMAGE_FACTOR * IMAGE_FACTOR  # one image token
    lowest = min(math.prod(resized_size(width, height, floor, max_pixels)) for width, height in sizes)
    low = min(min_pixels, lowest)
    return [low, max_pixels] if holds(low, max_pixels) else None


def _write(rows: datasets.Dataset, out: Path, shard_size: int, work: Path, embedded: bool) -> int:
    """Write one parquet file, or a folder of shards, atomically (built in ``work``, then renamed into place)."""
    # Row-group size: datasets estimates it from the data, and for path-only images it would stat the paths relative
    # to the working directory (where they are not); such rows are small, so a fixed size is fine.
    batch_size = None if embedded else 1000
    if not shard_size:
        staged = work / out.name
        rows.to_parquet(str(staged), batch_size=batch_size)
        os.replace(staged, out)
        return 1
    num_shards = -(-len(rows) // shard_size)
    staged = work / "shards"
    staged.mkdir()
    for shard in range(num_shards):
        part = rows.select(range(shard * shard_size, min((shard + 1) * shard_size, len(rows))))
        part.to_parquet(str(staged / f"part-{shard:05d}-of-{num_shards:05d}.parquet"), batch_size=batch_size)
    swap_folder(staged, out)  # an existing out was checked to hold shards only (and --overwrite given)
    return num_shards
