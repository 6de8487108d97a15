"""The processes of a run: plain Python classes with verb-named methods, run as Ray actors by the runtimes.

- :class:`ActorWorker`: one actor rank, or the only actor process (``actor.strategy=torch``): its policy (a shard of
  it when sharded) and, colocated, also the reference's shard and a rollout engine that loads the actor's weights in
  this process.
- :class:`ReferenceWorker`: a frozen copy of the initial policy, for the KL term (separate placement).
- :class:`RolloutWorker`: a generation engine in a process of its own (separate placement).

Each reports its own Ray actor id (``actor_id``), so the runtime can name a worker that dies without reading Ray's
private handle fields. Usable without Ray (the methods are plain), as the GPU tests do.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import ray
import torch

from rexthinker_rl.config import compute_device
from rexthinker_rl.model.loading import DTYPES, save_hf_folder
from rexthinker_rl.rollout import RolloutPrompt, RolloutResult, SamplingSpec, make_engine
from rexthinker_rl.runtime.process_group import free_port, init_process_group, node_ip
from rexthinker_rl.runtime.weight_transfer import Assembler, SharedTree, SharedWeights, pieces, share, share_tree
from rexthinker_rl.train.policy import Policy, make_policy
from rexthinker_rl.utils import host_memory_gb, release_free_heap, reset_host_peak

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rexthinker_rl.algo.batch import MiniBatch, SequenceBatch
    from rexthinker_rl.config import Config


def _use_cores(config: Config, share: int = 1, cores: list[int] | None = None) -> None:
    """On CPU, torch threads for this process: every core (phases run one after another), or 1/share of them for
    processes that compute at the same time (the ranks of a node; with trainer.pipeline=one_step_off, generation beside
    training: two threads each on two shared cores stall on each other, one each do not); or, given ``cores``
    (actor.cpus, rollout.cpus, ref.cpus), this process pinned to those cores with one thread each. vLLM's in-process
    CPU engine computes with this process's torch threads (its own OpenMP binding is for multiprocess executors)."""
    if compute_device(config) != "cpu":
        return
    share *= 2 if config.derived.pipelined and not cores else 1
    if cores:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(len(cores))
        return
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // share))


def rank_cores(cores: list[int], rank: int, ranks_per_node: int) -> list[int]:
    """This rank's even share of its node's ``actor.cpus`` (ranks fill nodes in order)."""
    if not cores:
        return []
    per_rank = len(cores) // ranks_per_node
    local = rank % ranks_per_node
    return cores[local * per_rank : (local + 1) * per_rank]


class _Identified:
    def actor_id(self) -> str:
        """This process's Ray actor id (hex), as Ray's errors name it: how a runtime tells its workers apart."""
        return ray.get_runtime_context().get_actor_id()


