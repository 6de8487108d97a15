"""release_free_heap: glibc's malloc_trim hands freed heap pages back (the rollout worker calls it after generate)."""

from __future__ import annotations

import ctypes
import platform

import psutil
import pytest

from rexthinker_rl.utils import release_free_heap


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


def test_is_a_no_op_without_glibc(monkeypatch):
    from rexthinker_rl import utils

    monkeypatch.setattr(utils, "_libc_malloc_trim", lambda: None)
    assert release_free_heap() is False
