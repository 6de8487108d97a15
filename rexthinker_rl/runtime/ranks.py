"""The actor's ranks, spawned in one place, and the actor's verbs fanned out to them.

``actor.strategy=torch`` has one rank (one process, no process group); fsdp2 | deepspeed have ``trainer.nnodes x
trainer.n_gpus_per_node`` ranks, one :class:`~rexthinker_rl.runtime.workers.ActorWorker` each, placed node by node
(``runtime.placement``) and joined into one process group (rank 0 hosts the rendezvous). Batches are split by rows,
balanced by length (``batch.split_rows``), and each mini-batch is split on its own so every rank steps on the same
mini-batches as one process would. Results come back in row order; weights and metrics from rank 0 (the ranks have
summed their metrics already).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ray
import torch
from ray.util.placement_group import remove_placement_group

from rexthinker_rl.algo.batch import SequenceBatch, gather_logprobs, split_mini_batches, split_rows
from rexthinker_rl.runtime.base import ActorState, Pending
from rexthinker_rl.runtime.placement import actor_role, actor_slots, resources
from rexthinker_rl.runtime.workers import ActorWorker
from rexthinker_rl.train.backends import combine_train_states

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rexthinker_rl.config import Config
    from rexthinker_rl.rollout import RolloutPrompt, RolloutResult, SamplingSpec


def rank_name(config: Config) -> str:
    """What a sharded actor's rank is called in reports ("actor rank 1"; its Ray actor: "actor-rank1")."""
    return "colocated rank" if config.derived.colocated else "actor rank"


class ActorRanks:
    """The controller's handle on the actor: one rank or many, the same verbs."""

    def __init__(self, config: Config, handles: list, placement_groups: list | None = None) -> None:
        self.config, self.handles, self.placement_groups = config, handles, placement_groups or []
        self.roles_by_handle = {"actor": handles[0]} if len(handles) == 1 else {}
        if len(handles) > 1:
            self.roles_by_handle = {f"{rank_name(config)} {rank}": handle for rank, handle in enumerate(handles)}

    @classmethod
    def spawn(cls, config: Config, model_path: str, total_updates: int, env: dict) -> ActorRanks:
        """Start the ranks and (sharded) join them; ``setup`` builds each rank's policy (and, colocated, its engine)."""
        derived = config.derived
        worker = ray.remote(ActorWorker)
        seat = resources(actor_role(config), derived.on_gpu)
        if not derived.sharded:  # one process; colocated, it also hosts the reference and the engine
            handle = worker.options(name="actor", **seat, **env).remote(
                config, model_path, total_updates, 0, 1, derived.colocated
            )
            return cls(config, [handle])
        slots = actor_slots(config, derived.on_gpu)
        prefix = rank_name(config).replace(" ", "-")
        handles = [
            worker.options(name=f"{prefix}{rank}", **seat, scheduling_strategy=slot.scheduling(), **env).remote(
                config, model_path, total_updates, rank, len(slots), derived.colocated
            )
            for rank, slot in enumerate(slots)
        ]
        groups = list({id(slot.placement_group): slot.placement_group for slot in slots}.values())
        return cls(config, handles, groups)

    def start_setup(self) -> list:
        """Rank 0's rendezvous address, then every rank's setup at once (the process group and vLLM's groups form
        collectively); Ray references to wait on, so the other workers start meanwhile."""
        master_addr, master_port = ray.get(self.handles[0].address.remote())
        return [handle.setup.remote(master_addr, master_port) for handle in self.handles]

    def call_all(self, verb: str, *args) -> list:
        return ray.get([getattr(handle, verb).remote(*args) for handle in self.handles])

    def _split_logprobs(self, verb: str, batch: SequenceBatch) -> Pending[torch.Tensor]:
        groups, parts = split_rows(batch, len(self.handles))
        refs = [getattr(handle, verb).remote(part) for handle, part in zip(self.handles, parts, strict=True)]
        return Pending(refs, lambda results: gather_logprobs(batch, groups, results))

    def logprobs(self, batch: SequenceBatch) -> Pending[torch.Tensor]:
        return self._split_logprobs("compute_logprobs", batch)

    def ref_logprobs(self, batch: SequenceBatch) -> Pending[torch.Tensor]:
        return self._split_logprobs("compute_ref_logprobs", batch)

    def update(self, batch: SequenceBatch) -> dict[str, float]:
        shares = split_mini_batches(batch, self.config, len(self.handles))
        return ray.get([handle.update.remote(share) for handle, share in zip(self.handles, shares, strict=True)])[0]

    def weight_pieces(self) -> Iterator[ray.ObjectRef]:
        """Ray references to rank 0's merged weights, in pieces of rollout.weight_bucket_mb (every rank takes part in
        gathering them): a piece is made only once the one before it was taken, so the object store holds a few, not
        the model."""
        piece_bytes = self.config.rollout.weight_bucket_mb * 2**20
        streams = [
            handle.get_weight_pieces.options(num_returns="streaming", _generator_backpressure_num_objects=1).remote(
                piece_bytes
            )
            for handle in self.handles
        ]
        yield from streams[0]
        for stream in streams[1:]:  # they yield nothing; iterated to the end, so a rank's error is raised here
            for _ in stream:
                pass

    def save(self, with_optimizer: bool) -> ActorState:
        weights = dict(self.call_all("get_checkpoint_weights")[0].tensors())  # views of the object store: saved as is
        if not with_optimizer:
            return ActorState(weights, None)
        states = [shared.tree() for shared in self.call_all("get_train_state")]
        return ActorState(weights, combine_train_states(states, self.config.actor.strategy))

    def load(self, state: ActorState) -> None:
        self.call_all("load_train_state", state.weights, state.train_state)

    def save_pretrained(self, folder: str, processor) -> None:
        self.call_all("save_pretrained", folder, processor)

    def shutdown(self) -> None:
        """Stop the ranks and free their placement groups (another run may follow in this Ray cluster)."""
        for handle in self.handles:
            ray.kill(handle)
        for group in self.placement_groups:
            remove_placement_group(group)

    def node_ids(self) -> list[str]:
        """Ray node of each rank, in rank order."""
        return self.call_all("node_id")


class ActorVerbs:
    """The verbs every topology answers from its actor's ranks (``self.actor``, an ``ActorRanks``); each runtime adds
    generate, ref_logprobs, sync_weights and shutdown, which differ with the placement."""

    actor: ActorRanks

    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        return self.generate_async(prompts, sampling).result().results

    def logprobs(self, batch: SequenceBatch) -> Pending[torch.Tensor]:
        return self.actor.logprobs(batch)

    def update(self, batch: SequenceBatch) -> dict[str, float]:
        return self.actor.update(batch)

    def save(self, with_optimizer: bool) -> ActorState:
        return self.actor.save(with_optimizer)

    def load(self, state: ActorState) -> None:
        self.actor.load(state)
        self.sync_weights()  # the runtime's own: in process or over Ray

    def save_pretrained(self, folder: str, processor) -> None:
        self.actor.save_pretrained(folder, processor)