class ActorWorker(_Identified):
    """One actor rank; every verb is collective across ranks (the runtime calls it on all of them at once)."""

    def __init__(
        self,
        config: Config,
        model_path: str,
        total_updates: int,
        rank: int = 0,
        world_size: int = 1,
        colocated: bool = False,
    ) -> None:
        ranks = config.derived.ranks_per_node
        _use_cores(config, ranks, rank_cores(config.actor.cpus, rank, ranks))
        self.config, self.model_path, self.total_updates = config, model_path, total_updates
        self.rank, self.world_size, self.colocated = rank, world_size, colocated
        self.policy: Policy | None = None
        self.reference: Policy | None = None
        self.engine = None

    def address(self) -> tuple[str, int]:
        """Where rank 0 hosts the process-group rendezvous: this node's address and a free port."""
        return node_ip(), free_port()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def setup(self, master_addr: str, master_port: int) -> None:
        """Join the process group (sharded), build the policy shard; colocated, also the reference shard and the
        engine, built after the group: vLLM's ``external_launcher`` reuses the ranks' group instead of making one."""
        config = self.config
        if config.derived.sharded:
            init_process_group(self.rank, self.world_size, master_addr, master_port, compute_device(config))
        self.policy = make_policy(config, self.model_path, True, self.total_updates, self.rank, self.world_size)
        if not self.colocated:
            return
        if config.derived.needs_reference_policy:
            self.reference = make_policy(config, self.model_path, False, 1, self.rank, self.world_size)
        self.engine = make_engine(config, self.model_path, colocated=True)
        self.engine.sleep()  # the actor trains first

    # ------------------------------------------------------------------ the policy's verbs
    def compute_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        return self.policy.compute_logprobs(batch)

    def compute_ref_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        """The reference shard's log-probs; under LoRA the policy's with adapters off (no second copy)."""
        if self.reference is not None:
            return self.reference.compute_logprobs(batch)
        return self.policy.compute_ref_logprobs(batch)

    def update(self, mini_batches: list[MiniBatch]) -> dict[str, float]:
        """The policy's update, and this process's host memory around it where the kernel says (Linux): its peak since
        the previous update ended (the weight sync to the engines, the log-prob passes, colocated also generation;
        before the first update, since the worker started), its peak during the update, and what it holds after it, of
        which shared memory (the pages of Ray's object store it has touched: the pieces of weights it hands the
        engines)."""
        between = host_memory_gb()
        resets = reset_host_peak()
        metrics = self.policy.update(mini_batches)
        after = host_memory_gb(("VmRSS", "VmHWM", "RssShmem"))
        if between is not None and after is not None:
            metrics["perf/host_resident_gb"], metrics["perf/host_shared_gb"] = after[0], after[2]
            if resets:  # otherwise each peak would be the process's since it started
                metrics["perf/host_peak_between_updates_gb"] = between[1]
                metrics["perf/host_peak_update_gb"] = after[1]
                reset_host_peak()
        return metrics

    def get_weight_pieces(self, piece_bytes: int) -> Iterator[SharedWeights]:
        """Merged, Hugging Face-named weights, what a rollout engine loads, in rollout.dtype and in pieces of about
        ``piece_bytes`` (``weight_transfer.pieces``). Under LoRA only the adapted weights: nothing else changes. As
        arrays, which Ray moves without a copy in either heap (``weight_transfer``). Called as a Ray streaming
        generator: each piece enters the object store only when the caller has taken the one before. Every rank
        gathers; rank 0 alone yields."""
        yield from pieces(self.policy.sync_state_dict(), piece_bytes, DTYPES[self.config.rollout.dtype])

    def get_checkpoint_weights(self) -> SharedWeights:
        """A checkpoint's weights, as arrays (no copy in this process's heap on the way out; ``weight_transfer``)."""
        return share(self.policy.checkpoint_state())

    def get_train_state(self) -> SharedTree:
        """The optimizer's state and the rest of an exact resume, its tensors as arrays (as the weights)."""
        return share_tree(self.policy.train_state())

    def load_train_state(self, weights: dict[str, torch.Tensor], train_state: dict[str, Any] | None) -> None:
        self.policy.load(weights, train_state)

    def save_pretrained(self, folder: str, processor) -> None:
        model = self.policy.hf_model()  # collective when sharded: a model on rank 0 only
        if model is not None:  # the run's own final/ (checked before Ray started to be a model folder, if present)
            save_hf_folder(model, processor, folder, overwrite=True, key="final/")

    # ------------------------------------------------------------------ the colocated engine's verbs
    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        self.engine.wake()
        try:
            return self.engine.generate(prompts, sampling) if prompts else []
        finally:
            self.engine.sleep()
            release_free_heap()

    def sync_weights(self) -> None:
        """Every rank gathers each full tensor in turn (a collective) and streams it into its own engine, which keeps
        its tensor-parallel slice: nothing crosses Ray."""
        self.engine.load_weights(self.policy.stream_weights(DTYPES[self.config.rollout.dtype]))
        self.engine.sleep()


class ReferenceWorker(_Identified):
    """A frozen copy of the initial policy, for the KL term."""

    def __init__(self, config: Config, model_path: str) -> None:
        _use_cores(config, cores=config.ref.cpus)
        self.policy = Policy(config, model_path, trainable=False)

    def compute_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        return self.policy.compute_logprobs(batch)


class RolloutWorker(_Identified):
    """The generation engine (vLLM or transformers) in a process of its own."""

    def __init__(self, config: Config, model_path: str) -> None:
        _use_cores(config, cores=config.rollout.cpus)
        self.engine = make_engine(config, model_path)
        self.assembler = Assembler()

    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        results = self.engine.generate(prompts, sampling)
        release_free_heap()  # else the worker's memory creeps up with every batch (docs/performance.md, 200 steps)
        return results

    def generate_timed(
        self, prompts: list[RolloutPrompt], sampling: SamplingSpec
    ) -> tuple[list[RolloutResult], float, float]:
        """:meth:`generate`, with the wall-clock times it started and finished (the controller's idle accounting)."""
        started = time.time()
        return self.generate(prompts, sampling), started, time.time()

    def load_weights(self, weights: SharedWeights) -> None:
        """One piece of a sync (``weight_transfer.pieces``): what it completes goes into the engine."""
        whole = list(self.assembler.tensors(weights))  # views of the object store, but for tensors sent in rows
        if whole:
            self.engine.load_weights(whole)
