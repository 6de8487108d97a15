"""Ray actors with explicit, verb-named methods: actor (train + log-probs), reference (log-probs), rollout (generate).

Each class is plain Python (usable and testable without Ray); ``spawn_workers`` wraps them with ``ray.remote`` and the
resources that place them. ``actor.strategy=torch``: one actor process. fsdp2 | deepspeed: one :class:`ShardWorker` per
rank (placed by ``rexthinker_rl.placement``) behind an :class:`ActorGroup` with the actor's verbs, so the controller
calls one handle either way; on GPU with ``rollout.placement=colocate`` the ranks also host the reference and vLLM
(``rexthinker_rl.colocate``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from rexthinker_rl.batch import SequenceBatch
from rexthinker_rl.config import Config
from rexthinker_rl.rollout.base import RolloutPrompt, RolloutResult, SamplingSpec
from rexthinker_rl.utils import release_free_heap


def _set_threads(config: Config) -> None:
    # Phases run one after another, so each worker may use every core while it works.
    if config.trainer.device == "cpu" or not torch.cuda.is_available():
        torch.set_num_threads(max(1, os.cpu_count() or 1))


class _PolicyVerbs:
    """The verbs every actor process answers the same way, whatever holds the policy (one process or one rank)."""

    policy: Any

    def compute_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        return self.policy.compute_logprobs(batch)

    def compute_ref_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        """Reference log-probs under LoRA (adapters disabled), so no reference worker holds a second copy."""
        return self.policy.compute_ref_logprobs(batch)

    def get_weights(self) -> dict[str, torch.Tensor]:
        """Merged, Hugging Face-named weights: what the rollout engine loads (a sharded rank 0 only; {} elsewhere).
        Under LoRA only the adapted weights: nothing else changes."""
        return self.policy.sync_state_dict()

    def get_checkpoint_weights(self) -> dict[str, torch.Tensor]:
        return self.policy.checkpoint_state()

    def get_train_state(self) -> dict[str, Any]:
        return self.policy.train_state()

    def load_train_state(self, weights: dict[str, torch.Tensor], train_state: dict[str, Any] | None) -> None:
        self.policy.load(weights, train_state)

    def save_pretrained(self, folder: str, processor) -> None:
        from rexthinker_rl.modeling import save_hf_folder

        model = self.policy.hf_model()  # collective when sharded: a model on rank 0 only
        if model is not None:  # the run's own final/ (checked before Ray started to be a model folder, if present)
            save_hf_folder(model, processor, folder, overwrite=True, key="final/")


class ActorWorker(_PolicyVerbs):
    """The policy being trained."""

    def __init__(self, config: Config, model_path: str, total_updates: int) -> None:
        from rexthinker_rl.policy import Policy

        _set_threads(config)
        self.policy = Policy(config, model_path, trainable=True, total_updates=total_updates)

    def update(self, batch: SequenceBatch) -> dict[str, float]:
        return self.policy.update(batch)


class ShardWorker(_PolicyVerbs):
    """One data-parallel rank of a sharded actor (FSDP2 or DeepSpeed): its own process, its shard of the model.
    Every verb is collective: the :class:`ActorGroup` calls it on all ranks at once."""

    def __init__(self, config: Config, model_path: str, total_updates: int, rank: int, world_size: int) -> None:
        if config.trainer.device == "cpu" or not torch.cuda.is_available():
            # The ranks of a node compute at the same time: they split its cores.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.trainer.n_gpus_per_node))
        self.config, self.model_path, self.total_updates = config, model_path, total_updates
        self.rank, self.world_size = rank, world_size
        self.policy = None

    def address(self) -> tuple[str, int]:
        """Where rank 0 hosts the process-group rendezvous: this node's address and a free port."""
        from rexthinker_rl.distributed import free_port, node_ip

        return node_ip(), free_port()

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def setup(self, master_addr: str, master_port: int) -> None:
        from rexthinker_rl.distributed import init_process_group
        from rexthinker_rl.sharded import make_policy

        device = "cuda" if self.config.trainer.device != "cpu" and torch.cuda.is_available() else "cpu"
        init_process_group(self.rank, self.world_size, master_addr, master_port, device)
        self.policy = make_policy(
            self.config, self.model_path, True, self.total_updates, rank=self.rank, world_size=self.world_size
        )

    def update(self, mini_batches: list[SequenceBatch]) -> dict[str, float]:
        return self.policy.update_mini_batches(mini_batches)


