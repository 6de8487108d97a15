"""Templated chain-of-thought SFT targets from a set's hints and answers: ``rexthinker-data cot IN --out OUT``.

Rex-Thinker's SFT stage trains on GPT-4o reasoning traces, which a user's own data does not have, and
``rexthinker-sft`` refuses a set without an ``sft_target`` column. This writes one for every row, in the shape of the
synthetic set's targets (planning, one verdict per hint box, summary, then the row's own answer), built only from the
row's hints, referring expression and answer: a warm start that teaches the output format and copying a hint box into
the answer, not reasoning about the picture. (Starting GRPO from released Rex-Thinker weights, without SFT, is the
other way in.) Rows that already have a target keep it unless ``replace``. The output is a new parquet file, written
atomically; the input is never changed. A row whose text holds a special token or reasoning markup
(``rexthinker_rl.data.reserved``), or whose target would not parse as ``<think>...</think><answer>...</answer>``, and a file
whose ids repeat, are refused with one line naming the row.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_tools.validate import parse_answer_boxes
from rewards.parsing import parse_completion
from rexthinker_rl.data.dataset import DataError, hints_from_problem, parse_hints
from rexthinker_rl.data.reserved import row_keys, row_text_problems
from rexthinker_rl.data.rows import duplicate_ids, read_rows
from rexthinker_rl.run.outputs import check_new_file

_REFERRING_PREFIX, _REFERRING_SUFFIX = "Please detect ", " in the image."


@dataclass
class CotReport:
    """Counts of one ``cot`` run."""

    path: str
    rows: int = 0
    written: int = 0  # templated targets written
    kept: int = 0  # rows whose own target was kept

    def summary(self) -> str:
        return f"cot: {self.rows} rows; {self.written} templated targets written, {self.kept} existing kept -> {self.path}"


def template_target(referring: str, category: str, hints: dict[str, list[list[float]]], answer: str) -> str:
    """``<think>`` planning, a yes/no per hint box (quoted, in hint order), summary ``</think><answer>`` answer."""
    targets = parse_answer_boxes(answer)
    boxes = [(name, box) for name, group in hints.items() for box in group]
    several = len(hints) > 1
    verdicts = [
        f"Box {number}{f' ({name})' if several else ''} {json.dumps(box)}: {'yes' if box in targets else 'no'}."
        for number, (name, box) in enumerate(boxes, start=1)
    ]
    matches = sum(box in targets for _, box in boxes)
    summary = "none match." if not matches else "1 match." if matches == 1 else f"{matches} matches."
    planning = f"Planning: find {referring} among the {len(boxes)} {category} hints."
    return f"<think>{planning} Action: {' '.join(verdicts)} Summary: {summary}</think><answer>{answer}</answer>"


def _row_target(row: dict, where: str) -> str:
    reserved = row_text_problems({key: value for key, value in row.items() if key != "sft_target"}, row_keys())
    if reserved:
        raise DataError(f"{where}: {reserved[0]}")
    problem = row.get("problem") or ""
    hints = parse_hints(row["hints"], where) if row.get("hints") is not None else hints_from_problem(problem, where)
    if not hints:
        raise DataError(f"{where}: no box hints (a 'hints' column or hint JSON in 'problem') to write a target from")
    referring = row.get("referring") or problem.rpartition(_REFERRING_PREFIX)[2].removesuffix(_REFERRING_SUFFIX)
    category = row.get("category") or next(iter(hints))
    try:
        target = template_target(referring.strip(), category, hints, row.get("answer") or "")
    except ValueError as err:
        raise DataError(f"{where}: {err}") from None
    broken = parse_completion(target).structure_error
    if broken is not None:  # what SFT would teach must parse the way the rewards read completions
        raise DataError(f"{where}: the templated target does not parse ({broken})")
    return target


def _read_source(source: Path):
    """The parquet table ``cot`` copies; DataError saying what it needs for anything else."""
    needs = "cot reads one training parquet file (`rexthinker-data convert`'s output, or a set in its schema)"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such parquet file ({needs}; run it per shard)")
    if source.suffix == ".jsonl":
        raise DataError(
            f"{source}: JSON lines, but {needs}: convert interchange records with `rexthinker-data convert`, or "
            "write a training-schema JSONL to parquet first"
        )
    try:
        table = pq.read_table(source, memory_map=True)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{source}: not a parquet file ({err}); {needs}") from None
    repeated = duplicate_ids(read_rows(source))
    if repeated:
        uid, where, first = repeated[0]
        raise DataError(
            f"{where}: id {uid!r} is also {first}'s; ids must be unique (`rexthinker-data validate` lists all)"
        )
    return table


def write_cot(source: str | Path, out: str | Path, replace: bool = False, overwrite: bool = False) -> CotReport:
    """Copy the parquet file ``source`` to ``out`` with an ``sft_target`` for every row (see the module docstring)."""
    source, out = Path(source), Path(out)
    table = _read_source(source)
    check_new_file(out, overwrite, inputs=[source])
    existing = table.column("sft_target").to_pylist() if "sft_target" in table.column_names else [None] * len(table)
    report, targets = CotReport(str(out), rows=len(table)), []
    columns = [
        name
        for name in ("problem", "hints", "referring", "category", "answer", "sft_target")
        if name in table.column_names
    ]
    for index, (row, own) in enumerate(zip(table.select(columns).to_pylist(), existing, strict=True)):
        if own and not replace:
            reserved = row_text_problems(row, row_keys())
            if reserved:
                raise DataError(f"{source.name} row {index}: {reserved[0]}")
            targets.append(own)
            report.kept += 1
            continue
        targets.append(_row_target(row, f"{source.name} row {index}"))
        report.written += 1
    column = pa.array(targets, type=pa.string())
    if "sft_target" in table.column_names:
        table = table.set_column(table.column_names.index("sft_target"), "sft_target", column)
    else:
        table = table.append_column("sft_target", column)
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staged = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        pq.write_table(table, staged)
        os.replace(staged, out)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return report
