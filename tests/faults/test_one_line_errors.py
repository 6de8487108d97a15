"""No traceback reaches a user (issue 28): every console script ends any error in one line and a non-zero exit
status, the traceback kept (the run folder's errors.log, else a temp file the line names) and shown with ``--debug`` or
``REXTHINKER_DEBUG=1``; and each case that used to end in a traceback now says what is wrong and what to do.

The faults are real: a file where a folder should be, a folder this process may not write (the command run as
``nobody`` where the tests run as root, since root ignores permission bits), a full disk (a file-size limit,
``RLIMIT_FSIZE``, which the kernel enforces like a full disk), a HOME under a file, a port another socket holds, model
folders without their processor files.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import tomllib

from data_tools.cli import main as data_main
from rexthinker_rl.apps.cli import train_main
from rexthinker_rl.apps.console import console_entry
from rexthinker_rl.apps.convert import main as convert_main
from rexthinker_rl.apps.demo import main as demo_main
from rexthinker_rl.apps.infer import main as infer_main
from rexthinker_rl.apps.tiny_cli import main as tiny_main
from rexthinker_rl.eval.cli import main as eval_main
from rexthinker_rl.runtime.ray_cluster import CACHE_VARIABLES
from tests.faults.runs import call, run_overrides
from tests.faults.test_disk_faults import file_size_limit

ROOT = Path(__file__).resolve().parents[2]


def one_line(capsys) -> str:
    """The one ``error:`` line on stderr (progress bars and library log lines aside), and no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


# ---------------------------------------------------------------------------------------------------- the handler
def test_every_console_script_has_the_one_handler():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert len(scripts) == 9
    for name, target in scripts.items():
        module_name, function = target.split(":")
        module = importlib.import_module(module_name)
        entry = getattr(module, function)
        entry = entry if hasattr(entry, "console_command") else module.main  # console_main() calls main()
        assert getattr(entry, "console_command", None) == name, f"{name} ({target}) has no console_entry handler"


@console_entry("rexthinker-example")
def _buggy(argv):
    return {"a": 1}["b" if argv else "c"]  # a KeyError: no error we expect


def test_an_unexpected_error_is_one_line_and_its_traceback_kept(capsys, monkeypatch):
    monkeypatch.delenv("REXTHINKER_DEBUG", raising=False)
    assert call(_buggy, []) == 1
    line = one_line(capsys)
    match = re.fullmatch(r"error: unexpected KeyError: 'c' \(the traceback is in (\S+); --debug or .*\)", line)
    assert match, line
    kept = Path(match.group(1))
    try:
        assert "Traceback (most recent call last)" in kept.read_text() and "_buggy" in kept.read_text()
    finally:
        kept.unlink()
    for argv, env in ((["--debug"], None), ([], "1")):  # asked for: the traceback on stderr too
        if env:
            monkeypatch.setenv("REXTHINKER_DEBUG", env)
        assert call(_buggy, argv) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("error: ")
        Path(re.search(r"the traceback is in (\S+);", err).group(1)).unlink()


