"""Worker death: a Ray worker process SIGKILLed mid-run stops ``rexthinker-train`` within seconds, with a non-zero exit
and one line naming the worker and the step; the same command with ``trainer.resume=auto`` then continues from the last
checkpoint and finishes.

The chain: kill the rollout worker after checkpoint 1, resume and kill the actor worker one step later, resume and
finish. The processes killed are the real worker processes (Ray titles them ``ray::RolloutWorker...``).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from rexthinker_rl.train.checkpoint import TRACKER
from tests.faults.runs import (
    error_lines,
    finish,
    kill_session,
    read_jsonl,
    run_overrides,
    session_processes,
    start,
    train_command,
    wait_until_gone,
)

pytestmark = [pytest.mark.slow, pytest.mark.exclusive]  # it times how fast a run stops: no load beside it

TOTAL_STEPS = 4


def _worker_process(session: int, title: str):
    for process in session_processes(session):
        try:
            if " ".join(process.cmdline()).startswith(f"ray::{title}"):
                return process
        except psutil.Error:  # it exited while we looked: not the one we want
            continue
    return None


def _steps(run_dir: Path) -> list[int]:
    return [record["step"] for record in read_jsonl(run_dir / "metrics.jsonl")]


def _kill_worker_then_wait(process, title: str, ready, log: Path) -> tuple[int, float, int]:
    """Once ``ready()``, SIGKILL the worker titled ``title``; (killed pid, seconds until the driver exited, status)."""
    deadline = time.monotonic() + 600
    while not ready():
        assert process.poll() is None, f"the run ended before the kill:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the run never got ready for the kill"
        time.sleep(0.05)
    worker = _worker_process(process.pid, title)
    assert worker is not None, f"no ray::{title} process in the run's session"
    worker.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    try:
        status = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill_session(process)
        raise AssertionError(f"the driver hung after its {title} died:\n{log.read_text()[-3000:]}") from None
    return worker.pid, time.monotonic() - killed, status


@dataclass
class Death:
    role: str
    pid: int  # of the worker process killed
    seconds: float  # from the kill until the driver exited
    status: int
    log: Path
    steps_logged: list[int]  # when the driver exited
    leaked: list[str]  # processes of the run still there 20 s later


def _kill(role: str, process, title: str, ready, log: Path, run_dir: Path) -> Death:
    pid, seconds, status = _kill_worker_then_wait(process, title, ready, log)
    return Death(role, pid, seconds, status, log, _steps(run_dir), wait_until_gone(process.pid))


def _tracker(run_dir: Path) -> int:
    try:
        return int((run_dir / "checkpoints" / TRACKER).read_text())
    except (FileNotFoundError, ValueError):
        return 0


@pytest.fixture(scope="module")
def chain(tiny_model_dir, synthetic_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("worker_death")
    run_dir = root / "run"
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    command = train_command(
        run_overrides(
            tiny_model_dir,
            synthetic_data_dir,
            run_dir,
            "rollout.engine=hf",  # the death of the process matters here, not the engine in it
            f"trainer.total_steps={TOTAL_STEPS}",
            "trainer.val_before_train=false",
            "trainer.val_freq=-1",
            "checkpoint.save_freq=1",
        )
    )
    try:
        # 1. The rollout worker dies once checkpoint 1 exists (the driver is on its way to generating step 2).
        log = root / "rollout_killed.log"
        process = start(command, log, ray_tmp)
        rollout = _kill("rollout", process, "RolloutWorker", lambda: _tracker(run_dir) >= 1, log, run_dir)
        # 2. Resumed, the actor worker dies once the run has saved a checkpoint of its own.
        log = root / "actor_killed.log"
        process = start(command, log, ray_tmp)
        saved = _tracker(run_dir)
        actor = _kill("actor", process, "ActorWorker", lambda: _tracker(run_dir) > saved, log, run_dir)
        # 3. Resumed again, to the end.
        log = root / "finished.log"
        process = start(command, log, ray_tmp)
        status = finish(process, log)
        yield run_dir, [rollout, actor], (status, log, wait_until_gone(process.pid))
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.parametrize("index", [0, 1], ids=["rollout", "actor"])
def test_worker_death_stops_the_run_with_one_line(chain, index):
    _, deaths, _ = chain
    death = deaths[index]
    text = death.log.read_text()
    assert death.status == 1, text[-3000:]
    assert death.seconds < 30, f"the driver took {death.seconds:.0f} s to stop after the {death.role} worker died"
    assert not death.leaked, f"processes outlived the failed run: {death.leaked}"
    (line,) = error_lines(text)
    match = re.fullmatch(
        rf"error: {death.role} worker died during step (\d+) \(its process died, pid {death.pid}\); the run "
        r"stopped; rerun the same command with trainer\.resume=auto to continue from (\S+)",
        line,
    )
    assert match, line
    assert "Traceback (most recent call last)" not in text
    step = int(match.group(1))
    assert step == max(death.steps_logged) + 1  # the step that was under way
    assert Path(match.group(2)).name == f"global_step_{step - 1}"  # the checkpoint to resume from


def test_the_run_resumes_from_the_last_checkpoint_and_finishes(chain):
    run_dir, deaths, (status, log, leaked) = chain
    assert status == 0, log.read_text()[-3000:]
    assert not leaked
    assert "global_step_1 (step 1)" in deaths[1].log.read_text()  # resumed after the rollout worker died
    assert f"global_step_{max(deaths[1].steps_logged)} (step" in log.read_text()  # ... and after the actor died
    assert _steps(run_dir) == list(range(1, TOTAL_STEPS + 1))  # every step once: nothing lost, nothing doubled
    assert (run_dir / "final" / "model.safetensors").is_file()
