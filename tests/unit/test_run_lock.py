"""The run folder's lock (rexthinker_rl.run.lock) and the data settings a checkpoint's position depends on
(rexthinker_rl.data.position), without a model: the holder refused and named, a clean release, a start that failed
leaving no folder behind, a crashed holder taken over, and an old checkpoint whose position does not fit the data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rexthinker_rl.data.position import check_data_position
from rexthinker_rl.run.lock import LOCK_FILE, RunLock
from rexthinker_rl.run.outputs import OutputError
from rexthinker_rl.train.checkpoint import CheckpointError


def test_a_held_folder_is_refused_naming_its_holder(tmp_path):
    first = RunLock.acquire(tmp_path / "run")
    record = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
    with pytest.raises(OutputError, match=rf"is in use by another run \(pid {record['pid']} on {record['host']}, "):
        RunLock.acquire(tmp_path / "run")  # another open file: flock refuses it even in one process
    first.release()
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""  # released cleanly: nothing to take over
    RunLock.acquire(tmp_path / "run").release()


def test_a_start_that_fails_removes_the_folder_it_made(tmp_path):
    RunLock.acquire(tmp_path / "new").release(started=False)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    RunLock.acquire(tmp_path / "mine").release(started=False)
    assert (tmp_path / "mine").is_dir()  # not made for the run: kept


def test_a_killed_holders_folder_is_taken_over_with_one_line(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from rexthinker_rl.run.lock import RunLock;"
         f" RunLock.acquire(Path({str(tmp_path / 'run')!r})); print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(OutputError, match=f"pid {holder.pid} on "):
            RunLock.acquire(tmp_path / "run")
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock.acquire(tmp_path / "run")
    assert f"taking over {tmp_path / 'run'} from a run that ended without releasing it (pid {holder.pid} on " in (
        capsys.readouterr().err
    )
    lock.release()


def test_an_old_checkpoints_position_that_does_not_fit_is_refused(tmp_path):
    """A checkpoint from before the data record: its position is still checked against this data, before Ray."""
    (tmp_path / "trainer_state.json").write_text(json.dumps({"step": 9, "sampler": {"epoch": 0, "batch_in_epoch": 9}}))
    settings = {
        "rows": 16,
        "rows_fingerprint": "x",
        "rollout_batch_size": 4,
        "shuffle": True,
        "seed": 1,
        "order": "ours",
    }
    with pytest.raises(CheckpointError, match="stopped at batch 9 of an epoch, but data.train_files makes 4 batches"):
        check_data_position(tmp_path, settings, 4, "trainer.resume=auto")
    check_data_position(tmp_path, settings, 10, "trainer.resume=auto")


def test_a_position_drawn_in_another_data_order_is_refused(tmp_path):
    """data.order: a record names it; a record from before data.order existed stands for ours; a checkpoint without a
    record is compared through its sampler position's order (refused before Ray, not in load_state_dict after it)."""
    settings = {
        "rows": 16,
        "rows_fingerprint": "x",
        "rollout_batch_size": 4,
        "shuffle": True,
        "seed": 1,
        "order": "ours",
    }
    easyr1 = {**settings, "order": "easyr1"}
    record = {**settings, "train_files": "train.parquet"}
    for data, sampler in (
        (record, {"epoch": 0, "batch_in_epoch": 1}),
        ({key: value for key, value in record.items() if key != "order"}, {"epoch": 0, "batch_in_epoch": 1}),
        (None, {"epoch": 0, "batch_in_epoch": 1, "order": "ours"}),
        (None, {"epoch": 0, "batch_in_epoch": 1}),
    ):
        (tmp_path / "trainer_state.json").write_text(json.dumps({"step": 1, "sampler": sampler, "data": data}))
        check_data_position(tmp_path, settings, 4, "trainer.resume=auto")
        with pytest.raises(CheckpointError, match="trained with data.order = 'ours', this run has 'easyr1'"):
            check_data_position(tmp_path, easyr1, 4, "trainer.resume=auto")
