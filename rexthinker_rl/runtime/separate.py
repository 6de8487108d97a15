"""The separate placement: the actor's ranks, the reference and the rollout engines each in processes of their own.

Covers ``actor.strategy=torch`` (one actor process) and the sharded actor with ``rollout.placement=separate``: they
differ only in the ranks :class:`~rexthinker_rl.runtime.ranks.ActorRanks` spawns. On CPU (and for the torch strategy)
there is one rollout worker; on GPU a sharded run gets ``rollout.num_gpus / tensor_parallel_size`` engines on GPUs of
their own, each generating for a slice of the prompts. Weights travel over Ray after each update: rank 0's merged
weights go into the object store piece by piece, and every engine reads each piece. Engines on their own GPUs never
sleep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ray
from ray.util.placement_group import remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rexthinker_rl.runtime.base import (
    Generated,
    Pending,
    identify,
    merge_results,
    prompt_slices,
    wait_started,
)
from rexthinker_rl.runtime.placement import resources, rollout_engine_resources, rollout_slots
from rexthinker_rl.runtime.ranks import ActorRanks, ActorVerbs
from rexthinker_rl.runtime.workers import ReferenceWorker, RolloutWorker

if TYPE_CHECKING:
    from rexthinker_rl.algo.batch import SequenceBatch
    from rexthinker_rl.config import Config
    from rexthinker_rl.rollout import RolloutPrompt, RolloutResult, SamplingSpec


def spawn_engines(config: Config, model_path: str, env: dict) -> tuple[list, list]:
    """One rollout worker (and no placement group); or, for a sharded run on GPU, ``rollout.num_gpus / tensor_parallel_size`` engines, each in a
    placement group of its own (a tensor-parallel engine lets vLLM's Ray executor use the bundles' GPUs, a one-GPU
    engine takes its bundle's GPU itself)."""
    worker = ray.remote(RolloutWorker)
    if not (config.derived.on_gpu and config.derived.sharded):
        seat = resources("rollout", config.derived.on_gpu)
        return [worker.options(name="rollout", **seat, **env).remote(config, model_path)], []
    seat = rollout_engine_resources(config.rollout.tensor_parallel_size)
    engines = []
    slots = rollout_slots(config)
    for index, slot in enumerate(slots):
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=slot.placement_group,
            placement_group_bundle_index=0,
            placement_group_capture_child_tasks=True,
        )
        options = {**seat, "scheduling_strategy": strategy}
        engines.append(worker.options(name=f"rollout-{index}", **options, **env).remote(config, model_path))
    return engines, [slot.placement_group for slot in slots]


class SeparateRuntime(ActorVerbs):
    def __init__(self, config: Config, model_path: str, total_updates: int, env: dict) -> None:
        self.config = config
        self.actor = ActorRanks.spawn(config, model_path, total_updates, env)
        self.reference = None
        if config.derived.needs_reference_policy:
            options = {"name": "reference", **resources("reference", config.derived.on_gpu), **env}
            self.reference = ray.remote(ReferenceWorker).options(**options).remote(config, model_path)
        self.engines, self.engine_groups = spawn_engines(config, model_path, env)
        engine_roles = {"rollout": self.engines[0]} if len(self.engines) == 1 else {}
        engine_roles = engine_roles or {f"rollout engine {i}": engine for i, engine in enumerate(self.engines)}
        reference = {"reference": self.reference} if self.reference is not None else {}
        self.roles = identify(self.actor.roles_by_handle)  # the actor's processes start empty: at once
        setup = self.actor.start_setup()  # builds the policies while the reference and the engines start
        self.roles |= identify({**reference, **engine_roles})
        wait_started(setup, self.roles)

    def generate_async(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> Pending[Generated]:
        slices = prompt_slices(len(prompts), len(self.engines))
        refs = [
            engine.generate_timed.remote([prompts[i] for i in part], sampling)
            for engine, part in zip(self.engines, slices, strict=True)
        ]

        def combine(outputs: list[tuple[list[RolloutResult], float, float]]) -> Generated:
            results = merge_results(slices, [output[0] for output in outputs])
            return Generated(results, min(output[1] for output in outputs), max(output[2] for output in outputs))

        return Pending(refs, combine)

    def ref_logprobs(self, batch: SequenceBatch) -> Pending:
        """The reference worker's log-probs, or under LoRA the actor's with its adapters off."""
        if self.reference is None:
            return self.actor.ref_logprobs(batch)
        return Pending([self.reference.compute_logprobs.remote(batch)], lambda results: results[0])

    def sync_weights(self) -> None:
        """Rank 0's weights to every engine in pieces (rollout.weight_bucket_mb): each piece is in the object store
        (shared memory) once, read by every engine, and let go when they have loaded it."""
        for piece in self.actor.weight_pieces():
            ray.get([engine.load_weights.remote(piece) for engine in self.engines])

    def shutdown(self) -> None:
        self.actor.shutdown()
        for handle in [self.reference, *self.engines]:
            if handle is not None:
                ray.kill(handle)
        for group in self.engine_groups:
            remove_placement_group(group)
