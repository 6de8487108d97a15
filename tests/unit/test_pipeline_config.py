"""trainer.pipeline and the core pinning: the config rules, each rank's cores, the idle-time accounting and the in-flight
batch a checkpoint keeps."""

from __future__ import annotations

import json

import pytest

from rexthinker_rl.config import ConfigError, load_config
from rexthinker_rl.pipeline import Rollout, idle_times
from rexthinker_rl.rollout.base import RolloutResult
from rexthinker_rl.runtime import Generated
from rexthinker_rl.runtime.workers import rank_cores

CPU = ["trainer.device=cpu", "actor.strategy=torch", "rollout.placement=separate"]


def test_rollout_correction_follows_the_pipeline_unless_set():
    assert load_config(None, CPU).derived.rollout_is == "none"
    piped = load_config(None, [*CPU, "trainer.pipeline=one_step_off"]).derived
    assert piped.pipelined and piped.rollout_is == "token"
    chosen = load_config(None, [*CPU, "trainer.pipeline=one_step_off", "algorithm.rollout_is=sequence"]).derived
    assert chosen.rollout_is == "sequence"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.pipeline=two_steps_off"], r"trainer\.pipeline"),
        (
            ["actor.strategy=fsdp2", "rollout.placement=colocate", "trainer.pipeline=one_step_off"],
            r"one_step_off needs rollout engines of their own: rollout\.placement=separate",
        ),
        (["trainer.pipeline=one_step_off", "rollout.temperature=0.8"], r"algorithm\.rollout_is=none to pipeline"),
        (["rollout.cpus=[0,0]"], r"rollout\.cpus=\[0, 0\] must list distinct core ids"),
        (["actor.cpus=[-1]"], r"actor\.cpus=\[-1\] must list distinct core ids"),
        (
            ["actor.strategy=fsdp2", "rollout.placement=separate", "trainer.n_gpus_per_node=2", "actor.cpus=[0,1,2]"],
            r"actor\.cpus lists 3 cores for 2 ranks a node",
        ),
    ],
)
def test_bad_pipelines_and_pinnings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["trainer.device=cpu", *overrides])


def test_the_pipeline_without_correction_is_allowed_by_name():
    config = load_config(None, [*CPU, "trainer.pipeline=one_step_off", "algorithm.rollout_is=none"])
    assert config.derived.rollout_is == "none"


def test_each_rank_gets_its_share_of_the_nodes_cores():
    assert rank_cores([], 0, 2) == []
    assert [rank_cores([4, 5, 6, 7], rank, 2) for rank in range(4)] == [[4, 5], [6, 7], [4, 5], [6, 7]]
    assert rank_cores([1], 0, 1) == [1]


def test_idle_times():
    timed = Generated([], started=100.0, finished=100.75)
    assert idle_times(2.0, 0.25, timed) == {"timing/actor_idle": 0.25, "timing/rollout_idle": 1.25}
    assert idle_times(2.0, 0.0, None) == {"timing/actor_idle": 0.0, "timing/rollout_idle": 2.0}  # nothing generated
    assert idle_times(2.0, 0.0, Generated([]))["timing/rollout_idle"] == 2.0  # untimed (colocated, or resumed)


def test_the_batch_in_flight_survives_a_checkpoint_as_json():
    results = [RolloutResult(1, [5, 6], [-0.5, -1.25], "ab", "stop"), RolloutResult(0, [7], [-2.0], "c", "length")]
    rollout = Rollout(4, [12, 3], version=2, generated=Generated(results, 1.0, 2.0))
    back = Rollout.from_state(json.loads(json.dumps(rollout.state_dict())))
    assert (back.step, back.indices, back.version) == (4, [12, 3], 2)
    assert back.generated.results == results and back.pending is None
    assert back.wait() is back.generated


def test_the_kl_curve_alone_keeps_a_reference_but_no_kl_term():
    plain = load_config(None, [*CPU, "algorithm.kl_mode=none"]).derived
    assert not plain.uses_reference and not plain.needs_reference_policy
    curve = load_config(None, [*CPU, "algorithm.kl_mode=none", "logging.kl_to_ref_freq=5"]).derived
    assert curve.uses_reference and curve.needs_reference_policy and not curve.kl_term
    assert curve.on_policy  # the reference pass changes nothing in the update
    lora = load_config(None, [*CPU, "algorithm.kl_mode=none", "logging.kl_to_ref_freq=5", "model.lora.rank=4"])
    assert lora.derived.uses_reference and not lora.derived.needs_reference_policy  # the actor, adapters off
    with pytest.raises(ConfigError, match=r"logging\.kl_to_ref_freq"):
        load_config(None, [*CPU, "logging.kl_to_ref_freq=-1"])
