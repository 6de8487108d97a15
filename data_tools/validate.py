"""Check every row of a dataset against what training and the rewards assume, and report every bad row.

Per row: the image decodes; ``problem`` and ``answer`` are present; the answer is fenced JSON boxes or the rejection
sentence; boxes lie inside the resized image with ``x1 > x0`` and ``y1 > y0``; every ground-truth box is *exactly* one
of the row's hint boxes (a converter that rounds hints and answers differently breaks this silently); the
``image_size``, ``resized_size``, ``hints`` and ``answer_boxes`` columns, where present, agree with the image, the
pixel bounds and the prompt text; no text column holds a special token of the tokenizer, reasoning markup or the image
mark (``rexthinker_rl.data.reserved``). Across rows: no two rows go by one id (both rows named). Without pixel bounds, a
row's ``resized_size`` column is taken as its frame (what ``convert`` wrote for the bounds it was given); with them,
that column is checked against them too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from rexthinker_rl.config import DataConfig
from rexthinker_rl.data.dataset import (
    IMAGE_FACTOR,
    REJECTION_TEXT,
    DataError,
    check_fixed_point,
    decode_image,
    hints_from_problem,
    image_payload,
    is_box,
    parse_hints,
    read_rows,
    resized_size,
)
from rexthinker_rl.data.reserved import row_keys, row_text_problems
from rexthinker_rl.data.rows import duplicate_ids

_FENCED_JSON = re.compile(r"\A\s*```json\s*\n(.*?)\n?\s*```\s*\Z", re.DOTALL)


@dataclass
class RowProblem:
    """Everything wrong with one row."""

    where: str  # "<file> row <i>"
    reasons: list[str]

    def line(self) -> str:
        return f"{self.where}: {'; '.join(self.reasons)}"


@dataclass
class ValidationReport:
    """The outcome of :func:`validate_file`."""

    path: str
    num_rows: int
    problems: list[RowProblem] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "all good" if self.ok else f"{len(self.problems)} bad"
        return f"{self.path}: {self.num_rows} rows checked, {verdict}"


def parse_answer_boxes(answer: str) -> list[list[float]]:
    """Boxes of a ground-truth answer (``[]`` for the rejection sentence); ValueError saying what is wrong."""
    if answer.strip() == REJECTION_TEXT:
        return []
    match = _FENCED_JSON.match(answer)
    if match is None:
        raise ValueError(f"answer is neither a ```json fenced list nor {REJECTION_TEXT!r}: {answer[:80]!r}")
    try:
        items = json.loads(match.group(1))
    except json.JSONDecodeError as err:
        raise ValueError(f"answer JSON does not parse ({err})") from None
    if not isinstance(items, list) or not items:
        raise ValueError("answer JSON must be a non-empty list (write the rejection sentence for no target)")
    boxes = []
    for item in items:
        box = item.get("bbox_2d") if isinstance(item, dict) else None
        if not is_box(box):
            raise ValueError(f"answer item {item!r} has no bbox_2d of 4 numbers")
        boxes.append(box)
    return boxes


def _box_problem(box: list[float], width: int, height: int) -> str | None:
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        return f"box {box} has x1 <= x0 or y1 <= y0"
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return f"box {box} lies outside the {width}x{height} resized image"
    return None


def check_row(row: dict, where: str, base_dir: Path, cfg: DataConfig, bounds_given: bool = True) -> list[str]:
    """Everything wrong with one row (empty when it is fine); without ``bounds_given`` the row's ``resized_size``
    column, when present, is its frame."""
    reasons: list[str] = []
    try:
        image = decode_image(image_payload(row, cfg.image_key, base_dir, where), where, cfg.apply_exif_orientation)
    except DataError as err:
        reasons.append(str(err).removeprefix(f"{where}: "))
        image = None
    resized = None
    if image is not None:
        own_frame = not bounds_given and row.get("resized_size") is not None
        resized = _row_frame(row, image.size, reasons) if own_frame else _check_frame(row, image.size, cfg, reasons)
    reasons += row_text_problems(row, row_keys(cfg.prompt_key, cfg.answer_key))
    problem, answer = row.get(cfg.prompt_key), row.get(cfg.answer_key)
    if not isinstance(problem, str) or not problem.strip():
        reasons.append(f"{cfg.prompt_key!r} is missing or empty")
        problem = ""
    if not isinstance(answer, str) or not answer.strip():
        reasons.append(f"{cfg.answer_key!r} is missing or empty")
        return reasons
    try:
        boxes = parse_answer_boxes(answer)
    except ValueError as err:
        return [*reasons, str(err)]
    hints = _check_hints(row, problem, where, reasons)
    hint_boxes = [list(box) for category_boxes in (hints or {}).values() for box in category_boxes]
    for box in boxes:
        if hints is not None and list(box) not in hint_boxes:
            reasons.append(f"ground-truth box {box} is not among the hint boxes (`rexthinker-data repair` fixes it)")
    if resized is not None:
        for box in hint_boxes + [box for box in boxes if list(box) not in hint_boxes]:
            if (box_problem := _box_problem(box, *resized)) is not None:
                reasons.append(box_problem)
    if row.get("answer_boxes") is not None:
        try:
            listed = json.loads(row["answer_boxes"]) if isinstance(row["answer_boxes"], str) else row["answer_boxes"]
        except json.JSONDecodeError:
            listed = None
        if listed != [list(box) for box in boxes]:
            reasons.append(f"answer_boxes column {row['answer_boxes']} differs from the answer's boxes {boxes}")
    return reasons


def _check_frame(row: dict, size: tuple[int, int], cfg: DataConfig, reasons: list[str]) -> tuple[int, int] | None:
    try:
        resized = resized_size(size[0], size[1], cfg.min_pixels, cfg.max_pixels)
        check_fixed_point(resized, cfg.min_pixels, cfg.max_pixels)
    except ValueError as err:
        reasons.append(str(err))
        return None
    if row.get("image_size") is not None and _as_list(row["image_size"]) != list(size):
        reasons.append(f"image_size column {row['image_size']} but the image is {list(size)}")
    if row.get("resized_size") is not None and _as_list(row["resized_size"]) != list(resized):
        reasons.append(
            f"resized_size column {row['resized_size']} but min_pixels={cfg.min_pixels}, max_pixels={cfg.max_pixels}"
            f" give {list(resized)} (built with other pixel bounds? pass --min-pixels/--max-pixels)"
        )
    return resized


def _row_frame(row: dict, size: tuple[int, int], reasons: list[str]) -> tuple[int, int] | None:
    """The row's own ``resized_size`` column as its frame (no pixel bounds given): positive multiples of 28."""
    frame = _as_list(row["resized_size"])
    if not (
        isinstance(frame, list)
        and len(frame) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in frame)
    ):
        reasons.append(f"resized_size column {row['resized_size']} is not [width, height]")
        return None
    if any(int(v) != v or v % IMAGE_FACTOR for v in frame):
        reasons.append(f"resized_size column {frame} is not a multiple of {IMAGE_FACTOR} on both sides")
        return None
    if row.get("image_size") is not None and _as_list(row["image_size"]) != list(size):
        reasons.append(f"image_size column {row['image_size']} but the image is {list(size)}")
    return int(frame[0]), int(frame[1])