class ActorGroup:
    """The controller's handle on a sharded actor: the verbs of :class:`ActorWorker`, fanned out to every rank.

    Batches are split by rows, balanced by length (``distributed.split_rows``), and each mini-batch is split on its
    own so every rank steps on the same mini-batches as one process would. Results come back in row order; weights
    and metrics from rank 0 (the ranks have summed their metrics already)."""

    def __init__(self, config: Config, ranks: list) -> None:
        self.config, self.ranks = config, ranks

    def _all(self, verb: str, *args) -> list:
        import ray

        return ray.get([getattr(rank, verb).remote(*args) for rank in self.ranks])

    def _split_logprobs(self, verb: str, batch: SequenceBatch) -> torch.Tensor:
        import ray

        from rexthinker_rl.distributed import gather_logprobs, split_rows

        groups, parts = split_rows(batch, len(self.ranks))
        futures = [getattr(rank, verb).remote(part) for rank, part in zip(self.ranks, parts, strict=True)]
        return gather_logprobs(batch, groups, ray.get(futures))

    def compute_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        return self._split_logprobs("compute_logprobs", batch)

    def compute_ref_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        return self._split_logprobs("compute_ref_logprobs", batch)

    def update(self, batch: SequenceBatch) -> dict[str, float]:
        import ray

        from rexthinker_rl.distributed import split_mini_batches

        per_update = self.config.actor.global_batch_size * self.config.rollout.n
        shares = split_mini_batches(batch, per_update, len(self.ranks))
        return ray.get([rank.update.remote(share) for rank, share in zip(self.ranks, shares, strict=True)])[0]

    def get_weights(self) -> dict[str, torch.Tensor]:
        return self._all("get_weights")[0]

    def get_checkpoint_weights(self) -> dict[str, torch.Tensor]:
        return self._all("get_checkpoint_weights")[0]

    def get_train_state(self) -> dict[str, Any]:
        from rexthinker_rl.sharded import combine_train_states

        return combine_train_states(self._all("get_train_state"), self.config.actor.strategy)

    def load_train_state(self, weights: dict[str, torch.Tensor], train_state: dict[str, Any] | None) -> None:
        self._all("load_train_state", weights, train_state)

    def save_pretrained(self, folder: str, processor) -> None:
        self._all("save_pretrained", folder, processor)

    def node_ids(self) -> list[str]:
        """Ray node of each rank, in rank order."""
        return self._all("node_id")


class ReferenceWorker:
    """A frozen copy of the initial policy, for the KL term."""

    def __init__(self, config: Config, model_path: str) -> None:
        from rexthinker_rl.policy import Policy

        _set_threads(config)
        self.policy = Policy(config, model_path, trainable=False)

    def compute_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        return self.policy.compute_logprobs(batch)


class RolloutWorker:
    """The generation engine (vLLM or transformers)."""

    def __init__(self, config: Config, model_path: str) -> None:
        from rexthinker_rl.rollout.base import make_engine

        _set_threads(config)
        self.engine = make_engine(config, model_path)

    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        results = self.engine.generate(prompts, sampling)
        release_free_heap()  # else the worker's memory creeps up with every batch (docs/performance.md, 200 steps)
        return results

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.engine.load_weights(weights.items())

    def sleep(self) -> None:
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()


