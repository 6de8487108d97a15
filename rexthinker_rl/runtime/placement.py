"""Where the data-parallel actor ranks run: one Ray placement group per node, pinned to that node.

``trainer.nnodes`` nodes with ``trainer.n_gpus_per_node`` ranks each. On GPU a rank's bundle is one GPU (plus CPUs for
its data work); on CPU it is a share of a core. Each node's group is STRICT_PACK and carries Ray's node-id label, so
rank r = node * n_gpus_per_node + local always lands where the layout says, on a real cluster (nodes joined with
``ray start --address=HEAD:6379``) and on ``ray.cluster_utils.Cluster``'s simulated nodes alike. Rank 0 sits on the
driver's node when it has room.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

if TYPE_CHECKING:
    from rexthinker_rl.config import Config


class PlacementError(RuntimeError):
    """The cluster cannot seat the run's workers; the message says what it has and what to change."""


CPU_SHARE = 0.5  # on CPU the actor, reference and rollout work in turn: each process of ours reserves half a core
GPU_SHARE = 1 / 3  # actor.strategy=torch on GPU: actor, reference and rollout share one GPU
CPUS_PER_GPU_RANK = 2  # on GPU: a rank's batch preparation and Ray bookkeeping
PLACEMENT_TIMEOUT_S = 120


@dataclass(frozen=True)
class Role:
    """A kind of worker process: the class that runs it and the Ray resources it asks for on a CPU and a GPU run."""

    worker: str  # its class (runtime.workers, or rewarding for the reward scorer)
    on_cpu: dict[str, float]
    on_gpu: dict[str, float]


# The placement table: every process a run starts, by role. The process-group, tensor-parallel and node layout is
# rank_slots' and rollout_slots' (placement groups); what each process asks for is here.
ROLES: dict[str, Role] = {
    # actor.strategy=torch beside a reference and a rollout worker: a third of the GPU each
    "actor": Role("ActorWorker", {"num_cpus": CPU_SHARE}, {"num_gpus": GPU_SHARE, "num_cpus": 1}),
    # actor.strategy=torch with rollout.placement=colocate: it hosts the reference and the engine too (the whole GPU)
    "colocated actor": Role("ActorWorker", {"num_cpus": CPU_SHARE}, {"num_gpus": 1.0, "num_cpus": 1}),
    # one rank of a sharded actor (fsdp2 | deepspeed), colocated or not: a bundle of its node's placement group
    "actor rank": Role(
        "ActorWorker", {"num_cpus": CPU_SHARE, "num_gpus": 0}, {"num_cpus": CPUS_PER_GPU_RANK, "num_gpus": 1.0}
    ),
    "reference": Role("ReferenceWorker", {"num_cpus": CPU_SHARE}, {"num_gpus": GPU_SHARE, "num_cpus": 1}),
    # the one rollout worker of a CPU or actor.strategy=torch run
    "rollout": Role("RolloutWorker", {"num_cpus": CPU_SHARE}, {"num_gpus": GPU_SHARE, "num_cpus": 1}),
    # one engine of a sharded GPU run on GPUs of its own (tensor-parallel engines: see rollout_engine_resources)
    "rollout engine": Role("RolloutWorker", {}, {"num_cpus": 1, "num_gpus": 1}),
    # the reward scorer: it waits on the CPU between batches, and scoring is light
    "reward": Role("RewardWorker", {"num_cpus": 0}, {"num_cpus": 0}),
}


def resources(role: str, on_gpu: bool) -> dict[str, float]:
    """Ray resources of one process of ``role`` (``num_cpus``, ``num_gpus``), from the table."""
    return dict(ROLES[role].on_gpu if on_gpu else ROLES[role].on_cpu)


def actor_role(config: Config) -> str:
    """The actor's role: ranks when sharded, else one process (colocated: with the reference and the engine)."""
    derived = config.derived
    return "actor rank" if derived.sharded else "colocated actor" if derived.colocated else "actor"


@dataclass
class RankSlot:
    """A rank's seat: the placement group of its node, the bundle in it, and the node."""

    placement_group: Any
    bundle_index: int
    node_id: str

    def scheduling(self) -> PlacementGroupSchedulingStrategy:
        return PlacementGroupSchedulingStrategy(
            placement_group=self.placement_group, placement_group_bundle_index=self.bundle_index
        )


