"""A synthetic set's SFT targets as an imperfect teacher writes them: one known kind of error, on a drawn share of the
two-hint rows (docs/tiny-demo.md, "A teacher that misses the second match").

Rex-Thinker's chains of thought were written by a model, and a model's errors lean: to a position, to stopping early.
A teacher here is such a lean, made exact. Only ``sft_target`` changes: ``answer`` (what the reward scores), the
prompt, the image and the held-out set keep the truth, so SFT learns the teacher and GRPO is scored against the truth.

Teachers (``data_tools.synth_options.TEACHERS``; the draw: one per row from ``numpy.random.default_rng([seed, 7])`` in row order, two hints or not,
and a two-hint row is rewritten when its draw is below ``bias``):

- ``truthful``: the set's own targets.
- ``misses-second``: says "no" to hint 2 whatever its line reads; the summary and the answer follow (hint 1's box where
  its line says yes, else the refusal). One verdict word per row, and fixing it alone turns a refusal or a half answer
  into the right boxes.
- ``answers-first``: answers hint 1's box alone whatever its lines and summary say (they stay right).
- ``verdicts-first``: the same answer, and the chain agrees with it: hint 1 "yes" (its box quoted again where the set
  quotes a chosen box), hint 2 "no", "1 match". One verdict word per hint.

``quote`` (any teacher): the summary also names and quotes the boxes the answer gives ("Summary: 1 match, Box 2 [6, 31,
21, 46].").
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from data_tools.synth_options import TEACHERS
from data_tools.synthetic import format_answer, write_parquet

SUMMARY = " Summary: "
# One hint's line: "Box 2 [34, 3, 55, 24] cell 1 red green no." or "... bottommost at y 47: yes [10, 39, 26, 55]."
LINE = re.compile(r"(Box (\d+) (\[\d+, \d+, \d+, \d+\])[^\[]*?) (yes|no)(?: \[\d+, \d+, \d+, \d+\])?\.")


def hint_boxes(row: dict) -> list[list[int]]:
    return next(iter(json.loads(row["hints"]).values()))


def summary(targets: list[int], boxes: list[list[int]], quote: bool) -> str:
    if not targets:
        return "none match"
    text = "1 match" if len(targets) == 1 else f"{len(targets)} matches"
    if quote:
        text += ", " + ", ".join(f"Box {t + 1} {json.dumps(boxes[t])}" for t in targets)
    return text


def _verdicts(lines: str, say: dict[str, bool], echo: bool) -> str:
    """The hint lines with the verdicts of the hints numbered in ``say`` set (yes: the box quoted again if ``echo``)."""

    def verdict(match: re.Match) -> str:
        if match.group(2) not in say:
            return match.group(0)
        if not say[match.group(2)]:
            return f"{match.group(1)} no."
        return f"{match.group(1)} yes {match.group(3)}." if echo else f"{match.group(1)} yes."

    return LINE.sub(verdict, lines)


def rewrite(row: dict, teacher: str, quote: bool = False, echo: bool = True) -> str:
    """The row's SFT target as ``teacher`` writes it (a drawn row; ``truthful`` and one-hint rows keep the truth)."""
    boxes = hint_boxes(row)
    targets = [boxes.index(box) for box in json.loads(row["answer_boxes"])]
    answer = row["answer"]
    lines, written = row["sft_target"].split(SUMMARY)
    said = written.split(".</think>")[0]  # the lines' count ("1 match")
    if len(boxes) == 2 and teacher == "misses-second":
        targets = [t for t in targets if t != 1]
        answer = format_answer([boxes[t] for t in targets], row["referring"])
        lines, said = _verdicts(lines, {"2": False}, echo), summary(targets, boxes, quote=False)
    elif len(boxes) == 2 and teacher in ("answers-first", "verdicts-first"):
        targets, answer = [0], format_answer([boxes[0]], row["referring"])
        if teacher == "verdicts-first":
            lines, said = _verdicts(lines, {"1": True, "2": False}, echo), "1 match"
    said = summary(targets, boxes, quote) if quote else said
    return f"{lines}{SUMMARY}{said}.</think><answer>{answer}</answer>"


def _is_synthetic(row: dict) -> bool:
    target = row["sft_target"]
    return SUMMARY in target and len(LINE.findall(target)) == len(hint_boxes(row))


def check_teacher(teacher: str, bias: float, flag: str = "--teacher-bias") -> None:
    """Refuse an unknown teacher, or a bias (given as ``flag``) that is not a probability."""
    if teacher not in TEACHERS:
        raise ValueError(f"teacher {teacher!r}: one of {', '.join(TEACHERS)}")
    if not 0 <= bias <= 1:
        raise ValueError(f"{flag} {bias}: a probability, between 0 and 1")


def teach(rows: list[dict], teacher: str, bias: float, seed: int, quote: bool = False, where: str = "rows") -> int:
    """Rewrite ``rows``' ``sft_target`` in place as ``teacher`` writes them; returns how many changed.

    ``where`` names the rows in errors (a file)."""
    check_teacher(teacher, bias)
    if rows and not _is_synthetic(rows[0]):
        raise ValueError(
            f"{where}: row 0's sft_target is not a synthetic set's (a 'Box N [..] .. yes.' or '.. no.' line per hint, "
            f"then '{SUMMARY.strip()}'): rexthinker-data synth writes such targets"
        )
    echo = any(re.search(r" yes \[", row["sft_target"]) for row in rows)  # the set quotes a chosen box again
    rng = np.random.default_rng([seed, 7])
    changed = 0
    for row in rows:
        drawn = rng.random() < bias
        target = rewrite(row, teacher if drawn else "truthful", quote, echo)
        changed += target != row["sft_target"]
        row["sft_target"] = target
    return changed


def teach_file(src: Path, dst: Path, teacher: str, bias: float, seed: int, quote: bool = False) -> tuple[int, int]:
    """``teach`` on a parquet file, written (atomically, the set's own schema) to ``dst``; (changed, rows)."""
    rows = pq.read_table(src).to_pylist()
    changed = teach(rows, teacher, bias, seed, quote, where=str(src))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    write_parquet(rows, Path(dst))
    return changed, len(rows)
