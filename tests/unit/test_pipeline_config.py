"""trainer.pipeline and the core pinning: the config rules, each rank's cores, the idle-time accounting and the in-flight
batch a checkpoint keeps."""

from __future__ import annotations

import json

import pytest

from rexthinker_rl.config import ConfigError, load_config
from rexthinker_rl.rollout.base import RolloutResult
from rexthinker_rl.runtime.base import Generated, Pending
from rexthinker_rl.runtime.workers import rank_cores
from rexthinker_rl.train.pipeline import Pipeline, Rollout, idle_times

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


def _fake_launch(log: list[int]):
    """A launch that records the steps it was asked for and "generates" one result per step at once."""

    def launch(step: int):
        log.append(step)
        result = RolloutResult(0, [step], [-1.0], str(step), "stop")
        return [step], Pending([], lambda _: Generated([result]))

    return launch


@pytest.mark.parametrize("pipelined", [False, True])
def test_the_pipeline_launches_in_step_order_and_tracks_the_versions(pipelined, monkeypatch):
    monkeypatch.setattr("rexthinker_rl.runtime.base.ray.get", lambda refs: refs)
    launched: list[int] = []
    pipeline = Pipeline(_fake_launch(launched), pipelined, total_steps=3)
    synced, stale = [], []
    for step in (1, 2, 3):
        rollout, staleness = pipeline.next(step)
        assert rollout.step == step and rollout.generated.results[0].text == str(step)
        stale.append(staleness)
        pipeline.prefetch(step)
        pipeline.updated(True)
        pipeline.wait_upcoming()
        pipeline.sync(lambda: synced.append(pipeline.updates))
    assert launched == [1, 2, 3] and synced == [1, 2, 3] and pipeline.synced == pipeline.updates == 3
    # one step off: batch t is sampled before update t - 1 is synced, so it is one update stale (the first is fresh)
    assert stale == ([0, 1, 1] if pipelined else [0, 0, 0])
    assert pipeline.upcoming is None  # nothing launched past the last step


def test_the_pipeline_keeps_its_batch_in_flight_through_a_checkpoint(monkeypatch):
    monkeypatch.setattr("rexthinker_rl.runtime.base.ray.get", lambda refs: refs)
    launched: list[int] = []
    pipeline = Pipeline(_fake_launch(launched), True, total_steps=3)
    pipeline.next(1)
    pipeline.prefetch(1)
    pipeline.updated(True)
    state = json.loads(json.dumps(pipeline.state_dict()))
    resumed = Pipeline(_fake_launch(launched), True, total_steps=3)
    resumed.load(state, step=1)
    rollout, staleness = resumed.next(2)
    assert (rollout.step, rollout.version, staleness, resumed.synced) == (2, 0, 1, 1)
    assert launched == [1, 2]  # the resumed pipeline trains on the batch in flight; it launches nothing new
    assert Pipeline(_fake_launch([]), False, 3).state_dict() == {"updates": 0, "upcoming": None}
