"""The placement table (``runtime.placement.ROLES``): what each process of a run asks Ray for, and the cores a CPU run
reserves in all. Every spawn reads the table, so these figures are what Ray is asked for."""

import pytest

from rexthinker_rl.config import load_config
from rexthinker_rl.runtime import workers
from rexthinker_rl.runtime.placement import (
    ROLES,
    actor_role,
    cpu_demand,
    rank_bundle,
    resources,
    rollout_engine_resources,
)
from rexthinker_rl.train import rewarding

TORCH = "actor.strategy=torch"


def test_every_role_names_a_worker_class():
    for role, seat in ROLES.items():
        assert hasattr(workers, seat.worker) or hasattr(rewarding, seat.worker), role


@pytest.mark.parametrize(
    ("role", "on_cpu", "on_gpu"),
    [
        ("actor", {"num_cpus": 0.5}, {"num_gpus": 1 / 3, "num_cpus": 1}),
        ("colocated actor", {"num_cpus": 0.5}, {"num_gpus": 1.0, "num_cpus": 1}),
        ("actor rank", {"num_cpus": 0.5, "num_gpus": 0}, {"num_cpus": 2, "num_gpus": 1.0}),
        ("reference", {"num_cpus": 0.5}, {"num_gpus": 1 / 3, "num_cpus": 1}),
        ("rollout", {"num_cpus": 0.5}, {"num_gpus": 1 / 3, "num_cpus": 1}),
        ("reward", {"num_cpus": 0}, {"num_cpus": 0}),
    ],
)
def test_what_each_role_asks_for(role, on_cpu, on_gpu):
    assert resources(role, False) == on_cpu and resources(role, True) == on_gpu


def test_bundles_and_engines_on_gpus_of_their_own():
    assert rank_bundle(True) == {"GPU": 1.0, "CPU": 2.0} and rank_bundle(False) == {"CPU": 0.5}
    assert rollout_engine_resources(1) == {"num_cpus": 1, "num_gpus": 1}
    assert rollout_engine_resources(2) == {"num_cpus": 1, "num_gpus": 0}  # vLLM's Ray executor takes the bundles'


@pytest.mark.parametrize(
    ("overrides", "role", "cores"),
    [
        ([TORCH, "rollout.placement=separate", "algorithm.kl_mode=loss"], "actor", 1.5),  # actor, reference, rollout
        ([TORCH, "rollout.placement=separate", "algorithm.kl_mode=none"], "actor", 1.0),  # no reference process
        ([TORCH, "rollout.placement=colocate", "algorithm.kl_mode=loss"], "colocated actor", 0.5),
        (["actor.strategy=fsdp2", "trainer.n_gpus_per_node=2", "rollout.placement=separate"], "actor rank", 2.0),
    ],
)
def test_cores_a_cpu_run_reserves(overrides, role, cores):
    config = load_config(None, ["trainer.device=cpu", "logging.kl_to_ref_freq=0", *overrides])
    assert actor_role(config) == role and cpu_demand(config) == cores


def test_workers_get_the_callers_cache_folders_and_no_others(monkeypatch):
    """Unset, no cache variable is passed: vLLM and torch use their own shared defaults (a run folder would start each
    run cold); set, the worker gets the caller's value."""
    from rexthinker_rl.runtime.ray_cluster import CACHE_VARIABLES, worker_env

    for name in CACHE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not set(CACHE_VARIABLES) & set(worker_env())
    monkeypatch.setenv("VLLM_CACHE_ROOT", "/somewhere/vllm")
    assert worker_env()["VLLM_CACHE_ROOT"] == "/somewhere/vllm" and "TORCHINDUCTOR_CACHE_DIR" not in worker_env()


def test_the_local_object_store_holds_one_sync_of_the_weights(monkeypatch):
    """Batches' room plus the weights a sync sends (in float32), so they pass through shared memory, not disk; no more
    than 95% of /dev/shm's free space nor half the memory; never less than the batches' room."""
    import shutil
    from collections import namedtuple

    from rexthinker_rl.runtime import ray_cluster

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(100 * 2**30, 0, 100 * 2**30))
    monkeypatch.setattr(ray_cluster.os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096}.get(name, 2**20))  # 4 GiB
    base = ray_cluster.LOCAL_OBJECT_STORE_BYTES
    assert ray_cluster.local_object_store_bytes(0) == base
    assert ray_cluster.local_object_store_bytes(2**30) == base + 2**30
    assert ray_cluster.local_object_store_bytes(8 * 2**30) == 2 * 2**30  # half of 4 GiB
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(2**30, 0, 2**30))
    assert ray_cluster.local_object_store_bytes(2**30) == int(0.95 * 2**30)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(2**20, 0, 2**20))  # a tiny /dev/shm: batches' room
    assert ray_cluster.local_object_store_bytes(2**30) == base