def test_debug_shows_the_traceback_of_an_expected_error_too(capsys):
    assert call(train_main, ["--debug", "rollout.n=1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err
    assert err.rstrip().splitlines()[-1].startswith("error: rollout.n=1 is invalid")


# ------------------------------------------------------------------------------------- output paths and full disks
@pytest.fixture
def afile(tmp_path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


def test_outputs_under_a_file_are_one_line(afile, tmp_path, tiny_model_dir, synthetic_data_dir, capsys):
    assert call(tiny_main, [str(afile / "model")]) == 2
    assert "OUT_DIR" in (line := one_line(capsys)) and f"{afile} is a file, not a folder" in line
    assert call(convert_main, [str(tmp_path / "nothing"), str(afile / "out")]) == 2
    assert f"{afile} is a file, not a folder" in one_line(capsys)
    assert call(data_main, ["synth", "--out", str(afile / "data")]) == 2
    line = one_line(capsys)
    assert line.startswith(f"error: --out {afile / 'data'}") and f": {afile} is a file, not a folder" in line
    overrides = run_overrides(tiny_model_dir, synthetic_data_dir, afile / "run")
    assert call(train_main, overrides) == 2
    assert f"trainer.output_dir={afile / 'run'}: {afile} is a file, not a folder" in one_line(capsys)


def _as_nobody() -> list[str]:
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permission bits cannot be made to bite")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_a_read_only_output_folder_is_one_line():
    # Beside /tmp rather than in pytest's folder, which only its owner may enter (the command runs as nobody).
    top = Path(tempfile.mkdtemp(prefix="rexthinker-read-only-"))
    top.chmod(0o755)
    locked = top / "read-only"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _run_tiny_in(locked)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(top)


def _run_tiny_in(locked: Path) -> None:
    command = [*_as_nobody(), sys.executable, "-m", "rexthinker_rl.apps.tiny_cli", str(locked / "model")]
    # The session's cache folders are its user's: nobody gets torch's own (importing torch._dynamo creates it).
    env = {name: value for name, value in os.environ.items() if name not in CACHE_VARIABLES}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd="/", env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: OUT_DIR {locked / 'model'}: cannot write in {locked} (Permission denied); choose a folder you can "
        "write to"
    )
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("command", ["synth", "tiny", "cot", "convert"])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(command, tmp_path, synthetic_data_dir, capsys):
    out = tmp_path / "out"
    argv = {
        "synth": (data_main, ["synth", "--out", str(out), "--num-train", "64", "--num-val", "8"]),
        "tiny": (tiny_main, [str(out)]),
        "cot": (data_main, ["cot", str(synthetic_data_dir / "train.parquet"), "--out", str(out / "cot.parquet")]),
        "convert": (data_main, _convert_args(tmp_path, out)),
    }[command]
    out.mkdir()
    with file_size_limit(8192):
        status = call(*argv)
    assert status == 2
    line = one_line(capsys)
    assert re.search(r"--out|OUT_DIR", line) and str(out) in line, line
    assert "the write failed: file too large" in line and "nothing half-written was left" in line
    files = [p for p in out.rglob("*") if p.is_file()]
    if command == "convert":  # convert writes its report whatever stops it: whole, saying why it stopped
        report = out / "train.parquet.report.json"
        assert files == [report], files
        assert json.loads(report.read_text())["aborted"] == "the write failed: file too large"
        files.remove(report)
    assert not files, files  # no partial file, no temp file


def _convert_args(tmp_path: Path, out: Path) -> list[str]:
    """An interchange file of 8 records with real images, for ``rexthinker-data convert``."""
    import json

    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    records = []
    for index in range(8):
        Image.new("RGB", (96, 80), (index * 30, 90, 200)).save(images / f"{index}.png")
        records.append(
            {
                "image_name": f"{index}.png",
                "referring": "the blue square",
                "category": "square",
                "answer_boxes": [[10, 10, 40, 40]],
                "candidate_boxes": [[10, 10, 40, 40], [50, 30, 80, 70]],
            }
        )
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps(records))
    return ["convert", "--anno", str(anno), "--image-root", str(images), "--out", str(out / "train.parquet")]


# ---------------------------------------------------------------------------------------------- the other cases
def test_an_unwritable_home_is_one_line_before_ray(tiny_model_dir, synthetic_data_dir, tmp_path, afile, capsys,
                                                   monkeypatch):  # fmt: skip
    """Ray keeps its token in ~/.ray: a HOME where nothing can be created was a traceback from Ray's start."""
    import ray

    monkeypatch.setenv("HOME", str(afile / "home"))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert call(train_main, run_overrides(tiny_model_dir, synthetic_data_dir, tmp_path / "run")) == 2
    line = one_line(capsys)
    assert f"Ray's token file {afile / 'home' / '.ray' / 'auth_token'} cannot be created" in line
    assert "set RAY_AUTH_TOKEN_PATH" in line and not ray.is_initialized()


@pytest.fixture(scope="module")
def broken_models(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Copies of the tiny model without its image-processor config, and without its tokenizer."""
    root = tmp_path_factory.mktemp("broken_models")
    folders = {}
    for name, missing in (("no-processor", ("processor_config.json", "preprocessor_config.json")),
                          ("no-tokenizer", ("tokenizer.json", "vocab.json", "merges.txt"))):  # fmt: skip
        folder = shutil.copytree(tiny_model_dir, root / name)
        for file in missing:
            (folder / file).unlink(missing_ok=True)
        folders[name] = folder
    return folders


@pytest.mark.parametrize("broken", ["no-processor", "no-tokenizer"])
@pytest.mark.parametrize("command", ["train", "eval", "infer", "show-prompt"])
def test_a_model_folder_without_its_processor_files_is_named(command, broken, broken_models, synthetic_data_dir,
                                                             tmp_path, capsys):  # fmt: skip
    """Missing preprocessor config: a traceback from transformers; missing tokenizer: an empty tokenizer, which
    failed much later as "Mismatch in image token count"."""
    model = broken_models[broken]
    image = tmp_path / "picture.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(image)
    entry, argv = {
        "train": (train_main, run_overrides(model, synthetic_data_dir, tmp_path / "run")),
        "eval": (eval_main, ["run", "--model", str(model), "--data", str(synthetic_data_dir / "val.parquet"),
                             "--out", str(tmp_path / "eval"), "--engine", "hf"]),
        "infer": (infer_main, ["--model", str(model), "--image", str(image), "--ref", "the red square",
                               "--hints", str(_hints(tmp_path)), "--out", str(tmp_path / "out.png")]),
        "show-prompt": (data_main, ["show-prompt", "--model", str(model), "--referring", "the red square",
                                    "--hints", '{"square": [[1, 2, 30, 40]]}']),
    }[command]  # fmt: skip
    assert call(entry, argv) == 2
    what = "an image processor config (preprocessor_config.json)" if broken == "no-processor" else "a tokenizer"
    assert f"model folder {model} lacks {what}" in one_line(capsys)


def _hints(tmp_path: Path) -> Path:
    path = tmp_path / "hints.json"
    path.write_text('{"square": [[1, 2, 30, 40]]}')
    return path


def test_a_demo_port_in_use_is_one_line_before_the_model_loads(tiny_model_dir, capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert call(demo_main, ["--model", str(tiny_model_dir), "--port", str(port)]) == 2
    assert one_line(capsys).startswith(
        f"error: --port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)"
    )


def test_convert_names_a_run_folder_and_a_null_manifest(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints" / "global_step_4").mkdir(parents=True)
    (run / "checkpoints" / "global_step_2").mkdir()
    (run / "config.yaml").write_text("trainer: {}\n")
    assert call(convert_main, [str(run), str(tmp_path / "hf")]) == 2
    assert one_line(capsys) == (
        f"error: {run} is a run folder, not one checkpoint: pass one of its checkpoints, e.g. "
        f"{run / 'checkpoints' / 'global_step_4'}, the newest"
    )
    step = run / "checkpoints" / "global_step_4"
    (step / "manifest.json").write_text("null")  # was: AttributeError: 'NoneType' object has no attribute 'get'
    assert call(convert_main, [str(step), str(tmp_path / "hf")]) == 2
    assert "manifest.json holds no file list" in one_line(capsys)
    assert not (tmp_path / "hf").exists()


def test_colocated_fsdp2_ranks_this_cpu_cannot_seat_are_refused_before_ray(tiny_model_dir, synthetic_data_dir,
                                                                           tmp_path, capsys):  # fmt: skip
    """The default 8 ranks a node on a CPU host: a RuntimeError traceback from the placement, after Ray started."""
    import ray

    overrides = run_overrides(tiny_model_dir, synthetic_data_dir, tmp_path / "run")
    overrides += ["actor.strategy=fsdp2", "rollout.placement=colocate", "rollout.tensor_parallel_size=1"]
    assert call(train_main, overrides) == 2
    line = one_line(capsys)
    assert line.startswith("error: trainer.n_gpus_per_node=8 with actor.strategy=fsdp2 on CPU starts 8 actor ")
    assert "set trainer.n_gpus_per_node=" in line and not ray.is_initialized()
    assert not (tmp_path / "run").exists()