def cpu_demand(config: Config) -> float:
    """Ray CPUs a run on CPU reserves: its actor process(es), and the reference and rollout workers that have processes
    of their own (the reward worker asks for none)."""
    derived = config.derived
    ranks = config.trainer.n_gpus_per_node if derived.sharded else 1
    actor = ranks * resources(actor_role(config), False)["num_cpus"]
    if derived.colocated:
        return actor
    reference = resources("reference", False)["num_cpus"] * derived.needs_reference_policy
    return actor + reference + resources("rollout", False)["num_cpus"]


def rollout_engine_resources(tensor_parallel_size: int) -> dict[str, float]:
    """An engine on GPUs of its own: a one-GPU engine takes its bundle's GPU itself; a tensor-parallel one asks for
    none, and vLLM's Ray executor places its workers on the bundles' GPUs."""
    seat = resources("rollout engine", True)
    return seat if tensor_parallel_size == 1 else {**seat, "num_gpus": 0}


def rank_bundle(on_gpu: bool) -> dict[str, float]:
    """A rank's bundle in its node's placement group (Ray's resource names: ``GPU``, ``CPU``)."""
    seat = resources("actor rank", on_gpu)
    return {"GPU": float(seat["num_gpus"]), "CPU": float(seat["num_cpus"])} if on_gpu else {"CPU": seat["num_cpus"]}


def pick_nodes(nnodes: int, per_node: dict[str, float]) -> list[str]:
    """Ids of ``nnodes`` alive nodes whose total resources fit ``per_node``, the driver's node first."""
    here = ray.get_runtime_context().get_node_id()
    fits = [
        node["NodeID"]
        for node in ray.nodes()
        if node["Alive"] and all(node["Resources"].get(key, 0.0) >= need for key, need in per_node.items())
    ]
    fits.sort(key=lambda node_id: node_id != here)
    if len(fits) < nnodes:
        need = ", ".join(f"{value:g} {key}" for key, value in per_node.items())
        raise PlacementError(
            f"trainer.nnodes={nnodes} but the Ray cluster has {len(fits)} node(s) with {need} each; join more with "
            "`ray start --address=<head>:6379` on each node, or lower trainer.nnodes / trainer.n_gpus_per_node"
        )
    return fits[:nnodes]


def actor_slots(config: Config, on_gpu: bool, name: str = "actor") -> list[RankSlot]:
    """One slot per data-parallel rank, node by node; waits until every group is placed."""
    per_node_count = config.trainer.n_gpus_per_node
    bundle = rank_bundle(on_gpu)
    per_node = {key: value * per_node_count for key, value in bundle.items()}
    slots: list[RankSlot] = []
    for node_index, node_id in enumerate(pick_nodes(config.trainer.nnodes, per_node)):
        group = placement_group(
            [bundle] * per_node_count,
            strategy="STRICT_PACK",
            name=f"{name}-node{node_index}",
            bundle_label_selector=[{"ray.io/node-id": node_id}] * per_node_count,
        )
        slots.extend(RankSlot(group, index, node_id) for index in range(per_node_count))
    groups = list({id(slot.placement_group): slot.placement_group for slot in slots}.values())
    ready, _ = ray.wait([group.ready() for group in groups], num_returns=len(groups), timeout=PLACEMENT_TIMEOUT_S)
    if len(ready) < len(groups):
        raise PlacementError(
            f"only {len(ready)} of {len(groups)} node placement groups ({bundle} x {per_node_count} each) were placed "
            f"within {PLACEMENT_TIMEOUT_S} s: are other jobs holding the GPUs?"
        )
    return slots


def rollout_slots(config: Config) -> list[RankSlot]:
    """GPUs of the rollout engines when ``rollout.placement=separate``: rollout.num_gpus, tensor-parallel groups
    kept within a node (one placement group per engine)."""
    tp = config.rollout.tensor_parallel_size
    seat = resources("rollout engine", True)
    bundle = {"GPU": float(seat["num_gpus"]), "CPU": float(seat["num_cpus"])}
    groups = [
        placement_group([bundle] * tp, strategy="STRICT_PACK", name=f"rollout-{index}")
        for index in range(config.rollout.num_gpus // tp)
    ]
    ray.get([group.ready() for group in groups], timeout=PLACEMENT_TIMEOUT_S)
    return [RankSlot(group, 0, "") for group in groups]
