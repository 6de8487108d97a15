"""Command-line entry points: ``rexthinker-train`` (GRPO) and ``rexthinker-sft`` (warm start).

Both take ``--config YAML`` followed by any number of ``section.key=value`` overrides. Bad input prints one clear line
(no traceback) and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from rexthinker_rl.config import ConfigError, load_config

USER_ERRORS = (ConfigError, FileNotFoundError, ValueError)


def _parse(argv: list[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="YAML experiment file (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. actor.lr=2e-6")
    return parser.parse_args(argv)


def _fail(error: Exception) -> None:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def train_main(argv: list[str] | None = None) -> None:
    args = _parse(argv, "GRPO training of Qwen2.5-VL (Rex-Thinker recipe).")
    try:
        config = load_config(args.config, args.overrides)
        from rexthinker_rl.trainer import GRPOTrainer

        trainer = GRPOTrainer(config)
    except USER_ERRORS as error:
        _fail(error)
    try:
        summary = trainer.fit()
    finally:
        trainer.shutdown()
    print(json.dumps(summary, indent=2))


def sft_main(argv: list[str] | None = None) -> None:
    args = _parse(argv, "Supervised warm start on chain-of-thought targets.")
    try:
        config = load_config(args.config, args.overrides)
        from rexthinker_rl.sft import run_sft

        out = run_sft(config)
    except USER_ERRORS as error:
        _fail(error)
    print(f"sft model written to {out}")
