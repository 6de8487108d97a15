"""Numerical faults in real runs (Ray, the actor and rollout workers, the tiny model), through ``rexthinker-train``.

- A reward that returns NaN for some rollouts is a bug in the reward: the run stops at once with one line naming the
  row (we reject it rather than skip it, since a skipped row would silently bias the group's advantages).
- A reward beyond float32's range (1e39 for some rollouts: inf once the scores are a float32 tensor) makes the group
  statistics NaN: every advantage is NaN, each such update is skipped and logged (``actor/skipped_updates``), and
  after ``actor.max_consecutive_nonfinite`` in a row the run aborts with one line saying what to change. (A reward
  that is merely large is no fault: the group statistics are float64, and an all-equal group gets advantage 0.)
- A batch in which every group is filtered out (``algorithm.online_filtering`` with a constant reward) skips the
  update, logs ``filter/kept_fraction`` = 0 and completes.
- A batch with no response tokens at all updates nothing and is not mistaken for a numerical fault.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from rexthinker_rl.train.checkpoint import load_checkpoint
from tests.faults.runs import error_lines, finish, read_jsonl, run_overrides, start, train_command, wait_until_gone

pytestmark = [pytest.mark.slow]

REWARDS = '''
import math


def nan_for_generated(inputs):
    """NaN for any non-empty completion without an answer block: what the policy writes, not the pre-flight probe."""
    return [{"overall": math.nan if i["response"] and "<answer>" not in i["response"] else 0.5} for i in inputs]


def huge(inputs):
    return [{"overall": 1.0e39 if index % 2 else 0.0} for index, _ in enumerate(inputs)]


def constant(inputs):
    return [{"overall": 1.0} for _ in inputs]
'''


def _train(overrides: list[str], ray_tmp: Path, log: Path) -> tuple[int, str]:
    """``rexthinker-train`` in a process of its own: (exit status, its output); none of its processes may outlive it."""
    process = start(train_command(overrides), log, ray_tmp)
    status = finish(process, log)
    assert not wait_until_gone(process.pid), "processes of the run outlived it"
    return status, log.read_text()


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "faulty_rewards.py"
    path.write_text(REWARDS)
    return path


@pytest.fixture
def train(tiny_model_dir, synthetic_data_dir, tmp_path, ray_tmp):
    """Run ``rexthinker-train`` with a reward and overrides: (run folder, exit status, output)."""
    run_dir = tmp_path / "run"

    def run(reward: str, *extra: str) -> tuple[Path, int, str]:
        overrides = run_overrides(
            tiny_model_dir,
            synthetic_data_dir,
            run_dir,
            "rollout.engine=hf",  # no vLLM start-up: these runs are about the controller, not the engine
            "trainer.val_before_train=false",
            "trainer.val_freq=-1",
            "checkpoint.save_freq=1",
            f"reward.function={reward}",
            *extra,
        )
        return run_dir, *_train(overrides, ray_tmp, tmp_path / "train.log")

    return run


def test_nan_reward_stops_the_run_naming_the_row(train, reward_file, synthetic_data_dir):
    run_dir, status, err = train(f"{reward_file}:nan_for_generated", "trainer.total_steps=2")
    assert status == 1
    (line,) = error_lines(err)
    match = re.search(r"reward failed on row (\S+) \(batch index \d+\): .*'overall' is nan, expected a finite", line)
    assert match, line
    ids = set(pq.read_table(synthetic_data_dir / "train.parquet", columns=["id"]).column("id").to_pylist())
    assert match.group(1) in ids  # the dataset row, by its id
    assert "Traceback" not in err
    assert read_jsonl(run_dir / "metrics.jsonl") == []  # stopped in step 1, before any update


def test_non_finite_updates_are_skipped_logged_then_abort(train, reward_file, tiny_model_dir):
    run_dir, status, err = train(f"{reward_file}:huge", "trainer.total_steps=4", "actor.max_consecutive_nonfinite=2")
    assert status == 1
    (line,) = error_lines(err)
    assert "2 consecutive updates had a non-finite gradient norm; aborting" in line
    assert "actor.max_consecutive_nonfinite" in line and "Traceback" not in err
    (step1,) = read_jsonl(run_dir / "metrics.jsonl")  # step 2 aborted
    assert step1["step"] == 1 and step1["actor/skipped_updates"] == 1.0
    assert step1["actor/grad_norm"] == "nan" and math.isnan(float(step1["advantages/mean"]))
    # The skipped update left the weights as they were: checkpoint 1 holds the initial model.
    from rexthinker_rl.model.loading import load_model

    initial = load_model(str(tiny_model_dir)).state_dict()
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "global_step_1")
    assert initial.keys() == checkpoint.weights.keys()
    assert all(torch.equal(initial[name], checkpoint.weights[name]) for name in initial)
    assert checkpoint.train_state["nonfinite_streak"] == 1


def test_all_filtered_batches_skip_the_update_and_complete(train, reward_file, tiny_model_dir):
    run_dir, status, err = train(f"{reward_file}:constant", "trainer.total_steps=2", "algorithm.online_filtering=true")
    assert status == 0, err[-3000:]
    steps = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["step"] > 0]
    assert [r["step"] for r in steps] == [1, 2]
    for record in steps:
        assert record["filter/kept_fraction"] == 0.0 and record["reward/overall"] == 1.0
        assert not any(key.startswith("actor/") for key in record)  # no update ran
    initial = load_file(tiny_model_dir / "model.safetensors")
    final = load_file(run_dir / "final" / "model.safetensors")
    assert all(torch.equal(initial[name], final[name]) for name in initial)


def test_a_batch_without_response_tokens_is_not_a_numerical_fault(tiny_model_dir):
    from rexthinker_rl.algo.batch import split_mini_batches
    from rexthinker_rl.config import load_config
    from rexthinker_rl.train.policy import Policy
    from tests.tiny.test_policy import BASE, _batch

    config = load_config(None, [*BASE, "actor.max_consecutive_nonfinite=1"])
    policy = Policy(config, str(tiny_model_dir), True, 4)
    batch = _batch(tiny_model_dir)
    batch.response_mask = torch.zeros_like(batch.response_mask)  # every response empty
    metrics = policy.update(
        split_mini_batches(batch, config)[0]
    )  # with a limit of 1, a non-finite step would raise here
    assert all(math.isfinite(value) for value in metrics.values())
    assert metrics["actor/skipped_updates"] == 0.0 and metrics["actor/grad_norm"] == 0.0
    assert all(torch.isfinite(p).all() for p in policy.model.parameters())
