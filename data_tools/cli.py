"""``rexthinker-data``: dataset tools behind one command (``synth``, ``validate``).

Bad input (a missing file, a malformed dataset, an impossible argument) prints one ``error:`` line and exits 2;
``validate`` exits 1 when any row is bad.
"""

from __future__ import annotations

import argparse
import sys

from rexthinker_rl.config import DataConfig
from rexthinker_rl.data import DataError

_DEFAULT_SIZE = 112


def _synth(args: argparse.Namespace) -> int:
    from data_tools.synthetic import make_synthetic_dataset

    paths = make_synthetic_dataset(
        args.out,
        num_train=args.num_train,
        num_val=args.num_val,
        seed=args.seed,
        image_size=args.image_size,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        rejection_fraction=args.rejection_fraction,
        multi_fraction=args.multi_fraction,
    )
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from data_tools.validate import validate_file

    report = validate_file(
        args.file,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        image_key=args.image_key,
        prompt_key=args.prompt_key,
        answer_key=args.answer_key,
    )
    for problem in report.problems:
        print(problem.line())
    print(report.summary())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rexthinker-data", description="Build and check Rex-Thinker RL datasets.")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synth", help="write a synthetic referring set of coloured shapes")
    synth.add_argument("--out", required=True, help="output folder (train.parquet, val.parquet)")
    synth.add_argument("--num-train", type=int, default=512)
    synth.add_argument("--num-val", type=int, default=64)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=_DEFAULT_SIZE, help="side of the square images (pixels)")
    synth.add_argument("--min-pixels", type=int, default=_DEFAULT_SIZE**2)
    synth.add_argument("--max-pixels", type=int, default=_DEFAULT_SIZE**2)
    synth.add_argument("--rejection-fraction", type=float, default=0.15, help="share of rows with no target")
    synth.add_argument("--multi-fraction", type=float, default=0.2, help="share of rows with several targets")
    synth.set_defaults(run=_synth)

    defaults = DataConfig()
    validate = commands.add_parser("validate", help="check every row; exit 1 when any is bad")
    validate.add_argument("file", help="parquet file, folder of parquet shards, or JSONL file")
    validate.add_argument("--min-pixels", type=int, default=None, help=f"default {defaults.min_pixels}")
    validate.add_argument("--max-pixels", type=int, default=None, help=f"default {defaults.max_pixels}")
    validate.add_argument("--image-key", default=defaults.image_key)
    validate.add_argument("--prompt-key", default=defaults.prompt_key)
    validate.add_argument("--answer-key", default=defaults.answer_key)
    validate.set_defaults(run=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns (and, run as a script, exits with) the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status = args.run(args)
    except (DataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        status = 2
    if argv is None:
        sys.exit(status)
    return status


if __name__ == "__main__":
    main()
