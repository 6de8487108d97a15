"""Multi-node on one machine: ``ray.cluster_utils.Cluster`` starts a head and a second Ray node (two raylets), the
FSDP2 actor gets one rank on each (trainer.nnodes=2, trainer.n_gpus_per_node=1), and a GRPO step runs through the
ordinary trainer: rollout, rewards, the sharded update over gloo across the nodes, weight sync, checkpoint, final
model."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rexthinker_rl.config import load_config
from tests.conftest import TINY_OVERRIDES

pytestmark = pytest.mark.slow


@pytest.fixture
def two_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "object_store_memory": 150 * 2**20, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=2, object_store_memory=150 * 2**20)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_fsdp2_ranks_on_two_nodes_complete_a_grpo_step(two_node_cluster, tiny_model_dir, synthetic_data_dir, tmp_path):
    import ray

    from rexthinker_rl.train.trainer import GRPOTrainer

    run_dir = tmp_path / "run"
    config = load_config(
        None,
        TINY_OVERRIDES
        + [
            f"model.path={tiny_model_dir}",
            f"data.train_files={synthetic_data_dir / 'train.parquet'}",
            "data.format_prompt=''",
            "data.max_response_length=16",
            "data.rollout_batch_size=2",
            "actor.global_batch_size=2",
            "actor.strategy=fsdp2",
            "rollout.placement=separate",  # ranks across nodes, weights over Ray to the rollout worker
            "actor.lr=1e-3",
            "rollout.engine=hf",  # transformers generate: no vLLM start-up in this test
            "rollout.n=4",
            "algorithm.kl_mode=none",
            "trainer.nnodes=2",
            "trainer.n_gpus_per_node=1",
            "trainer.total_steps=1",
            "trainer.val_before_train=false",
            f"trainer.output_dir={run_dir}",
            "logging.sinks=[jsonl]",
            "reward.components=[]",
            f"reward.function={Path(__file__).parents[1] / 'e2e' / 'length_reward.py'}:shorter_is_better",
        ],
    )
    trainer = GRPOTrainer(config)
    try:
        trainer.fit()
        nodes = trainer.runtime.actor.node_ids()
    finally:
        trainer.shutdown()  # the workers; the fixture shuts Ray and both nodes down
    assert len(nodes) == 2 and len(set(nodes)) == 2, nodes  # one rank on each node
    assert set(nodes) == {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 1
    for key in ("actor/pg_loss", "actor/grad_norm", "reward/overall"):
        assert math.isfinite(record[key]), key
    assert (run_dir / "checkpoints" / "global_step_1" / "manifest.json").is_file()
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(run_dir / "final" / "model.safetensors")
    assert any("layers" in name and not torch.equal(before[name], after[name]) for name in before)
    assert all(torch.equal(before[name], after[name]) for name in before if "visual" in name)  # frozen tower
