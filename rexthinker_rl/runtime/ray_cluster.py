"""Ray start-up and shutdown for a run, the one place Ray is started: token authentication on, a local cluster that
listens on loopback only (or the cluster at ``trainer.ray_address``), and the environment the workers get.

Anyone who can reach a Ray cluster without authentication can run code as its user. What Ray 2.60 does, measured on
Linux during a run (``tests/faults/test_ray_security.py`` checks it on every test run):

- With token authentication (``RAY_AUTH_MODE=token``) every gRPC service (GCS, raylet, object manager, each worker's
  server) answers a call without the token with UNAUTHENTICATED, and the dashboard and runtime-env agents' HTTP APIs
  with 401. Three Prometheus metrics endpoints (read-only) answer without it.
- A local cluster's services bind the node's IP address, which Ray takes to be the host's outward interface
  (``ray.init(_node_ip_address="127.0.0.1")`` is turned back into it). Ray's single-node switch,
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, makes the node address 127.0.0.1, and then every service (GCS, raylet,
  object manager, workers, dashboard and runtime-env agents, metrics exporters) listens on loopback only.

The token is Ray's: ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``. When the file
is missing it is created here, mode 600 (Ray's own would be 644, readable by every user of the machine); an existing
one readable by others is tightened to 600. The token is never printed, logged or written into a run folder.
``RAY_AUTH_MODE=disabled`` is respected, with a warning. Multi-node set-up: docs/scaling.md, "Several nodes".
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# Ray is imported inside the functions below, not here: Ray reads RAY_AUTH_MODE and looks for its token when it is
# first imported, so this module must be importable (the test session, the CLI) before Ray, to put both in place first.

# A local cluster's object store, beside the weights a sync sends (local_object_store_bytes): batches are small.
LOCAL_OBJECT_STORE_BYTES = 300 * 2**20
AUTH_MODE = "RAY_AUTH_MODE"
FREE_OBJECTS_MS = 10  # a local cluster's delay before freed objects leave the object store (Ray's default: 1000)
SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1 (single-node mode)


class RayStartError(RuntimeError):
    """Ray could not be started safely; the message says what to fix."""


def token_file() -> Path:
    """Where Ray reads the token when ``RAY_AUTH_TOKEN`` is not set."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def ensure_auth_token() -> bool:
    """Turn token authentication on and make sure a private token exists; False when the user disabled it."""
    if os.environ.get(AUTH_MODE, "").lower() == "disabled":
        logger.warning(
            "RAY_AUTH_MODE=disabled: Ray runs without token authentication, so anyone who can reach its ports can "
            "run code as you; unset it to turn authentication back on"
        )
        return False
    os.environ[AUTH_MODE] = "token"
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = token_file()
    if not path.exists():
        try:
            _create_token(path)
        except OSError as error:
            raise RayStartError(
                f"Ray's token file {path} cannot be created ({error.strerror or error}; HOME={Path.home()}): set "
                "RAY_AUTH_TOKEN_PATH to a file in a private folder you can write, or RAY_AUTH_TOKEN to a token"
            ) from None
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        try:
            path.chmod(0o600)
        except OSError as error:
            raise RayStartError(
                f"Ray's token file {path} is readable by other users and cannot be made private ({error.strerror}); "
                "chmod 600 it, or point RAY_AUTH_TOKEN_PATH at a private copy"
            ) from None
    return True


def _create_token(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:  # O_EXCL: two runs starting at once never overwrite each other's token
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(32))  # 256 bits, the format of Ray's own generator


