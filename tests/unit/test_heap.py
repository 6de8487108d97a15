"""release_free_heap: glibc's malloc_trim hands freed heap pages back (the rollout worker calls it after generate)."""

from __future__ import annotations

import ctypes
import platform

import psutil
import pytest

from rexthinker_rl.utils import host_memory_gb, release_free_heap, reset_host_peak


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_heap_goes_back_to_the_os():
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    process = psutil.Process()
    # 200 MB in 64 KB blocks (below glibc's mmap threshold: they come from the heap, and free() keeps the pages).
    blocks = [libc.malloc(64 * 1024) for _ in range(3200)]
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    held = process.memory_info().rss
    for block in blocks[:-1]:  # the last block stays: the heap top is pinned, only trim can release the rest
        libc.free(block)
    before_trim = process.memory_info().rss
    assert release_free_heap() is True
    after_trim = process.memory_info().rss
    libc.free(blocks[-1])
    assert before_trim > held - 50 * 2**20  # free() alone gave back little
    assert after_trim < before_trim - 100 * 2**20  # the trim gave back most of the 200 MB


# The other C libraries, for real: a name that does not load (macOS and musl have no libc.so.6), and the dynamic
# loader, a C library that loads but has no malloc_trim (every other glibc library reaches libc's through its
# dependencies).
LOADER = {"x86_64": "ld-linux-x86-64.so.2", "aarch64": "ld-linux-aarch64.so.1"}.get(platform.machine())


@pytest.mark.parametrize(
    "library",
    [
        "libc.so.no-such-version",
        pytest.param(LOADER, marks=pytest.mark.skipif(LOADER is None, reason="no known loader name here")),
    ],
    ids=["library-missing", "no-malloc_trim"],
)
def test_is_a_no_op_without_glibcs_malloc_trim(library):
    if library == LOADER:
        ctypes.CDLL(library)  # it loads: the function, not the library, is what is missing
    assert release_free_heap(library) is False


@pytest.mark.skipif(platform.system() != "Linux", reason="/proc/self: Linux only")
def test_host_peak_counts_what_was_touched_since_the_reset_and_only_that():
    """host_memory_gb/reset_host_peak (the actor's perf/host_* metrics): the peak since a reset covers a buffer that
    was touched and freed after it, and a reset after that brings the peak back down to what is resident."""
    assert reset_host_peak() is True
    resident, peak = host_memory_gb()
    assert resident <= peak + 1e-3
    buffer = bytearray(300 * 2**20)  # zero-filled by the C library: every page touched
    _, with_buffer = host_memory_gb()
    del buffer
    release_free_heap()
    resident_after, peak_after = host_memory_gb()
    # The peak keeps the freed 300 MB (to within the kernel's batched per-thread RSS counters: 64 pages a thread).
    assert with_buffer >= resident + 0.25 and peak_after >= with_buffer - 0.02
    assert resident_after < with_buffer - 0.25
    assert reset_host_peak() is True
    assert host_memory_gb()[1] < with_buffer - 0.25  # and forgets it after the reset
