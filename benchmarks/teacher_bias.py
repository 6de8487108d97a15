"""A synthetic set's SFT targets rewritten as an imperfect teacher would write them (docs/tiny-demo.md, "Room of a known
kind: a teacher that answers the first box").

    python benchmarks/teacher_bias.py SRC.parquet DST.parquet --bias P --seed S [--quote] [--verdicts]

``--bias P``: on each two-hint row, with probability P, the target's answer names the first hint's box alone, whatever
the target's own hint lines and summary say (they stay right; with ``--quote`` the summary quotes the answer's boxes):
a teacher whose answers lean to the first box, as answers written by a model often lean to a position. Only
``sft_target`` changes: ``answer`` (what the reward scores) and the held-out set are untouched, so GRPO is scored
against the truth while SFT learned the teacher. ``--quote``: the summary also names and quotes the matched boxes
("Summary: 1 match, Box 2 [6, 31, 21, 46]."), so that the answer's box is the last one written before it.
``--verdicts``: the same bias, but the teacher's chain agrees with its answer: on a drawn row hint 1's verdict is "yes"
(its box quoted again where the set quotes a chosen box), hint 2's "no", and the summary "1 match", whatever each line's
colour or position says, so the error is one verdict word per hint. One draw per row from ``numpy.random.default_rng([S, 7])``, in row order, whether or not the row has two hints. Prints how many
targets changed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from data_tools.synthetic import format_answer, write_parquet

SUMMARY = " Summary: "
# One hint's line: "Box 2 [34, 3, 55, 24] cell 1 red green no." or "... bottommost at y 47: yes [10, 39, 26, 55]."
LINE = re.compile(r"(Box (\d+) (\[\d+, \d+, \d+, \d+\])[^\[]*?) (yes|no)(?: \[\d+, \d+, \d+, \d+\])?\.")


def _hint_boxes(row: dict) -> list[list[int]]:
    return next(iter(json.loads(row["hints"]).values()))


def summary(targets: list[int], hint_boxes: list[list[int]], quote: bool) -> str:
    if not targets:
        return "none match"
    text = "1 match" if len(targets) == 1 else f"{len(targets)} matches"
    if quote:
        text += ", " + ", ".join(f"Box {t + 1} {json.dumps(hint_boxes[t])}" for t in targets)
    return text


def first_hint_lines(lines: str, echo: bool) -> str:
    """The hint lines with hint 1's verdict "yes" (its box quoted again if ``echo``) and every other hint's "no"."""

    def verdict(match: re.Match) -> str:
        if match.group(2) != "1":
            return f"{match.group(1)} no."
        return f"{match.group(1)} yes {match.group(3)}." if echo else f"{match.group(1)} yes."

    return LINE.sub(verdict, lines)


def rewrite(row: dict, draw: float, bias: float, quote: bool, verdicts: bool = False, echo: bool = True) -> str:
    """The row's SFT target as the teacher writes it."""
    hint_boxes = _hint_boxes(row)
    targets = [hint_boxes.index(box) for box in json.loads(row["answer_boxes"])]
    answer = row["answer"]
    lines, written = row["sft_target"].split(SUMMARY)
    said = written.split(".</think>")[0]  # the lines' count ("1 match")
    if len(hint_boxes) == 2 and draw < bias:
        targets, answer = [0], format_answer([hint_boxes[0]], row["referring"])
        if verdicts:
            lines, said = first_hint_lines(lines, echo), "1 match"
    said = summary(targets, hint_boxes, quote) if quote else said
    return f"{lines}{SUMMARY}{said}.</think><answer>{answer}</answer>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--bias", type=float, default=0.0, help="share of two-hint rows answered with the first box")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quote", action="store_true", help="the summary names and quotes the matched boxes")
    parser.add_argument("--verdicts", action="store_true", help="the hint lines and summary agree with the answer")
    args = parser.parse_args(argv)
    if not 0 <= args.bias <= 1:
        raise SystemExit(f"--bias {args.bias}: a probability, between 0 and 1")
    rows = pq.read_table(args.src).to_pylist()
    if rows and SUMMARY not in rows[0]["sft_target"]:
        raise SystemExit(f"{args.src}: row 0's sft_target has no '{SUMMARY.strip()}': not a synthetic set's target")
    if rows and len(LINE.findall(rows[0]["sft_target"])) != len(_hint_boxes(rows[0])):
        raise SystemExit(f"{args.src}: row 0's sft_target has not one 'Box N [..] .. yes|no.' line per hint")
    echo = any(re.search(r" yes \[", row["sft_target"]) for row in rows)  # the set quotes a chosen box again
    rng = np.random.default_rng([args.seed, 7])
    changed = 0
    for row in rows:
        target = rewrite(row, rng.random(), args.bias, args.quote, args.verdicts, echo)
        changed += target != row["sft_target"]
        row["sft_target"] = target
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    write_parquet(rows, Path(args.dst))  # the synthetic set's own writer: its schema, atomically
    print(f"{args.dst}: {changed} of {len(rows)} SFT targets rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
