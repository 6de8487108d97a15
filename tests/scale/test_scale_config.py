"""Scale-out configuration and the CPU-checkable parts of GPU placement: config errors for unsupported combinations,
the derived world size, prompt slicing across engines, and train-state merging across ranks."""

import pytest
import torch

from rexthinker_rl.config import ConfigError, load_config
from rexthinker_rl.model.lora import merge_lora_weights
from rexthinker_rl.rollout.base import RolloutResult
from rexthinker_rl.runtime.base import merge_results, prompt_slices
from rexthinker_rl.train.backends import combine_train_states


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["actor.strategy=deepspeed", "model.lora.rank=8"], "model.lora.rank=8 with actor.strategy=deepspeed"),
        (["actor.zero_stage=1"], "actor.zero_stage=1 is invalid"),
        (["rollout.placement=separate"], "rollout.num_gpus=0 must be a positive multiple"),
        (["rollout.placement=separate", "rollout.num_gpus=3"], "rollout.tensor_parallel_size=2"),
        (["rollout.placement=spread"], "rollout.placement='spread' is invalid"),
        (["actor.max_tokens_per_micro_batch=-1"], "actor.max_tokens_per_micro_batch=-1"),
        (["trainer.nnodes=0"], "trainer.nnodes=0"),
    ],
)
def test_unsupported_combinations_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(None, overrides)


def test_actor_world_size():
    assert load_config(None, ["actor.strategy=torch"]).derived.actor_world_size == 1
    config = load_config(None, ["actor.strategy=fsdp2", "trainer.nnodes=2", "trainer.n_gpus_per_node=8"])
    assert config.derived.actor_world_size == 16
    load_config(None, ["actor.strategy=fsdp2", "model.lora.rank=8"])  # LoRA composes with FSDP2


def test_prompt_slices_and_merged_results_keep_batch_numbering():
    assert prompt_slices(5, 2) == [range(0, 2), range(2, 5)]
    assert prompt_slices(1, 4) == [range(0, 0), range(0, 0), range(0, 0), range(0, 1)]
    slices = prompt_slices(4, 2)
    parts = [[RolloutResult(i, [1], [0.0], "", "stop") for i in range(2) for _ in range(2)] for _ in slices]
    merged = merge_results(slices, parts)
    assert [r.prompt_index for r in merged] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_train_states_combine_rank_rng_and_deepspeed_partitions():
    states = [
        {"optimizer": {"part": rank}, "scheduler": {}, "rng": {"torch": torch.tensor([rank])}} for rank in (0, 1)
    ]
    fsdp = combine_train_states(states, "fsdp2")
    assert fsdp["optimizer"] == {"part": 0} and [r["torch"].item() for r in fsdp["rank_rng"]] == [0, 1]
    deepspeed = combine_train_states(states, "deepspeed")
    assert deepspeed["optimizer"] == {"rank_optimizer": [{"part": 0}, {"part": 1}]}


def test_lora_merge_from_a_full_state_dict():
    class Lora:
        rank, alpha = 2, 4

    base = torch.randn(3, 5)
    down, up = torch.randn(2, 5), torch.randn(3, 2)
    prefix = "base_model.model.model.language_model.layers.0.mlp.up_proj"
    merged = merge_lora_weights(
        {
            f"{prefix}.base_layer.weight": base,
            f"{prefix}.lora_A.default.weight": down,
            f"{prefix}.lora_B.default.weight": up,
            "base_model.model.lm_head.weight": torch.ones(2),
        },
        Lora,
    )
    assert set(merged) == {"model.language_model.layers.0.mlp.up_proj.weight", "lm_head.weight"}
    torch.testing.assert_close(merged["model.language_model.layers.0.mlp.up_proj.weight"], base + 2 * up @ down)
