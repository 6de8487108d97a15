"""Command-line entry points: ``rexthinker-train`` (GRPO) and ``rexthinker-sft`` (warm start).

Both take ``--config YAML`` followed by any number of ``section.key=value`` overrides. Bad input (config, data, model
folder, reward function), found before any worker starts, prints one clear line (no traceback) and exits with status 2.
A run that fails later for a known reason (a worker died, a reward raised, non-finite updates, a checkpoint could not
be written) prints one line naming it and exits with status 1; Ctrl-C prints one line saying where the run stopped and
how to continue it, and exits with status 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from rexthinker_rl.config import ConfigError, load_config

USER_ERRORS = (ConfigError, FileNotFoundError, ValueError)


def _user_errors() -> tuple[type[Exception], ...]:
    from rexthinker_rl.checkpoint import CheckpointError
    from rexthinker_rl.ray_cluster import RayStartError
    from rexthinker_rl.rewarding import RewardError

    return (*USER_ERRORS, RewardError, CheckpointError, RayStartError)


def _run_errors() -> tuple[type[Exception], ...]:
    from rexthinker_rl.checkpoint import CheckpointError
    from rexthinker_rl.data import DataError
    from rexthinker_rl.policy import NonFiniteUpdateError
    from rexthinker_rl.rewarding import RewardError
    from rexthinker_rl.trainer import WorkerDiedError

    return (WorkerDiedError, RewardError, NonFiniteUpdateError, CheckpointError, DataError)


def _parse(argv: list[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="YAML experiment file (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. actor.lr=2e-6")
    return parser.parse_args(argv)


def _interrupted(message: str) -> None:
    print(f"interrupted: {message}", file=sys.stderr, flush=True)
    sys.exit(130)


def _fail(error: Exception, status: int = 2) -> None:
    # An error raised inside a Ray worker arrives wrapped with the remote traceback; its cause holds the message.
    cause = getattr(error, "cause", None)
    message = " ".join(str(cause if isinstance(cause, Exception) else error).split())
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def train_main(argv: list[str] | None = None) -> None:
    args = _parse(argv, "GRPO training of Qwen2.5-VL (Rex-Thinker recipe).")
    try:
        config = load_config(args.config, args.overrides)
        from rexthinker_rl.trainer import GRPOTrainer

        trainer = GRPOTrainer(config)
    except _user_errors() as error:
        _fail(error)
    except KeyboardInterrupt:
        _interrupted("before training started; nothing was trained")
    try:
        summary = trainer.fit()
    except _run_errors() as error:
        _fail(error, status=1)
    except KeyboardInterrupt:
        where = f"during step {trainer.step}" if trainer.step else "during start-up (step 0)"
        _interrupted(f"{where}; {trainer.how_to_resume()}")
    finally:
        trainer.shutdown()
    from rexthinker_rl.trainer import describe_summary

    print(json.dumps(summary, indent=2))
    print(describe_summary(summary), flush=True)


def sft_main(argv: list[str] | None = None) -> None:
    args = _parse(argv, "Supervised warm start on chain-of-thought targets.")
    try:
        config = load_config(args.config, args.overrides)
        from rexthinker_rl.sft import run_sft

        out = run_sft(config)
    except USER_ERRORS as error:
        _fail(error)
    except KeyboardInterrupt:
        _interrupted("SFT stopped before writing its model; rerun the same command to start it again")
    print(f"sft model written to {out}")