def _as_list(value):
    """A size column as a list; a value of another type (a number, a string) is returned as is, so it compares unequal."""
    return list(value) if isinstance(value, list | tuple) else value


def _check_hints(row: dict, problem: str, where: str, reasons: list[str]) -> dict | None:
    """The row's hints (column, else prompt text); None, with a reason, when there are none or they are malformed."""
    try:
        from_text = hints_from_problem(problem, where)
        from_column = parse_hints(row["hints"], where) if row.get("hints") is not None else None
    except DataError as err:
        reasons.append(str(err).removeprefix(f"{where}: "))
        return None
    if from_column is not None and from_text is not None and from_column != from_text:
        reasons.append("hints column differs from the hints in the problem text")
    hints = from_column if from_column is not None else from_text
    if hints is None:
        reasons.append("no box hints (no 'hints' column and no 'coordinates in this image:' JSON in the problem)")
    return hints


def validate_file(
    path: str | Path,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    image_key: str = "images",
    prompt_key: str = "problem",
    answer_key: str = "answer",
    apply_exif: bool = True,
) -> ValidationReport:
    """Check every row of a parquet file, folder of shards or JSONL file. Without pixel bounds each row's
    ``resized_size`` column is its frame (rows without one: DataConfig's bounds)."""
    defaults = DataConfig()
    bounds_given = min_pixels is not None or max_pixels is not None
    cfg = DataConfig(
        image_key=image_key,
        prompt_key=prompt_key,
        answer_key=answer_key,
        min_pixels=defaults.min_pixels if min_pixels is None else min_pixels,
        max_pixels=defaults.max_pixels if max_pixels is None else max_pixels,
        apply_exif_orientation=apply_exif,
    )
    rows = read_rows(path)
    report = ValidationReport(str(path), len(rows))
    if not bounds_given:
        report.note = (
            "note: no pixel bounds given: each row's resized_size column was taken as its frame; pass the "
            "--min-pixels/--max-pixels you train with to check that frame too"
        )
    repeated = {where: (uid, first) for uid, where, first in duplicate_ids(rows)}
    for index, row in enumerate(rows.iter_rows()):
        where = rows.where(index)
        reasons = check_row(row, where, rows.locate(index)[0].parent, cfg, bounds_given)
        if where in repeated:
            uid, first = repeated[where]
            reasons.append(f"id {uid!r} is also {first}'s (ids must be unique: evaluation keys predictions by id)")
        if reasons:
            report.problems.append(RowProblem(where, reasons))
    return report
