"""``rexthinker-eval``: ``run`` a model over a benchmark set, or ``score`` a prediction file without the model.

    rexthinker-eval run --model PATH --data annotations.jsonl --image-root images/ --out runs/eval [overrides ...]
    rexthinker-eval run --preset humanref-eval ...   (Rex-Thinker's evaluation: prompt, pixel bounds, length, parsing)
    rexthinker-eval score --annotations annotations.jsonl --predictions predictions.jsonl --out report.json

Bad input prints one ``error:`` line and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from rexthinker_rl.apps.console import console_entry
from rexthinker_rl.config import ConfigError, DataConfig, load_config
from rexthinker_rl.data.dataset import DataError
from rexthinker_rl.data.prompts import add_preset_argument, preset_overrides
from rexthinker_rl.eval.metrics import markdown_table
from rexthinker_rl.eval.run import check_report_path, run_eval, score_files, write_report

USER_ERRORS = (ConfigError, DataError, FileNotFoundError, ValueError)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rexthinker-eval", description="HumanRef-style evaluation.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="greedy answers for a set, then the report")
    run.add_argument("--model", required=True, help="Hugging Face folder of the model")
    run.add_argument("--data", required=True, help="HumanRef annotations.jsonl, or our parquet / JSONL set")
    run.add_argument("--image-root", default=None, help="folder of the HumanRef images (image_name is relative to it)")
    run.add_argument("--out", required=True, help="output folder (predictions, responses, report): new or empty")
    run.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation's files in --out")
    run.add_argument("--config", default=None, help="YAML config (data pixel bounds, rollout engine, prompts)")
    run.add_argument("--engine", choices=("vllm", "hf"), default=None, help="rollout engine (default: the config's)")
    add_preset_argument(run)
    run.add_argument("--max-samples", type=int, default=-1, help="evaluate the first N samples only")
    run.add_argument("--batch-size", type=int, default=16, help="prompts per engine call")
    run.add_argument("overrides", nargs="*", help="config overrides, e.g. data.max_pixels=1003520")
    score = commands.add_parser("score", help="re-score a predictions file (no model)")
    score.add_argument("--annotations", required=True, help="HumanRef annotations.jsonl, or our parquet / JSONL set")
    score.add_argument("--predictions", required=True, help="JSONL of {id, extracted_predictions}")
    score.add_argument("--out", required=True, help="report JSON path (the Markdown table goes beside it)")
    score.add_argument("--overwrite", action="store_true", help="replace an existing report")
    score.add_argument("--min-pixels", type=int, default=DataConfig.min_pixels, help="pixel bounds of a parquet set")
    score.add_argument("--max-pixels", type=int, default=DataConfig.max_pixels, help="pixel bounds of a parquet set")
    return parser


def unparsed_note(report: dict) -> str:
    """The console line for completions whose answer did not parse: they count as "no box", so a rejection score
    or a low recall may say more about the format than about grounding."""
    unparsed, total = report["unparsed_answers"], report.get("answers", report["unparsed_answers"])
    return (
        f"warning: {unparsed} of {total} answers did not parse (no <answer> boxes or rejection sentence); each counts "
        "as predicting no box, which the rejection score counts as a correct rejection"
    )


@console_entry("rexthinker-eval")
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    try:
        if args.command == "score":
            report = score_files(args.annotations, args.predictions, args.min_pixels, args.max_pixels)
            check_report_path(args.out, args.overwrite, [args.annotations, args.predictions])
            write_report(args.out, report)
            out = args.out
        else:
            if args.batch_size < 1:
                raise ValueError(f"--batch-size {args.batch_size} must be >= 1")
            overrides = list(args.overrides) + ([f"rollout.engine={args.engine}"] if args.engine else [])
            config = load_config(args.config, preset_overrides(args.prompt_preset) + overrides)
            report = run_eval(
                config,
                args.model,
                args.data,
                args.out,
                args.image_root,
                args.max_samples,
                args.batch_size,
                overwrite=args.overwrite,
            )
            out = f"{args.out}/report.json"
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(report))
    if report.get("unparsed_answers"):
        print(unparsed_note(report))
    print(f"report: {out}")
    return 0


def console_main() -> None:
    sys.exit(main())
