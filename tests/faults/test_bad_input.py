"""Bad input to ``rexthinker-train``: each mistake gives exit status 2 and one line naming the file, row or key and what
would be right, before Ray or any worker starts.

Every case is a real bad file or setting (a corrupt image in a parquet row, a reward file whose function raises, ...)
run through the CLI entry point in this process; "no worker started" is checked as "Ray was never initialised and no
child process was spawned".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rexthinker_rl.apps.cli import train_main
from tests.faults.runs import run_overrides


@pytest.fixture(scope="module")
def bad(tmp_path_factory, synthetic_data_dir):
    """A folder of bad inputs, each made from the good synthetic set or written by hand."""
    folder = tmp_path_factory.mktemp("bad_input")
    table = pq.read_table(synthetic_data_dir / "train.parquet")

    def parquet(name: str, row: int, **changes) -> None:
        rows = table.to_pylist()
        for key, value in changes.items():
            rows[row][key] = value(rows[row]) if callable(value) else value
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), folder / name)

    parquet("corrupt_image.parquet", 3, images=lambda r: [{**r["images"][0], "bytes": b"\x89PNG\r\n\x1a\nnot a png"}])
    parquet("no_answer.parquet", 5, answer=None)
    outside = '```json\n[{"bbox_2d": [60, 60, 300, 200], "label": "x"}]\n```'  # the images are 112x112
    parquet("box_outside.parquet", 2, answer=outside)
    (folder / "malformed.yaml").write_text("actor:\n  lr: [1e-6\n")
    (folder / "typo.yaml").write_text("rollout:\n  temprature: 0.7\n")
    (folder / "rewards.py").write_text(
        "import math\n\n\n"
        "def raises(inputs):\n    raise RuntimeError('scorer exploded')\n\n\n"
        "def returns_str(inputs):\n    return 'perfect'\n\n\n"
        "def returns_nan(inputs):\n    return [{'overall': math.nan} for _ in inputs]\n\n\n"
        "def no_inputs(**kwargs):\n    return []\n"
    )
    return folder


def _cases(bad: Path, data: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments after the good run's overrides, regex the error line must match)."""
    rewards = bad / "rewards.py"
    return {
        "malformed YAML": (
            ["--config", str(bad / "malformed.yaml")],
            r"malformed\.yaml: not valid YAML: .* at line 3, column 1",
        ),
        "unknown key in YAML": (
            ["--config", str(bad / "typo.yaml")],
            r"typo\.yaml: unknown config key 'rollout\.temprature' \(did you mean rollout\.temperature\?\)",
        ),
        "unknown key": (["actor.lrr=1e-3"], r"unknown config key 'actor\.lrr' \(did you mean actor\.lr\?\)"),
        "wrong type": (["rollout.n=sixteen"], r"bad value 'sixteen' for 'rollout\.n': expected int"),
        "bad value": (["rollout.top_p=1.5"], r"rollout\.top_p=1\.5 is invalid: expected 0 < top_p <= 1"),
        "missing config file": (["--config", str(bad / "absent.yaml")], r"config file not found: .*absent\.yaml"),
        "missing data file": (
            [f"data.train_files={bad / 'absent.parquet'}"],
            r"dataset .*absent\.parquet does not exist",
        ),
        "missing model folder": (
            [f"model.path={bad / 'no_model'}"],
            r"model\.path=.*no_model: no such folder; point it at a Hugging Face checkpoint folder",
        ),
        "missing reward file": (
            [f"reward.function={bad / 'absent.py'}:score"],
            r"reward\.function=.*absent\.py:score: .*absent\.py' does not exist",
        ),
        "corrupt image": (
            [f"data.train_files={bad / 'corrupt_image.parquet'}"],
            r"corrupt_image\.parquet row 3: image does not decode",
        ),
        "row without answer": (
            [f"data.train_files={bad / 'no_answer.parquet'}"],
            r"no_answer\.parquet row 5: 'answer' is missing or empty",
        ),
        "box outside the image": (
            [f"data.train_files={bad / 'box_outside.parquet'}"],
            r"box_outside\.parquet row 2: ground-truth box \[60\.0, 60\.0, 300\.0, 200\.0\] lies outside the resized frame "
            r"\[112, 112\]; boxes must be in the processor's resized",
        ),
        "prompt over the limit": (
            ["data.max_prompt_length=40", "data.filter_overlong_prompts=false"],
            r"train\.parquet row 0: prompt is \d+ tokens \(16 image tokens\), over data\.max_prompt_length=40; "
            r"raise it, lower max_pixels, or set data\.filter_overlong_prompts=true",
        ),
        "every prompt over the limit": (
            ["data.max_prompt_length=40"],
            r"train\.parquet: no prompts left: all 64 are over data\.max_prompt_length=40 tokens .*raise it",
        ),
        "fewer rows than a batch": (
            ["data.rollout_batch_size=128", "actor.global_batch_size=128"],
            r"has 64 usable rows, fewer than data\.rollout_batch_size=128",
        ),
        "reward that raises": (
            [f"reward.function={rewards}:raises"],
            r"reward\.function=.*rewards\.py:raises fails before training.*reward failed on row \S+ \(batch index 0\)"
            r": RuntimeError\('scorer exploded'\); fix the function",
        ),
        "reward that returns a str": (
            [f"reward.function={rewards}:returns_str"],
            r"rewards\.py:returns_str fails before training.*returned str; expected a list of dicts.*fix the function",
        ),
        "reward that returns NaN": (
            [f"reward.function={rewards}:returns_nan"],
            r"rewards\.py:returns_nan fails before training.*'overall' is nan, expected a finite float",
        ),
        "reward with the wrong signature": (
            [f"reward.function={rewards}:no_inputs"],
            r"reward\.function=.*no_inputs: reward function .* has signature \(\*\*kwargs\); expected fn\(inputs",
        ),
    }