def start_ray(address: str, env_vars: dict[str, str], num_cpus: int, object_store_bytes: int) -> str | None:
    """Connect to the cluster at ``address``, or start a fresh local one on loopback; token authentication on.
    Returns what to hand :func:`stop_ray` (the single-node switch's previous value)."""
    import ray
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    if ensure_auth_token():
        # Ray read RAY_AUTH_MODE and looked for a token when it was imported, perhaps before either was set.
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    # Ray starts workers at nice 15; the driver only waits on them, so any other load on a laptop would starve the
    # processes doing the work. Workers of a local cluster run at the driver's priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    if address:
        ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=True)
        return os.environ.get(SINGLE_NODE)
    previous = os.environ.get(SINGLE_NODE)
    os.environ[SINGLE_NODE] = "0"  # inherited by Ray's services and workers
    ray_constants.ENABLE_RAY_CLUSTER = False  # Ray read the variable at import, perhaps before it was set
    ray.init(
        address="local",  # a fresh cluster, never one that `ray start` left running on this machine
        num_cpus=num_cpus,
        object_store_memory=object_store_bytes,
        include_dashboard=False,
        runtime_env={"env_vars": env_vars},
        log_to_driver=True,
        # Ray deletes freed objects in batches, once a second by default: a sync's next pieces would be written to
        # fresh shared memory meanwhile, and its pages stay resident, so the store's footprint climbed with every sync.
        _system_config={"free_objects_period_milliseconds": FREE_OBJECTS_MS},
    )
    return previous


def stop_ray(previous: str | None) -> None:
    """Shut Ray down and put the single-node switch back as it was, so a later cluster in this process is unaffected."""
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        ray.shutdown()
    if previous is None:
        os.environ.pop(SINGLE_NODE, None)
    else:
        os.environ[SINGLE_NODE] = previous
    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(SINGLE_NODE, not ray_constants.IS_WINDOWS_OR_OSX)


# Cache folders a user may point elsewhere; unset, vLLM and torch use their own defaults (vLLM's ~/.cache/vllm), shared by
# every run: its model-class inspection (a subprocess that imports vLLM, ~14 s on 2 cores) and compile caches stay warm.
CACHE_VARIABLES = ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR")


def worker_env() -> dict[str, str]:
    """Environment for worker processes: in-process vLLM on CPU, quiet tokenizers, the caller's cache folders."""
    return {
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
        "VLLM_CONFIGURE_LOGGING": os.environ.get("VLLM_CONFIGURE_LOGGING", "0"),
        **{name: os.environ[name] for name in CACHE_VARIABLES if name in os.environ},
    }


@dataclass(frozen=True)
class StartedRay:
    """A Ray this process started (:func:`stop_cluster` stops it), and what its start-up changed in the environment."""

    single_node_switch: str | None  # the previous value of Ray's single-node switch (``ray_cluster.start_ray``)


def start_cluster(address: str, weight_bytes: int = 0) -> StartedRay | None:
    """Connect to the Ray cluster at ``address`` (``trainer.ray_address``), or start a local one on loopback, its object
    store sized for ``weight_bytes`` of weights per sync; token authentication on either way. None when Ray was already
    initialised in this process (used as is, and not stopped by us)."""
    import ray

    if ray.is_initialized():
        return None
    # ray.init replaces the SIGTERM handler with sys.exit; one the caller installed (the CLI's, which stops the run's
    # workers and Ray on the way out) is put back.
    caller = signal.getsignal(signal.SIGTERM)
    started = StartedRay(start_ray(address, worker_env(), local_cpus(), local_object_store_bytes(weight_bytes)))
    if callable(caller) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, caller)
    return started


def local_object_store_bytes(weight_bytes: int) -> int:
    """A local cluster's object store: room for batches and one copy of the weights each sync sends to the engines
    (``weight_bytes``). A smaller store puts them on disk (Ray's fallback allocation and spilling): at Qwen2.5-VL-3B's
    shape, 2.2 GB of float32 weights, the sync took 11 s of a 100 s step. Shared-memory pages are taken only when
    used. Capped, as Ray caps its own default, at 95% of /dev/shm's free space, and at half the machine's memory."""
    wanted = LOCAL_OBJECT_STORE_BYTES + max(0, weight_bytes)
    try:
        shm = int(shutil.disk_usage("/dev/shm").free * 0.95)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (OSError, ValueError):  # no /dev/shm (not Linux): Ray puts its store elsewhere; keep the batches' size
        return LOCAL_OBJECT_STORE_BYTES
    return max(LOCAL_OBJECT_STORE_BYTES, min(wanted, shm, memory))


def local_cpus() -> int:
    """The CPUs a local cluster is given (at least 2, so a 1-core machine still fits the smallest run)."""
    return max(2, os.cpu_count() or 2)


def stop_cluster(started: StartedRay) -> None:
    """Shut down a Ray :func:`start_cluster` started, and put the environment back as it was."""
    stop_ray(started.single_node_switch)
