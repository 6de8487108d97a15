"""Which runtime a config gets, and what it needs of this machine, checked before Ray starts. One object per
topology, behind the controller's verbs (:class:`~.base.Runtime`):

- ``actor.strategy=torch`` with ``rollout.placement=separate``: one actor process; reference and rollout in processes
  of their own (:class:`~.separate.SeparateRuntime` with one rank); with ``rollout.placement=colocate`` the one actor
  process also holds the reference and the engine (:class:`~.colocated.ColocatedRuntime` with one rank);
- fsdp2 | deepspeed with ``rollout.placement=separate``: ``trainer.nnodes x trainer.n_gpus_per_node`` actor ranks,
  the reference and the rollout engines apart (:class:`~.separate.SeparateRuntime`); weights over Ray;
- fsdp2 | deepspeed with ``rollout.placement=colocate``: one process per rank holding its actor shard, reference
  shard and engine (:class:`~.colocated.ColocatedRuntime`); weights streamed in process.

The controller only calls the verbs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ray

from rexthinker_rl.errors import ConfigError
from rexthinker_rl.runtime.base import Runtime
from rexthinker_rl.runtime.colocated import ColocatedRuntime
from rexthinker_rl.runtime.placement import cpu_demand, resources
from rexthinker_rl.runtime.ray_cluster import local_cpus, worker_env
from rexthinker_rl.runtime.separate import SeparateRuntime

if TYPE_CHECKING:
    from rexthinker_rl.config import Config


def check_topology(config: Config) -> None:
    """What the topology needs of this machine, checked before Ray starts (a config is also loaded for evaluation,
    inference or SFT, where the topology plays no part: so this is not a ``load_config`` rule)."""
    derived, tp = config.derived, config.rollout.tensor_parallel_size
    if derived.colocated and derived.sharded and not derived.on_gpu and config.rollout.engine == "vllm" and tp != 1:
        raise ConfigError(
            f"rollout.tensor_parallel_size={tp} with rollout.placement=colocate needs CUDA GPUs (vLLM's "
            "external_launcher tensor parallelism); on CPU set rollout.tensor_parallel_size=1, or "
            "rollout.placement=separate"
        )
    if derived.colocated and not derived.sharded and derived.on_gpu and config.rollout.engine == "vllm" and tp != 1:
        raise ConfigError(
            f"rollout.tensor_parallel_size={tp} with actor.strategy=torch and rollout.placement=colocate: the one "
            "actor process hosts one engine on its one GPU; set rollout.tensor_parallel_size=1, or "
            "rollout.placement=separate"
        )
    if not config.trainer.ray_address and not ray.is_initialized():  # (Ray started by the caller: its resources)
        check_local_resources(config)


def check_local_resources(config: Config) -> None:
    """A local cluster (no trainer.ray_address) is this machine: the actor's ranks, and the reference and rollout
    workers of their own, must fit its GPUs or cores (else Ray would wait for them, or the placement fail after start)."""
    import torch

    derived, trainer = config.derived, config.trainer
    if derived.sharded and trainer.nnodes > 1:
        raise ConfigError(
            f"trainer.nnodes={trainer.nnodes} needs a Ray cluster of that many nodes, and none is given: set "
            "trainer.ray_address to it (docs/scaling.md, several nodes), or trainer.nnodes=1"
        )
    ranks = trainer.n_gpus_per_node if derived.sharded else 1
    if derived.on_gpu and derived.sharded and ranks > torch.cuda.device_count():
        raise ConfigError(
            f"trainer.n_gpus_per_node={ranks}: this machine has {torch.cuda.device_count()} GPU(s); set "
            "trainer.n_gpus_per_node to at most that, or trainer.ray_address to a cluster that has them"
        )
    if derived.on_gpu:
        return
    cores, need, per_rank = local_cpus(), cpu_demand(config), resources("actor rank", False)["num_cpus"]
    if need > cores:
        fits = int((cores - (need - ranks * per_rank)) / per_rank)  # ranks beside the others
        others = "" if derived.colocated else ", beside the reference and rollout workers"
        raise ConfigError(
            f"trainer.n_gpus_per_node={ranks} with actor.strategy={config.actor.strategy} on CPU starts {ranks} actor "
            f"processes of half a core each{others}: {need:g} cores, but this machine gives Ray {cores}; set "
            f"trainer.n_gpus_per_node={max(1, fits)} or fewer"
        )


def start_runtime(config: Config, model_path: str, total_updates: int) -> Runtime:
    """Spawn the workers of the configured topology (Ray must be running: ``ray_cluster.start_cluster``)."""
    env = {"runtime_env": {"env_vars": worker_env()}}
    topology = ColocatedRuntime if config.derived.colocated else SeparateRuntime
    return topology(config, model_path, total_updates, env)


__all__ = ["ColocatedRuntime", "SeparateRuntime", "check_local_resources", "check_topology", "start_runtime"]