def uses_reference(config: Config) -> bool:
    return config.algorithm.kl_mode != "none" and config.algorithm.kl_coef > 0


@dataclass
class Workers:
    actor: Any
    reference: Any | None
    rollout: Any
    actor_ranks: list = field(default_factory=list)
    """The ShardWorker handles behind a sharded actor (empty for actor.strategy=torch)."""


def worker_env(run_dir: str) -> dict[str, str]:
    """Environment for worker processes: caches inside the run folder, in-process vLLM on CPU, quiet tokenizers."""
    cache = os.path.join(os.path.abspath(run_dir), ".cache")
    env = {
        "VLLM_CACHE_ROOT": os.environ.get("VLLM_CACHE_ROOT", os.path.join(cache, "vllm")),
        "TORCHINDUCTOR_CACHE_DIR": os.environ.get("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache, "inductor")),
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
        "VLLM_CONFIGURE_LOGGING": os.environ.get("VLLM_CONFIGURE_LOGGING", "0"),
    }
    return env


def spawn_workers(config: Config, model_path: str, total_updates: int, run_dir: str) -> Workers:
    """Start the Ray actors: on CPU each takes a share of the cores; on GPU see ``rollout.placement``."""
    import ray

    on_gpu = config.trainer.device != "cpu" and torch.cuda.is_available()
    env = {"runtime_env": {"env_vars": worker_env(run_dir)}}
    if config.actor.strategy != "torch" and on_gpu and config.rollout.placement == "colocate":
        from rexthinker_rl.colocate import spawn_colocated

        return spawn_colocated(config, model_path, total_updates, env)
    share = {"num_gpus": 1 / 3, "num_cpus": 1} if on_gpu else {"num_cpus": 0.5}
    options = {**share, **env}
    ranks: list = []
    if config.actor.strategy == "torch":
        actor = ray.remote(ActorWorker).options(name="actor", **options).remote(config, model_path, total_updates)
    else:
        ranks = spawn_actor_ranks(config, model_path, total_updates, on_gpu, env)
        actor = ray.remote(ActorGroup).options(name="actor", num_cpus=0, **env).remote(config, ranks)
    # Under LoRA the actor computes reference log-probs itself (adapters disabled): no second copy of the weights.
    needs_reference = uses_reference(config) and config.model.lora.rank == 0
    reference = (
        ray.remote(ReferenceWorker).options(name="reference", **options).remote(config, model_path)
        if needs_reference
        else None
    )
    if on_gpu and config.actor.strategy != "torch":  # rollout.placement=separate: the engines get their own GPUs
        from rexthinker_rl.colocate import spawn_rollout_group

        rollout = spawn_rollout_group(config, model_path, env)
    else:
        rollout = ray.remote(RolloutWorker).options(name="rollout", **options).remote(config, model_path)
    return Workers(actor=actor, reference=reference, rollout=rollout, actor_ranks=ranks)


def spawn_actor_ranks(config: Config, model_path: str, total_updates: int, on_gpu: bool, env: dict) -> list:
    """One ShardWorker per rank in its placement slot, joined into one process group (rank 0 hosts the rendezvous)."""
    import ray

    from rexthinker_rl.placement import actor_slots, rank_bundle

    slots = actor_slots(config, on_gpu)
    world_size = len(slots)
    bundle = rank_bundle(on_gpu)
    ranks = [
        ray.remote(ShardWorker)
        .options(
            name=f"actor-rank{rank}",
            num_cpus=bundle["CPU"],
            num_gpus=bundle.get("GPU", 0),
            scheduling_strategy=slot.scheduling(),
            **env,
        )
        .remote(config, model_path, total_updates, rank, world_size)
        for rank, slot in enumerate(slots)
    ]
    master_addr, master_port = ray.get(ranks[0].address.remote())
    ray.get([rank.setup.remote(master_addr, master_port) for rank in ranks])
    return ranks
