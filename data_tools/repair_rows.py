"""``rexthinker-data repair``: fix GT-not-in-hints rows of a training parquet file (Rex-Thinker's own, or ours).

Rex-Thinker's dataset tool keeps rows whose ground-truth box is not exactly one of the hint boxes (its detector step
adds the ground truth to the candidates only when no detection overlaps it by IoU 0.5), and on such a row the
exact-match reward can never be earned. This command works on the rows as they are, in the resized frame: ground truth
is matched to the hints of the row's category one to one (:func:`data_tools.repair.match_ground_truth`), then by
``--gt-policy`` a missing box is snapped to its matched hint (IoU >= ``--snap-iou``; otherwise inserted), inserted
among the hints at a seeded position, or its row is dropped. Only the hint JSON inside ``problem`` and the answer's
boxes change (and the ``hints`` / ``answer_boxes`` columns where present): every other byte of every row, images
included, is kept, as is the file's metadata. A JSON report of every changed row is written beside the output.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_tools.interchange import write_report
from data_tools.repair import DEFAULT_SNAP_IOU, GT_POLICIES, RepairCounts, match_ground_truth
from data_tools.validate import parse_answer_boxes
from rexthinker_rl.data.dataset import HINT_MARKER, REJECTION_TEXT, DataError, parse_hints


@dataclass
class RowsRepairReport:
    """What ``repair`` did to a file (written as JSON beside the output)."""

    path: str
    out: str
    policy: str
    rows: int = 0
    written: int = 0
    repair: RepairCounts = field(default_factory=RepairCounts)
    changed: list[dict[str, Any]] = field(default_factory=list)  # {"row", "outcome", "before", "after"}

    def summary(self) -> str:
        return f"repair: {self.rows} rows; wrote {self.written} to {self.out}. {self.repair.line()}"


@dataclass
class _Fixed:
    outcome: str  # exact | snapped | inserted | snapped+inserted | dropped
    problem: str
    answer: str
    hints: dict[str, list[list[float]]]
    answers: list[list[float]]
    snapped: int = 0
    inserted: int = 0


def repair_file(
    path: str | Path,
    out: str | Path,
    policy: str = "snap",
    snap_iou: float = DEFAULT_SNAP_IOU,
    seed: int = 0,
    prompt_key: str = "problem",
    answer_key: str = "answer",
) -> RowsRepairReport:
    """Repair every row of one parquet file into ``out`` (atomically), with the report beside it."""
    if policy not in GT_POLICIES:
        raise ValueError(f"--gt-policy {policy!r}: choose one of {', '.join(GT_POLICIES)}")
    if not 0 < snap_iou <= 1:
        raise ValueError(f"--snap-iou {snap_iou} must be in (0, 1]")
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (repair reads one parquet file)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    for key in (prompt_key, answer_key):
        if key not in table.column_names:
            raise DataError(f"{path}: no column {key!r} (columns: {', '.join(table.column_names)})")
    report = RowsRepairReport(str(path), str(out), policy, rows=table.num_rows)
    text_columns = [name for name in (prompt_key, answer_key, "hints", "answer_boxes", "category", "id") if name in
                    table.column_names]  # fmt: skip
    rows = table.select(text_columns).to_pylist()  # images stay in Arrow, untouched
    keep, columns = [], {prompt_key: [], answer_key: [], "hints": [], "answer_boxes": []}
    for index, row in enumerate(rows):
        fixed = _repair_row(row, f"{path.name} row {index}", index, policy, snap_iou, seed, prompt_key, answer_key)
        report.repair.add_kind(fixed.outcome, fixed.snapped, fixed.inserted)
        if fixed.outcome != "exact":
            before = {"problem": row[prompt_key], "answer": row[answer_key]}
            after = {} if fixed.outcome == "dropped" else {"problem": fixed.problem, "answer": fixed.answer}
            report.changed.append({"row": index, "outcome": fixed.outcome, "before": before, "after": after})
        keep.append(fixed.outcome != "dropped")
        changed = fixed.outcome not in ("exact", "dropped")
        columns[prompt_key].append(fixed.problem)
        columns[answer_key].append(fixed.answer)
        columns["hints"].append(json.dumps(fixed.hints) if changed else row.get("hints"))
        columns["answer_boxes"].append(json.dumps(fixed.answers) if changed else row.get("answer_boxes"))
    for name, values in columns.items():
        if name in table.column_names:
            target = table.schema.field(name)
            table = table.set_column(table.column_names.index(name), target, pa.array(values, target.type))
    table = table.filter(pa.array(keep, pa.bool_()))
    report.written = table.num_rows
    _write_atomically(table, out)
    write_report(out, asdict(report))
    return report


def _repair_row(
    row: dict, where: str, index: int, policy: str, snap_iou: float, seed: int, prompt_key: str, answer_key: str
) -> _Fixed:
    problem, answer = row[prompt_key], row[answer_key]
    if not isinstance(problem, str) or not isinstance(answer, str):
        raise DataError(f"{where}: {prompt_key!r} and {answer_key!r} must be text")
    hints, span = _hints_and_span(row, problem, where)
    try:
        answers = parse_answer_boxes(answer)
    except ValueError as err:
        raise DataError(f"{where}: {err}") from None
    category = row.get("category") if row.get("category") in hints else next(iter(hints))
    candidates = hints[category]
    matches = match_ground_truth(answers, candidates)
    fixed_answers, to_insert, snapped = [], [], 0
    for box, (match, iou) in zip(answers, matches, strict=True):
        if match is not None and list(candidates[match]) == list(box):
            fixed_answers.append(box)
        elif policy == "drop":
            return _Fixed("dropped", problem, answer, hints, answers)
        elif policy == "snap" and match is not None and iou >= snap_iou:
            fixed_answers.append(list(candidates[match]))
            snapped += 1
        else:
            fixed_answers.append(box)
            to_insert.append(box)
    if not snapped and not to_insert:
        return _Fixed("exact", problem, answer, hints, answers)
    rng = random.Random(f"{seed}:{row.get('id') if row.get('id') is not None else index}")
    new_hints = {name: [list(box) for box in boxes] for name, boxes in hints.items()}
    for box in to_insert:  # a seeded position, never always last: the position must say nothing about the target
        new_hints[category].insert(rng.randint(0, len(new_hints[category])), list(box))
    new_problem = problem[: span[0]] + json.dumps(new_hints) + problem[span[1] :] if span else problem
    outcome = "+".join(name for name, count in (("snapped", snapped), ("inserted", len(to_insert))) if count)
    new_answer = _answer_text(fixed_answers, answer)
    return _Fixed(outcome, new_problem, new_answer, new_hints, fixed_answers, snapped, len(to_insert))


def _hints_and_span(row: dict, problem: str, where: str) -> tuple[dict[str, list], tuple[int, int] | None]:
    """The row's hints and where their JSON sits in the problem text (None when the problem holds none)."""
    for marker in (HINT_MARKER, "Hint:"):  # ours and Rex-Thinker's training text, then its HumanRef evaluation's
        start = problem.find(marker)
        if start >= 0:
            json_start = start + len(marker)
            json_start += len(problem[json_start:]) - len(problem[json_start:].lstrip())
            try:
                value, end = json.JSONDecoder().raw_decode(problem, json_start)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: the hint JSON in the problem does not parse ({err})") from None
            return _some(parse_hints(value, where), where), (json_start, end)
    if row.get("hints") is not None:
        return _some(parse_hints(row["hints"], where), where), None
    raise DataError(f"{where}: no box hints (no hint JSON in the problem and no 'hints' column)")


def _some(hints: dict[str, list], where: str) -> dict[str, list]:
    if not hints:
        raise DataError(f"{where}: the hints hold no category")
    return hints


def _answer_text(boxes: list[list[float]], answer: str) -> str:
    """The answer with new boxes, each keeping its item's label, written as the converters write answers."""
    if not boxes:
        return REJECTION_TEXT
    items = json.loads(answer.strip().removeprefix("```json").removesuffix("```"))
    labels = [item.get("label", "") if isinstance(item, dict) else "" for item in items]
    new_items = [{"bbox_2d": list(box), "label": label} for box, label in zip(boxes, labels, strict=True)]
    return f"```json\n{json.dumps(new_items)}\n```"


def _write_atomically(table: pa.Table, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.tmp")
    try:
        pq.write_table(table, temp, row_group_size=256)
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
