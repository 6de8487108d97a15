"""GPU placement of the rollout: colocated with the actor (one process per GPU) or on GPUs of its own.

``rollout.placement=colocate`` (verl's hybrid engine): one :class:`HybridWorker` per GPU holds its actor shard, its
reference shard and a vLLM engine. The engines of ``rollout.tensor_parallel_size`` neighbouring ranks form one
tensor-parallel engine (vLLM's ``external_launcher`` backend, which reuses the ranks' own process group); the
``world / tp`` engines each generate for a slice of the prompts. vLLM sleeps while the actor trains (level 1: weights
to host memory, KV cache freed) and wakes in two steps, weights then KV cache, so the actor's memory is released
before the cache is rebuilt. Weights move inside each process: every rank streams the full tensors, one at a time,
into its engine, which keeps its tensor-parallel slice; nothing crosses Ray.

``rollout.placement=separate``: ``rollout.num_gpus / tensor_parallel_size`` engines, each in a placement group of its
own, behind a :class:`RolloutGroup`; the actor's weights are sent over Ray after each update.

Everything here needs CUDA and GPU vLLM; it is imported only on GPU (tests marked ``gpu``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from rexthinker_rl.config import Config
from rexthinker_rl.rollout.base import RolloutPrompt, RolloutResult, SamplingSpec
from rexthinker_rl.rollout.vllm_engine import VLLMEngine, _quiet_known_warnings
from rexthinker_rl.workers import ActorGroup, RolloutWorker, ShardWorker, Workers, uses_reference


@dataclass(frozen=True)
class InProcessWeights:
    """What a colocated group's ``get_weights`` returns: the weights stay in the ranks, ``load_weights`` pulls them."""

    version: int