CASES = list(_cases(Path("bad"), Path("data")))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_fast_with_one_line(case, bad, synthetic_data_dir, tiny_model_dir, tmp_path, capsys):
    import ray

    extra, expected = _cases(bad, synthetic_data_dir)[case]
    options = [a for a in extra if a.startswith("--") or a.endswith(".yaml")]
    overrides = [a for a in extra if a not in options]
    argv = [*options, *run_overrides(tiny_model_dir, synthetic_data_dir, tmp_path / "run"), *overrides]
    assert not ray.is_initialized()
    children = {child.pid for child in psutil.Process().children(recursive=True)}  # earlier tests' may linger
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        train_main(argv)
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(expected, lines[0]), lines[0]
    spawned = {child.pid for child in psutil.Process().children(recursive=True)} - children
    assert not ray.is_initialized() and not spawned  # no Ray, no workers
    assert seconds < 60


def test_the_console_sees_one_line_and_status_2(bad, synthetic_data_dir, tiny_model_dir, tmp_path):
    """The real console script: exactly one line on stderr, no traceback, status 2, in seconds."""
    overrides = run_overrides(tiny_model_dir, synthetic_data_dir, tmp_path / "run")
    command = [sys.executable, "-c", "from rexthinker_rl.apps.cli import train_main; train_main()"]
    result = subprocess.run(
        [*command, *overrides, f"data.train_files={bad / 'box_outside.parquet'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "box_outside.parquet row 2: ground-truth box" in result.stderr
    assert "Started a local Ray instance" not in result.stdout + result.stderr


def test_bad_hints_json_names_the_row(bad, synthetic_data_dir, tiny_model_dir, tmp_path, capsys):
    table = pq.read_table(synthetic_data_dir / "train.parquet")
    rows = table.to_pylist()
    rows[7]["hints"] = json.dumps({"square": [[1, 2, 3]]})  # three numbers: not a box
    path = tmp_path / "bad_hints.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    with pytest.raises(SystemExit) as exit_info:
        train_main([*run_overrides(tiny_model_dir, synthetic_data_dir, tmp_path / "run"), f"data.train_files={path}"])
    assert exit_info.value.code == 2
    assert (
        "bad_hints.parquet row 7: hints['square'] must be a list of [x0, y0, x1, y1] boxes" in capsys.readouterr().err
    )


def test_truncated_image_data_is_named_when_its_row_is_loaded(synthetic_data_dir, tiny_model_dir, tmp_path):
    """The known limit: the scan reads headers only, so pixel data cut short is found on loading, naming the row."""
    from rexthinker_rl.config import DataConfig
    from rexthinker_rl.data.dataset import DataError, RLDataset
    from rexthinker_rl.model.loading import load_processor

    table = pq.read_table(synthetic_data_dir / "train.parquet")
    rows = table.to_pylist()
    png = rows[4]["images"][0]["bytes"]
    rows[4]["images"] = [{**rows[4]["images"][0], "bytes": png[: len(png) // 2]}]  # header intact, data cut
    path = tmp_path / "truncated.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    cfg = DataConfig(min_pixels=112 * 112, max_pixels=112 * 112)
    dataset = RLDataset(str(path), load_processor(str(tiny_model_dir), cfg.min_pixels, cfg.max_pixels), cfg)
    with pytest.raises(DataError, match=r"truncated\.parquet row 4: image does not decode"):
        dataset[4]
