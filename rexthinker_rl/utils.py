"""Small shared helpers: atomic file writes, seeding, timers."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@functools.cache
def _libc_malloc_trim(library: str = "libc.so.6"):
    """glibc's ``malloc_trim``, or None where ``library`` is missing (macOS, musl) or lacks the function."""
    try:
        return ctypes.CDLL(library).malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_heap(library: str = "libc.so.6") -> bool:
    """Hand the C heap's free pages back to the OS (glibc ``malloc_trim(0)``); True if it ran.

    A vLLM engine on CPU allocates and frees batches of varying shape every generate call; glibc keeps the freed pages,
    so a CPU engine's resident memory grew ~8 MB per call of 128 samples without this and ~3 MB with it (40 calls;
    docs/performance.md has the 200-step figures). ``library`` is the C library to ask; where it is missing or has no
    ``malloc_trim`` (macOS, musl) this does nothing and returns False.
    """
    trim = _libc_malloc_trim(library)
    if trim is None:
        return False
    trim(0)
    return True


def host_memory_gb(names: tuple[str, ...] = ("VmRSS", "VmHWM")) -> tuple[float, ...] | None:
    """This process's resident size now and its peak since it started or since the last ``reset_host_peak`` (VmRSS,
    VmHWM; other ``/proc/self/status`` sizes by name, such as RssShmem, the shared memory it has touched: Ray's object
    store), in GiB; None where the kernel does not say (no ``/proc/self/status``: not Linux)."""
    try:
        with open("/proc/self/status") as handle:
            status = handle.read()
        return tuple(int(status.split(f"{name}:")[1].split()[0]) / 2**20 for name in names)
    except (OSError, IndexError, ValueError):
        return None


def reset_host_peak() -> bool:
    """Restart this process's peak resident size (VmHWM) from its current one; True if the kernel took it (Linux:
    ``/proc/self/clear_refs``, "5")."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, NumPy and torch (CPU and CUDA) RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Undo :func:`rng_state`: every generator continues exactly where it was saved."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class PhaseTimer:
    """Accumulates wall time per named phase: ``with timer("generate"): ...``; ``pop()`` returns and clears."""

    def __init__(self) -> None:
        self._times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._times[phase] = self._times.get(phase, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        times, self._times = self._times, {}
        return {f"timing/{name}": seconds for name, seconds in times.items()}
