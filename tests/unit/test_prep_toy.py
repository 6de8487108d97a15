"""The walk-through on the toy set (docs/data.md): make_toy -> add-candidates (toy detector) -> convert -> validate."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from data_tools.cli import main
from data_tools.validate import validate_file

TOY = Path(__file__).resolve().parents[2] / "examples" / "toy"
TINY = ["--min-pixels", "12544", "--max-pixels", "12544"]


def load_make_toy():
    spec = importlib.util.spec_from_file_location("make_toy", TOY / "make_toy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_toy


def test_toy_walk_through(tmp_path, capsys):
    anno = load_make_toy()(tmp_path, num=24, seed=0)
    assert anno.read_text() == load_make_toy()(tmp_path / "again", num=24, seed=0).read_text()  # deterministic
    images, candidates, parquet = tmp_path / "images", tmp_path / "toy_cand.json", tmp_path / "train.parquet"
    common = ["--image-root", str(images)]
    detector = ["--detector", f"{TOY / 'toy_detector.py'}:detect", "--detector-arg", "jitter=2"]
    assert main(["add-candidates", "--anno", str(anno), *common, *detector, "--out", str(candidates)]) == 0
    repair = json.loads((tmp_path / "toy_cand.json.report.json").read_text())["repair"]
    assert repair["rows"] == 24 and repair["snapped"] > 0 and repair["inserted"] > 0  # the jitter and misses show
    assert main(["convert", "--anno", str(candidates), *common, "--out", str(parquet), *TINY]) == 0
    assert "wrote 24 rows" in capsys.readouterr().out
    assert validate_file(parquet, min_pixels=12544, max_pixels=12544).ok
