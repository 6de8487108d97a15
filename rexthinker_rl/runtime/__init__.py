"""The run's processes, one object per topology, behind the controller's verbs (:class:`~.base.Runtime`: generate,
logprobs, ref_logprobs, update, sync_weights, save, load, save_pretrained, shutdown).

- ``actor.strategy=torch``: one actor process; reference and rollout in processes of their own
  (:class:`~.separate.SeparateRuntime` with one rank);
- fsdp2 | deepspeed with ``rollout.placement=separate``: ``trainer.nnodes x trainer.n_gpus_per_node`` actor ranks,
  the reference and the rollout engines apart (:class:`~.separate.SeparateRuntime`); weights over Ray;
- fsdp2 | deepspeed with ``rollout.placement=colocate``: one process per rank holding its actor shard, reference
  shard and engine (:class:`~.colocated.ColocatedRuntime`); weights streamed in process.

Ray start-up (``cluster``), rank spawning (``ranks``), placement groups (``placement``), the worker processes
(``workers``) and naming a worker that died (``deaths``) live here; the controller only calls the verbs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rexthinker_rl.errors import ConfigError
from rexthinker_rl.runtime.base import ActorState, Generated, Pending, Runtime
from rexthinker_rl.runtime.cluster import worker_env
from rexthinker_rl.runtime.colocated import ColocatedRuntime
from rexthinker_rl.runtime.separate import SeparateRuntime

if TYPE_CHECKING:
    from rexthinker_rl.config import Config


def check_topology(config: Config) -> None:
    """What the topology needs of this machine, checked before Ray starts (a config is also loaded for evaluation,
    inference or SFT, where the topology plays no part: so this is not a ``load_config`` rule)."""
    derived, tp = config.derived, config.rollout.tensor_parallel_size
    if derived.colocated and not derived.on_gpu and config.rollout.engine == "vllm" and tp != 1:
        raise ConfigError(
            f"rollout.tensor_parallel_size={tp} with rollout.placement=colocate needs CUDA GPUs (vLLM's "
            "external_launcher tensor parallelism); on CPU set rollout.tensor_parallel_size=1, or "
            "rollout.placement=separate"
        )


def start_runtime(config: Config, model_path: str, total_updates: int, run_dir: str) -> Runtime:
    """Spawn the workers of the configured topology (Ray must be running: ``runtime.cluster.start_cluster``)."""
    env = {"runtime_env": {"env_vars": worker_env(run_dir)}}
    topology = ColocatedRuntime if config.derived.colocated else SeparateRuntime
    return topology(config, model_path, total_updates, env)


__all__ = [
    "ActorState",
    "ColocatedRuntime",
    "Generated",
    "Pending",
    "Runtime",
    "SeparateRuntime",
    "check_topology",
    "start_runtime",
]
