"""A synthetic set's SFT targets rewritten as an imperfect teacher would write them (``data_tools/teacher.py``, whose
docstring describes each teacher; docs/tiny-demo.md, "Room of a known kind" and after).

    python benchmarks/teacher_bias.py SRC.parquet DST.parquet --bias P --seed S [--quote] [--verdicts | --misses-second]

No flag: the ``answers-first`` teacher (the answer names hint 1's box alone on a drawn two-hint row; its lines stay
right); ``--verdicts``: ``verdicts-first`` (its chain agrees); ``--misses-second``: ``misses-second`` (says "no" to hint
2; the summary and answer follow). ``--quote``: the summary quotes the answer's boxes. Only ``sft_target`` changes.
The runs measured in docs/tiny-demo.md were made with this script; ``rexthinker-data synth --teacher`` writes the same
targets when the set is made. Prints how many targets changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_tools.teacher import check_teacher, teach_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--bias", type=float, default=0.0, help="share of two-hint rows the teacher gets wrong")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quote", action="store_true", help="the summary names and quotes the matched boxes")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--verdicts", action="store_true", help="the hint lines and summary agree with the answer")
    kind.add_argument("--misses-second", action="store_true", help="says no to hint 2 instead; the rest follows")
    args = parser.parse_args(argv)
    teacher = "misses-second" if args.misses_second else "verdicts-first" if args.verdicts else "answers-first"
    try:
        check_teacher(teacher, args.bias, "--bias")
        changed, rows = teach_file(Path(args.src), Path(args.dst), teacher, args.bias, args.seed, args.quote)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    print(f"{args.dst}: {changed} of {rows} SFT targets rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
