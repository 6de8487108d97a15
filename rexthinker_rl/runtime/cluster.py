"""Ray start-up and shutdown for a run (token authentication on, a local cluster on loopback: ``ray_cluster``), and
the environment its worker processes get."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

import ray

from rexthinker_rl.ray_cluster import start_ray, stop_ray

# A local cluster's object store: batches and weights of the tiny model are small; a 7B run's weights go through it
# once per sync (the driver is not on the data path of a colocated run).
LOCAL_OBJECT_STORE_BYTES = 300 * 2**20


def worker_env(run_dir: str) -> dict[str, str]:
    """Environment for worker processes: caches inside the run folder, in-process vLLM on CPU, quiet tokenizers."""
    cache = os.path.join(os.path.abspath(run_dir), ".cache")
    return {
        "VLLM_CACHE_ROOT": os.environ.get("VLLM_CACHE_ROOT", os.path.join(cache, "vllm")),
        "TORCHINDUCTOR_CACHE_DIR": os.environ.get("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache, "inductor")),
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
        "VLLM_CONFIGURE_LOGGING": os.environ.get("VLLM_CONFIGURE_LOGGING", "0"),
    }


@dataclass(frozen=True)
class StartedRay:
    """A Ray this process started (:func:`stop_cluster` stops it), and what its start-up changed in the environment."""

    single_node_switch: str | None  # the previous value of Ray's single-node switch (``ray_cluster.start_ray``)


def start_cluster(address: str, run_dir: str) -> StartedRay | None:
    """Connect to the Ray cluster at ``address`` (``trainer.ray_address``), or start a local one on loopback; token
    authentication on either way (``rexthinker_rl.ray_cluster``). None when Ray was already initialised in this
    process (used as is, and not stopped by us)."""
    if ray.is_initialized():
        return None
    # ray.init replaces the SIGTERM handler with sys.exit; one the caller installed (the CLI's, which stops the run's
    # workers and Ray on the way out) is put back.
    caller = signal.getsignal(signal.SIGTERM)
    started = StartedRay(start_ray(address, worker_env(run_dir), local_cpus(), LOCAL_OBJECT_STORE_BYTES))
    if callable(caller) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, caller)
    return started


def local_cpus() -> int:
    """The CPUs a local cluster is given (at least 2, so a 1-core machine still fits the smallest run)."""
    return max(2, os.cpu_count() or 2)


def stop_cluster(started: StartedRay) -> None:
    """Shut down a Ray :func:`start_cluster` started, and put the environment back as it was."""
    stop_ray(started.single_node_switch)
