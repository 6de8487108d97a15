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
import signal
import sys
import threading
import traceback
from dataclasses import asdict
from pathlib import Path

import pyarrow.parquet as pq

from rexthinker_rl.apps.console import console_entry, debugging, error_lines, keep_errors_in, record
from rexthinker_rl.config import Config, ConfigError, load_config, to_yaml
from rexthinker_rl.data.prompts import preset_for
from rexthinker_rl.run.summary import describe_summary

USER_ERRORS = (ConfigError, FileNotFoundError, ValueError)

# The training modules (torch, Ray, transformers: seconds to import) are imported when a run starts, not for `--help`
# or `--print-config`.


def _user_errors() -> tuple[type[Exception], ...]:
    from rexthinker_rl.runtime.ray_cluster import RayStartError
    from rexthinker_rl.train.checkpoint import CheckpointError
    from rexthinker_rl.train.rewarding import RewardError

    return (*USER_ERRORS, RewardError, CheckpointError, RayStartError)


def _run_errors() -> tuple[type[Exception], ...]:
    from rexthinker_rl.data.dataset import DataError
    from rexthinker_rl.runtime.deaths import WorkerDiedError
    from rexthinker_rl.runtime.placement import PlacementError
    from rexthinker_rl.train.checkpoint import CheckpointError
    from rexthinker_rl.train.policy import NonFiniteUpdateError
    from rexthinker_rl.train.rewarding import RewardError

    return (WorkerDiedError, RewardError, NonFiniteUpdateError, CheckpointError, DataError, PlacementError)


def _parse(argv: list[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="YAML experiment file (configs/*.yaml)")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (defaults < YAML < overrides) and exit; starts no worker, needs no GPU",
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. actor.lr=2e-6")
    return parser.parse_args(argv)


def describe_config(config: Config, source: str | None) -> str:
    """The resolved config as YAML, headed by what it implies: derived sizes, the prompt preset, the step count."""
    preset = preset_for(config.data)
    derived = ", ".join(f"{key}={value}" for key, value in asdict(config.derived).items())
    system = "none (the chat template's default)" if not preset.system else f"{preset.system[:40]!r}..."
    lines = [
        f"# resolved config of {source or 'the defaults'} with the given overrides (nothing started)",
        f"# derived: {derived}",
        f"# prompt preset {preset.name}: system {system}; its boxes rounded {preset.box_rounding!r} (convert the data "
        f"with it); its own pixels {preset.min_pixels}..{preset.max_pixels}; eval/infer read {preset.answer_parsing}",
        f"# steps: {_steps(config)}",
    ]
    return "\n".join(lines) + "\n" + to_yaml(config)


def _steps(config: Config) -> str:
    """The GRPO step count, from the training file's row count when it is on this machine."""
    trainer, batch = config.trainer, config.data.rollout_batch_size
    if trainer.total_steps > 0:
        return f"trainer.total_steps={trainer.total_steps}"
    path = Path(config.data.train_files)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not config.data.train_files or not all(file.suffix == ".parquet" and file.is_file() for file in files):
        return f"{trainer.total_epochs} epoch(s) x (training rows // {batch}), counted at start"

    rows = sum(pq.read_metadata(file).num_rows for file in files)
    return f"{trainer.total_epochs} epoch(s) x ({rows} rows // {batch}) = {trainer.total_epochs * (rows // batch)}"


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping the job, ``kill PID``): raised like Ctrl-C, so the run stops its workers and Ray on
    the way out instead of dying at once and leaving them running."""


# Set by the SIGTERM handler: Ray's blocking calls turn any signal's exception into a plain KeyboardInterrupt.
_TERMINATED = threading.Event()


def _raise_terminated(signum: int, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: the shutdown under way must not be cut short
    _TERMINATED.set()
    raise Terminated


def _interrupted(message: str, error: KeyboardInterrupt | None = None) -> None:
    if isinstance(error, Terminated) or _TERMINATED.is_set():
        print(f"terminated (SIGTERM): {message}", file=sys.stderr, flush=True)
        sys.exit(128 + signal.SIGTERM)
    print(f"interrupted: {message}", file=sys.stderr, flush=True)
    sys.exit(130)


def _fail(error: Exception, status: int = 2, command: str = "rexthinker-train") -> None:
    record(error, command)  # the traceback, in the run folder's errors.log once there is one
    if debugging():
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(error_lines(error), file=sys.stderr, flush=True)
    sys.exit(status)


def _config(args: argparse.Namespace) -> Config | None:
    """The config of the command line; None when it was only to be printed (``--print-config``)."""
    config = load_config(args.config, args.overrides)
    if not args.print_config:
        return config
    print(describe_config(config, args.config), end="", flush=True)
    return None


@console_entry("rexthinker-train")
def train_main(argv: list[str] | None = None) -> None:
    args = _parse(argv, "GRPO training of Qwen2.5-VL (Rex-Thinker recipe).")
    if threading.current_thread() is threading.main_thread():  # (kept through Ray's start: ray_cluster.start_cluster)
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        config = _config(args)
        if config is None:
            return
        from rexthinker_rl.train.trainer import GRPOTrainer

        trainer = GRPOTrainer(config)
        keep_errors_in(trainer.run_dir)  # checked to be a run folder (or new) and made by the trainer
    except _user_errors() as error:
        _fail(error)
    except KeyboardInterrupt as error:
        _interrupted("before training started; nothing was trained", error)
    try:
        summary = trainer.fit()
    except _run_errors() as error:
        _fail(error, status=1)
    except KeyboardInterrupt as error:
        where = f"during step {trainer.step}" if trainer.step else "during start-up (step 0)"
        _interrupted(f"{where}; {trainer.how_to_resume()}", error)
    finally:
        trainer.shutdown()

    print(json.dumps(summary, indent=2))
    print(describe_summary(summary), flush=True)


@console_entry("rexthinker-sft")
def sft_main(argv: list[str] | None = None) -> None:
    args = _parse(argv, "Supervised warm start on chain-of-thought targets.")
    try:
        config = _config(args)
        if config is None:
            return
        from rexthinker_rl.train.sft import run_sft

        out = run_sft(config)
    except USER_ERRORS as error:
        _fail(error, command="rexthinker-sft")
    except KeyboardInterrupt:
        _interrupted("SFT stopped before writing its model; rerun the same command to start it again")
    print(f"sft model written to {out}")
