"""Disk faults: a save that fails part-way leaves the previous checkpoint (and model folder, and plot) intact and says
why; a metrics line torn by a failed write is dropped on resume.

Writes are made to fail for real with a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored): the kernel then refuses
to grow a file past the limit with EFBIG, as it refuses a write on a full disk with ENOSPC. (Permission bits cannot do
it: these tests may run as root.)
"""

from __future__ import annotations

import contextlib
import json
import resource
import signal

import pytest
import torch

from rexthinker_rl.train.checkpoint import (
    TRACKER,
    CheckpointError,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
    verify,
)


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Files of this process cannot grow past ``limit`` bytes (writes fail with EFBIG) inside the block."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _checkpoint_args(step: int) -> tuple:
    weights = {"w": torch.full((64, 64), float(step)), "b": torch.arange(8.0)}  # 16 KiB of weights
    train_state = {"optimizer": {"exp_avg": torch.randn(256, 256)}, "scheduler": {"last_epoch": step}}  # 256 KiB
    trainer_state = {"step": step, "sampler": {"epoch": 0, "batch_in_epoch": step}, "history": [{"step": step}]}
    return step, weights, train_state, trainer_state, "actor:\n  lr: 0.1\n"


@pytest.mark.parametrize(
    ("limit", "failing"),
    [(4096, "the weights (safetensors)"), (64 * 1024, "the optimizer state (torch.save)")],
    ids=["weights", "optimizer"],
)
@pytest.mark.parametrize("step", [2, 1], ids=["next-step", "same-step"])
def test_failed_save_keeps_the_previous_checkpoint_and_says_why(tmp_path, limit, failing, step):
    previous = save_checkpoint(tmp_path, *_checkpoint_args(1))
    before = {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()}
    with file_size_limit(limit), pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path, *_checkpoint_args(step))
    message = str(info.value)
    assert f"could not save checkpoint {tmp_path / f'global_step_{step}'}:" in message, failing
    assert "MiB free on that disk" in message and "unchanged" in message
    if "weights" in failing:
        assert "File too large" in message  # the OS's own reason
    # The previous checkpoint is untouched (even when the failed save had its name), the tracker too.
    assert {p.relative_to(previous): p.read_bytes() for p in previous.rglob("*") if p.is_file()} == before
    assert verify(previous) is None and load_checkpoint(previous).step == 1
    assert (tmp_path / TRACKER).read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step_1", TRACKER]  # no temp folder left


def test_failed_hf_folder_write_keeps_the_previous_model(tmp_path, tiny_model_dir):
    from rexthinker_rl.model.loading import load_model, load_processor, save_hf_folder

    model = load_model(str(tiny_model_dir))
    processor = load_processor(str(tiny_model_dir), 112 * 112, 112 * 112)
    final = save_hf_folder(model, processor, tmp_path / "final")
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    with file_size_limit(64 * 1024), pytest.raises(Exception, match="File too large"):
        save_hf_folder(model, processor, final, overwrite=True)  # replacing a model folder is asked for
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # the half-written temp folder is gone
    # A successful write replaces the folder and leaves nothing beside it.
    save_hf_folder(model, processor, final, overwrite=True)
    assert {p.name: p.read_bytes() for p in final.iterdir()} != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_failed_plot_write_keeps_the_previous_plot(tmp_path):
    from rexthinker_rl.run.plots import CURVES, plot_curves

    lines = [{"step": s, "reward/overall": 0.1 * s, "response_length/mean": 10.0 + s} for s in range(4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    before = plot_curves(tmp_path).read_bytes()
    with (tmp_path / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps({"step": 4, "reward/overall": 2.0}) + "\n")
    with file_size_limit(1024), pytest.raises(OSError, match="File too large"):
        plot_curves(tmp_path)
    assert (tmp_path / CURVES).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [CURVES, "metrics.jsonl"]  # the temp file is gone


def test_a_metrics_line_torn_by_a_failed_write_is_dropped_on_resume(tmp_path):
    from rexthinker_rl.run.logging import JsonlSink, truncate_metrics

    path = tmp_path / "metrics.jsonl"
    sink = JsonlSink(path)
    sink.log(1, {"reward/overall": 0.5})
    sink.log(2, {"reward/overall": 0.6})
    size = path.stat().st_size
    with file_size_limit(size + 20):
        with pytest.raises(OSError, match="File too large"):
            sink.log(3, {"reward/overall": 0.7, "padding": "x" * 100})  # only 20 bytes of this line reach the disk
        with contextlib.suppress(OSError):
            sink.close()  # flushing the rest fails too (and closes the file: nothing is written later)
    assert path.stat().st_size == size + 20  # a torn line, as a full disk leaves it
    truncate_metrics(path, keep_through=2)  # what a resume from checkpoint 2 does
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_a_save_that_failed_succeeds_when_retried_and_resumes(tmp_path):
    """Space comes back (the limit is lifted): the same save, retried, writes a complete checkpoint that the tracker
    names and a resume picks, with nothing of the failed attempt left beside it."""
    save_checkpoint(tmp_path, *_checkpoint_args(1))
    with file_size_limit(64 * 1024), pytest.raises(CheckpointError):
        save_checkpoint(tmp_path, *_checkpoint_args(2))  # the weights are written, the optimizer state is not
    retried = save_checkpoint(tmp_path, *_checkpoint_args(2))
    assert (tmp_path / TRACKER).read_text() == "2" and resolve_resume("auto", tmp_path) == retried
    assert verify(retried) is None
    loaded = load_checkpoint(retried)
    expected = _checkpoint_args(2)
    assert loaded.step == 2 and torch.equal(loaded.weights["w"], expected[1]["w"])
    assert loaded.train_state["scheduler"] == {"last_epoch": 2} and loaded.trainer_state == expected[3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global_step_1", "global_step_2", TRACKER]