def prompt_slices(count: int, parts: int) -> list[range]:
    """``count`` prompts in ``parts`` contiguous slices of near-equal size."""
    bounds = [count * part // parts for part in range(parts + 1)]
    return [range(bounds[part], bounds[part + 1]) for part in range(parts)]


def merge_results(slices: list[range], results: list[list[RolloutResult]]) -> list[RolloutResult]:
    """Results of each engine's slice, with prompt indices back in the whole batch's numbering."""
    merged = []
    for prompts, part in zip(slices, results, strict=True):
        for result in part:
            result.prompt_index += prompts.start
            merged.append(result)
    return merged


class ColocatedVLLMEngine(VLLMEngine):
    """The vLLM engine of one rank, part of a tensor-parallel engine built over the ranks' process group."""

    def __init__(self, config: Config, model_path: str) -> None:  # not super().__init__: that builds another engine
        from vllm import LLM

        rollout, data = config.rollout, config.data
        self.on_cpu = False
        self.llm = LLM(
            model=model_path,
            dtype=rollout.dtype,
            seed=rollout.seed,  # the same on every rank of a tensor-parallel engine, as external_launcher requires
            max_model_len=data.max_prompt_length + data.max_response_length,
            max_num_seqs=rollout.max_num_seqs,
            max_num_batched_tokens=max(
                rollout.max_num_batched_tokens, data.max_prompt_length + data.max_response_length
            ),
            enable_prefix_caching=rollout.enable_prefix_caching,
            enforce_eager=rollout.enforce_eager,
            trust_remote_code=config.model.trust_remote_code,
            limit_mm_per_prompt={"image": 1, "video": 0},
            mm_processor_kwargs={"size": {"shortest_edge": data.min_pixels, "longest_edge": data.max_pixels}},
            tensor_parallel_size=rollout.tensor_parallel_size,
            distributed_executor_backend="external_launcher",
            gpu_memory_utilization=rollout.gpu_memory_utilization,
            enable_sleep_mode=True,
        )
        _quiet_known_warnings()
        self.sleep_enabled, self.asleep = True, False
        self._suppressed = {}
        if rollout.suppress_vision_tokens:
            from rexthinker_rl.modeling import vision_token_ids

            self._suppressed = {token: -100.0 for token in vision_token_ids(self.llm.get_tokenizer())}
        self.weights_awake = self.cache_awake = True

    def sleep(self) -> None:
        self.llm.sleep(level=1)
        self.weights_awake = self.cache_awake = False

    def wake_weights(self) -> None:
        if not self.weights_awake:
            self.llm.wake_up(tags=["weights"])
            self.weights_awake = True

    def wake(self) -> None:
        self.wake_weights()  # weights first, then the KV cache
        if not self.cache_awake:
            self.llm.wake_up(tags=["kv_cache"])
            self.cache_awake = True

    def stream_weights(self, named_tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
        """Load weights from an iterator in place (the engine is in this process: nothing is copied to a list)."""
        self.wake_weights()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": named_tensors})
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()


class HybridWorker(ShardWorker):
    """One GPU: the actor's shard, the reference's shard (unless LoRA or no KL) and a slice of a vLLM engine."""

    def setup(self, master_addr: str, master_port: int) -> None:
        from rexthinker_rl.sharded import make_policy

        super().setup(master_addr, master_port)
        needs_reference = uses_reference(self.config) and self.config.model.lora.rank == 0
        self.reference = (
            make_policy(self.config, self.model_path, False, rank=self.rank, world_size=self.world_size)
            if needs_reference
            else None
        )
        self.engine = ColocatedVLLMEngine(self.config, self.model_path)
        self.engine.sleep()  # the actor trains first

    def compute_ref_logprobs(self, batch):
        if self.reference is None:
            return self.policy.compute_ref_logprobs(batch)  # LoRA: adapters off
        return self.reference.compute_logprobs(batch)

    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        self.engine.wake()
        try:
            return self.engine.generate(prompts, sampling) if prompts else []
        finally:
            self.engine.sleep()
            torch.cuda.empty_cache()

    def sync_weights(self) -> None:
        """Every rank gathers each full tensor in turn (a collective) and its engine keeps its slice."""
        self.engine.stream_weights(self._full_tensors())
        self.engine.sleep()

    def _full_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        from torch.distributed.tensor import DTensor

        dtype = getattr(torch, self.config.rollout.dtype)
        if self.policy.lora:  # merged weights need the adapters beside their base: gather the whole dict once
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            from rexthinker_rl.sharded import merge_lora_weights

            full = get_model_state_dict(self.policy.model, options=StateDictOptions(full_state_dict=True))
            yield from ((n, t.to(dtype)) for n, t in merge_lora_weights(full, self.config.model.lora).items())
            return
        if self.config.actor.strategy == "deepspeed":
            from deepspeed import zero

            module, params, buffers = self.policy._named_full_parameters()
            for name in module.state_dict():
                if name in params:
                    with zero.GatheredParameters([params[name]], modifier_rank=None):
                        yield name, params[name].detach().to(dtype, copy=True)  # the gathered storage is freed
                else:
                    yield name, buffers[name].to(dtype)
            return
        for name, tensor in self.policy.model.state_dict().items():
            full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
            yield name, full.to(dtype)


class HybridGroup(ActorGroup):
    """The controller's handle when rollout is colocated: the actor's verbs and the rollout's, on the same ranks."""

    def __init__(self, config: Config, ranks: list) -> None:
        super().__init__(config, ranks)
        self.version = 0

    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        import ray

        tp = self.config.rollout.tensor_parallel_size
        slices = prompt_slices(len(prompts), len(self.ranks) // tp)
        futures = [
            rank.generate.remote([prompts[i] for i in slices[index // tp]], sampling)
            for index, rank in enumerate(self.ranks)
        ]
        outputs = ray.get(futures)
        return merge_results(slices, outputs[::tp])  # every rank of an engine returns the same results

    def get_weights(self) -> InProcessWeights:
        self.version += 1
        return InProcessWeights(self.version)

    def load_weights(self, weights: Any) -> None:
        if not isinstance(weights, InProcessWeights):
            raise TypeError("a colocated rollout loads its weights from its own actor ranks (pass get_weights())")
        self._all("sync_weights")

    def sleep(self) -> None:
        """The ranks sleep their engines themselves after every generate and sync."""

    def wake(self) -> None:
        """The ranks wake their engines themselves before every generate."""


def spawn_colocated(config: Config, model_path: str, total_updates: int, env: dict) -> Workers:
    """One HybridWorker per GPU across trainer.nnodes x n_gpus_per_node; the group is actor and rollout at once."""
    import ray

    from rexthinker_rl.placement import actor_slots, rank_bundle

    tp, per_node = config.rollout.tensor_parallel_size, config.trainer.n_gpus_per_node
    if per_node % tp:
        raise ValueError(
            f"rollout.tensor_parallel_size={tp} must divide trainer.n_gpus_per_node={per_node} with "
            "rollout.placement=colocate (a tensor-parallel engine stays within a node)"
        )
    slots = actor_slots(config, on_gpu=True)
    bundle = rank_bundle(on_gpu=True)
    ranks = [
        ray.remote(HybridWorker)
        .options(
            name=f"hybrid-rank{rank}",
            num_cpus=bundle["CPU"],
            num_gpus=bundle["GPU"],
            scheduling_strategy=slot.scheduling(),
            **env,
        )
        .remote(config, model_path, total_updates, rank, len(slots))
        for rank, slot in enumerate(slots)
    ]
    master_addr, master_port = ray.get(ranks[0].address.remote())
    ray.get([rank.setup.remote(master_addr, master_port) for rank in ranks])
    group = ray.remote(HybridGroup).options(name="actor", num_cpus=0, **env).remote(config, ranks)
    return Workers(actor=group, reference=None, rollout=group, actor_ranks=ranks)


class RolloutGroup:
    """Several rollout engines on GPUs of their own (``rollout.placement=separate``), behind the rollout's verbs."""

    def __init__(self, engines: list) -> None:
        self.engines = engines

    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        import ray

        slices = prompt_slices(len(prompts), len(self.engines))
        futures = [
            engine.generate.remote([prompts[i] for i in part], sampling)
            for engine, part in zip(self.engines, slices, strict=True)
        ]
        return merge_results(slices, ray.get(futures))

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        import ray

        shared = ray.put(weights)  # one copy in the object store, read by every engine
        ray.get([engine.load_weights.remote(shared) for engine in self.engines])

    def sleep(self) -> None:
        """Engines on their own GPUs never sleep."""

    def wake(self) -> None:
        """Engines on their own GPUs never sleep."""


def spawn_rollout_group(config: Config, model_path: str, env: dict):
    """rollout.num_gpus / tensor_parallel_size engines; a tensor-parallel engine lets vLLM's Ray executor use the
    GPU bundles of its placement group, a single-GPU engine takes its bundle's GPU itself."""
    import ray

    from rexthinker_rl.placement import rollout_slots

    tp = config.rollout.tensor_parallel_size
    engines = []
    for index, slot in enumerate(rollout_slots(config)):
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        strategy = PlacementGroupSchedulingStrategy(
            placement_group=slot.placement_group,
            placement_group_bundle_index=0,
            placement_group_capture_child_tasks=True,
        )
        engines.append(
            ray.remote(RolloutWorker)
            .options(
                name=f"rollout-{index}", num_cpus=1, num_gpus=1 if tp == 1 else 0, scheduling_strategy=strategy, **env
            )
            .remote(config, model_path)
        )
    return ray.remote(RolloutGroup).options(name="rollout", num_cpus=0, **env).remote(engines)
