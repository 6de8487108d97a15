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


CPU_SHARE_PER_RANK = 0.5  # on CPU: ranks, reference and rollout work in turn, so each reserves half a core
CPU_SHARE_SINGLE_PROCESS = 0.5  # on CPU the actor, reference and rollout work in turn: each reserves half a core
GPU_SHARE_SINGLE_PROCESS = 1 / 3  # actor.strategy=torch on GPU: actor, reference and rollout share one GPU
CPUS_PER_GPU_RANK = 2  # on GPU: the rank's batch preparation and Ray bookkeeping
PLACEMENT_TIMEOUT_S = 120


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
    of their own (``runtime.ranks`` and ``runtime.separate`` ask for these shares; the reward worker asks for none)."""
    derived, single = config.derived, CPU_SHARE_SINGLE_PROCESS
    actor = config.trainer.n_gpus_per_node * CPU_SHARE_PER_RANK if derived.sharded else single
    if derived.colocated:
        return actor
    return actor + single * derived.needs_reference_policy + single


def rank_bundle(on_gpu: bool) -> dict[str, float]:
    return {"GPU": 1.0, "CPU": float(CPUS_PER_GPU_RANK)} if on_gpu else {"CPU": CPU_SHARE_PER_RANK}


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
    groups = [
        placement_group([{"GPU": 1.0, "CPU": 1.0}] * tp, strategy="STRICT_PACK", name=f"rollout-{index}")
        for index in range(config.rollout.num_gpus // tp)
    ]
    ray.get([group.ready() for group in groups], timeout=PLACEMENT_TIMEOUT_S)
    return [RankSlot(group, 0, "") for group in groups]
