"""Shared by the fault tests: real ``rexthinker-train`` processes, each in a session of its own, and their processes.

A run started here can be killed as a crash or a pre-empted node would kill it: SIGKILL to every process of its
session (driver, Ray's gcs/raylet and the worker processes, which Ray puts in process groups of their own).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.conftest import TINY_OVERRIDES

LENGTH_REWARD = Path(__file__).resolve().parents[1] / "e2e" / "length_reward.py"
# Wall-clock quantities and memory figures differ between any two runs; everything else in metrics.jsonl must match
# exactly.
NONDETERMINISTIC = ("timing/", "throughput/tokens_per_s", "throughput/generate_tokens_per_s", "perf/")


def run_overrides(model_dir: Path, data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """A small GRPO run on the tiny model: 4 prompts x 4 samples, 24 tokens, the length reward, no KL reference,
    metrics to jsonl."""
    return [
        *TINY_OVERRIDES,
        f"model.path={model_dir}",
        f"data.train_files={data_dir / 'train.parquet'}",
        f"data.val_files={data_dir / 'val.parquet'}",
        "data.format_prompt=''",
        "data.max_response_length=24",
        "data.rollout_batch_size=4",
        "data.val_max_samples=4",
        "actor.global_batch_size=4",
        "actor.strategy=torch",
        "rollout.placement=separate",  # a rollout worker of its own (the worker-death tests kill it)
        "actor.lr=1e-3",
        "rollout.n=4",
        "algorithm.kl_mode=none",  # no reference worker: one process less per run
        "trainer.resume=auto",
        f"trainer.output_dir={run_dir}",
        "logging.sinks=[jsonl]",
        "reward.components=[]",
        f"reward.function={LENGTH_REWARD}:shorter_is_better",
        *extra,
    ]


def call(entry, argv: list[str]) -> int:
    """Run a console entry point (``main(argv)``) in this process; its exit status, whether returned or exited."""
    try:
        status = entry(argv)
    except SystemExit as exit_info:
        return int(exit_info.code or 0)
    return int(status or 0)


def train_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-c", "from rexthinker_rl.apps.cli import train_main; train_main()", *overrides]


def start(command: list[str], log: Path, ray_tmp: Path, **env: str | None) -> subprocess.Popen:
    """Start ``command`` in a new session (its pid is the session id), stdout and stderr to ``log``; ``env`` entries
    set variables, or with None remove them."""
    ray_tmp.mkdir(parents=True, exist_ok=True)
    environ = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_TMPDIR": str(ray_tmp),  # Ray's session files in the test's folder, not /tmp/ray
        **env,
    }
    environ = {name: value for name, value in environ.items() if value is not None}
    environ.pop("RAY_ADDRESS", None)
    with log.open("w") as handle:
        return subprocess.Popen(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=environ,
            start_new_session=True,
            preexec_fn=_as_a_terminal_starts_it,
        )


def _as_a_terminal_starts_it() -> None:
    """Ctrl-C (SIGINT) at its default, as in a terminal's foreground job: a test suite started in the background
    (`make test &`, nohup) has SIGINT ignored, every process it starts inherits that, and Python then never raises
    KeyboardInterrupt (the Ctrl-C test hung exactly so)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def session_processes(session: int) -> list[psutil.Process]:
    """Live (not zombie) processes of a session: the driver, Ray's services and the worker processes."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL every process of the run's session at once, as a node crash would, and reap the driver."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # driver, gcs_server, raylet, agents
    for survivor in session_processes(process.pid):  # Ray's workers sit in process groups of their own
        with contextlib.suppress(psutil.Error):
            survivor.kill()
    process.wait(timeout=30)


def wait_until_gone(session: int, timeout: float = 20.0) -> list[str]:
    """Wait for a session's processes to exit; kill and name any still there after ``timeout`` (a leak)."""
    deadline = time.monotonic() + timeout
    while (left := session_processes(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    names = []
    for process in left:
        with contextlib.suppress(psutil.Error):
            names.append(" ".join(process.cmdline())[:120] or process.name())
            process.kill()
    return names


def finish(process: subprocess.Popen, log: Path, timeout: float = 420) -> int:
    """Wait for the run to exit by itself (killing its session on timeout, after taking the stack it hung in); its
    exit status."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stacks = _driver_stacks(process.pid)
        kill_session(process)
        raise AssertionError(f"run did not finish in {timeout} s:\n{log.read_text()[-3000:]}\n{stacks}") from None


def _driver_stacks(pid: int) -> str:
    """Every thread's Python stack of a hung driver (py-spy, which Ray installs), or why there are none."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.is_file():
        return "(no py-spy to show where the driver hung)"
    try:
        dump = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "(py-spy dump timed out)"
    return f"where the driver hung (py-spy dump):\n{dump.stdout[-6000:]}{dump.stderr[-1000:]}"


def read_jsonl(path: Path) -> list[dict]:
    """Complete lines of a JSONL file being written by another process (a torn last line is not yet a record)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def metric_history(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock quantities and memory figures."""
    return [
        {k: v for k, v in record.items() if k != "time" and not k.startswith(NONDETERMINISTIC)}
        for record in read_jsonl(run_dir / "metrics.jsonl")
    ]


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]
