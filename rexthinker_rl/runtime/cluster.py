"""Ray start-up and shutdown for a run, and the environment its worker processes get."""

from __future__ import annotations

import os

import ray

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


def start_cluster(address: str, run_dir: str) -> bool:
    """Connect to the Ray cluster at ``address`` (``trainer.ray_address``), or start a local one; True when this call
    started Ray (and :func:`stop_cluster` should stop it). A Ray already initialised in this process is used as is."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray starts workers at nice 15; the driver only waits on them, so any other load on a laptop would starve the
    # processes doing the work. Workers of a local cluster run at the driver's priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    local = {
        "num_cpus": max(2, os.cpu_count() or 2),
        "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
        "include_dashboard": False,
    }
    init_kwargs = {"address": address} if address else local
    ray.init(**init_kwargs, runtime_env={"env_vars": worker_env(run_dir)}, log_to_driver=True)
    return True


def stop_cluster() -> None:
    if ray.is_initialized():
        ray.shutdown()
