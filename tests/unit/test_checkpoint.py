"""Checkpoint files: round trip, tracker, save_limit, and skipping a truncated or half-written checkpoint."""

import pytest
import torch

from rexthinker_rl.train.checkpoint import (
    TRACKER,
    CheckpointError,
    find_resumable,
    list_checkpoints,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)


def _save(root, step, limit=-1):
    weights = {"w": torch.full((3, 2), float(step)), "b": torch.arange(4.0)}
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    train_state = {"optimizer": optimizer.state_dict(), "scheduler": {"last_epoch": step}}
    state = {"step": step, "sampler": {"epoch": 0, "batch_in_epoch": step}, "history": [{"step": step}]}
    return save_checkpoint(root, step, weights, train_state, state, "actor:\n  lr: 0.1\n", limit)


def test_round_trip_and_tracker(tmp_path):
    folder = _save(tmp_path, 3)
    assert (tmp_path / TRACKER).read_text() == "3"
    ckpt = load_checkpoint(folder)
    assert ckpt.step == 3 and torch.equal(ckpt.weights["w"], torch.full((3, 2), 3.0))
    assert ckpt.trainer_state["sampler"] == {"epoch": 0, "batch_in_epoch": 3}
    assert ckpt.train_state["scheduler"] == {"last_epoch": 3}
    assert not list(tmp_path.glob(".tmp_*"))


def test_tied_weights_are_written_each_under_its_name_and_nothing_else_is_copied(tmp_path):
    """Tied weights share storage (safetensors refuses that): only the second name of a shared storage is copied;
    the rest are written from the tensors as given (a 7B model is not cloned whole to be saved)."""
    from rexthinker_rl.train.checkpoint import _unshared

    embed, other = torch.randn(5, 3), torch.randn(2, 2)
    weights = {"embed": embed, "head": embed, "other": other, "column": other.t()}
    ready = _unshared(weights)
    assert ready["embed"].data_ptr() == embed.data_ptr() and ready["other"].data_ptr() == other.data_ptr()
    assert ready["head"].data_ptr() != embed.data_ptr() and ready["column"].is_contiguous()
    folder = save_checkpoint(tmp_path, 1, weights, None, {"step": 1}, "")
    loaded = load_checkpoint(folder).weights
    assert all(torch.equal(loaded[name], weights[name]) for name in weights)


def test_save_limit_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["global_step_4", "global_step_3"]


def test_unusable_newest_checkpoints_are_named_not_skipped(tmp_path):
    """A truncated and a half-written checkpoint above a good one: resume=auto refuses, naming each and why, instead of
    resuming from the older one (whose run would replace them; issue 28); the good one stays resumable by name."""
    _save(tmp_path, 1)
    newest = _save(tmp_path, 2)
    weights = newest / "actor" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated
    (tmp_path / "global_step_3").mkdir()  # a folder without a manifest: a write that never finished
    with pytest.raises(CheckpointError, match=r"trainer.resume=.*global_step_1") as info:
        find_resumable(tmp_path)
    assert info.value.details == [
        "global_step_3: no manifest.json (incomplete write)",
        "global_step_2: actor/model.safetensors does not match its checksum",
    ]
    assert resolve_resume(str(tmp_path / "global_step_1"), tmp_path).name == "global_step_1"
    with pytest.raises(CheckpointError, match="not usable"):
        load_checkpoint(newest)


def test_no_usable_checkpoint_is_refused_not_started_over(tmp_path):
    """Every checkpoint unusable (a manifest holding null, one without its train state): refused by name; the old
    behaviour started over from step 0 and replaced them."""
    first, second = _save(tmp_path, 1), _save(tmp_path, 2)
    (first / "manifest.json").write_text("null")
    (second / "actor" / "train_state.pt").unlink()
    with pytest.raises(CheckpointError, match="no checkpoint under .* can be used, and starting over") as info:
        resolve_resume("auto", tmp_path)
    assert info.value.details == [
        "global_step_2: actor/train_state.pt is missing",
        "global_step_1: manifest.json holds no file list (a JSON object of files with sha256 and bytes; found None)",
    ]


def test_resume_modes(tmp_path):
    assert resolve_resume("none", tmp_path) is None
    assert resolve_resume("auto", tmp_path / "empty") is None
    folder = _save(tmp_path, 5)
    assert resolve_resume("auto", tmp_path) == folder
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        resolve_resume(str(tmp_path / "missing"), tmp_path)
