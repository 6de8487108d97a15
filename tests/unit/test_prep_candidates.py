"""add-candidates with a plain detector function: loading, arguments, batching, output checks, the three GT policies."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from data_tools.cli import main
from data_tools.detectors import check_detections, load_detector, parse_detector_args

# A detector in a file, as a user would write one: boxes near the ground truth of a known layout, and a call log.
DETECTOR = """
import json

def detect(images, categories, *, offset=0.0, label="x", log=None):
    if log:
        with open(log, "a") as handle:
            handle.write(json.dumps([len(images), list(categories), offset, label]) + "\\n")
    boxes = {"cat": [[20 + offset, 20, 60, 60], [100, 100, 150, 140]], "dog": [[5, 5, 30, 30]]}
    return [[{"bbox": box, "score": 0.5} for box in boxes.get(c, [])] for c in categories]

def broken(images, categories):
    return [[{"bbox": [1, 2, 3], "score": 1.0}] for _ in images]
"""


@pytest.fixture()
def setup(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (224, 224), (10, 20, 30)).save(images / name)
    detector = tmp_path / "my_detector.py"
    detector.write_text(DETECTOR)
    records = [
        {"id": "a-cat", "image_name": "a.png", "referring": "cat", "category": "cat", "ans": [20, 20, 60, 60]},
        {"id": "a-cat2", "image_name": "a.png", "referring": "cat 2", "category": "cat", "answer_boxes": []},
        {"id": "b-cat", "image_name": "b.png", "referring": "cat", "category": "cat", "answer_boxes": [[0, 0, 9, 9]]},
        {
            "id": "c-dog",
            "image_name": "c.png",
            "referring": "dog",
            "category": "dog",
            "answer_boxes": [[5, 5, 30, 30]],
        },
    ]
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps(records))
    return tmp_path, images, detector, anno


def run(setup, *extra, detector="detect") -> tuple[int, str]:
    tmp_path, images, detector_file, anno = setup
    args = ["add-candidates", "--anno", str(anno), "--image-root", str(images), "--out", str(tmp_path / "out.json")]
    return main([*args, "--detector", f"{detector_file}:{detector}", *extra])


def test_detector_args_parse_as_json_or_text():
    assert parse_detector_args(["model_path=/ckpt/g-dino", "box_threshold=0.3", "batch_size=4", "flag=true"]) == {
        "model_path": "/ckpt/g-dino",
        "box_threshold": 0.3,
        "batch_size": 4,
        "flag": True,
    }
    with pytest.raises(ValueError, match="must be key=value"):
        parse_detector_args(["no-equals"])


def test_load_detector_errors(tmp_path):
    with pytest.raises(ValueError, match="'module:function'"):
        load_detector("data_tools.detectors")
    with pytest.raises(ValueError, match="has no function 'nope' .*grounding_dino"):
        load_detector("data_tools.detectors:nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_detector(f"{tmp_path}/absent.py:detect")
    assert load_detector("data_tools.detectors:grounding_dino").__name__ == "grounding_dino"


def test_check_detections_clips_and_validates():
    output = [[{"bbox": [-5, 2, 300, 50], "score": 0.25}, {"bbox": [250, 0, 260, 10], "score": 0.1}]]
    assert check_detections(output, [(224, 100)], "d") == [[{"bbox": [0.0, 2.0, 224.0, 50.0], "score": 0.25}]]
    with pytest.raises(ValueError, match="one list of detections per image \\(2\\), got a list of 1"):
        check_detections(output, [(224, 100), (10, 10)], "d")


def test_snap_policy_counts_batches_and_arguments(setup, capsys):
    tmp_path = setup[0]
    log = tmp_path / "calls.jsonl"
    args = ["--gt-policy", "snap", "--batch-size", "2", "--detector-arg", "offset=1", "--detector-arg", "label=hi"]
    args += ["--detector-arg", f"log={log}"]
    assert run(setup, *args) == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert "4 records, 0 bad, 3 image/category pairs" in summary  # a.png/cat is detected once for two records
    assert "GT-in-hints: 2 rows exact, 1 snapped (1 boxes), 1 inserted (1 boxes), 0 dropped" in summary
    records = {r["id"]: r for r in json.loads((tmp_path / "out.json").read_text())}
    assert records["a-cat"]["answer_boxes"] == [[21.0, 20.0, 60.0, 60.0]]  # snapped onto the detection
    assert [0, 0, 9, 9] in [c["bbox"] for c in records["b-cat"]["candidate_boxes"]]  # inserted
    assert records["c-dog"]["candidate_boxes"] == [{"bbox": [5.0, 5.0, 30.0, 30.0], "category": "dog", "score": 0.5}]
    report = json.loads((tmp_path / "out.json.report.json").read_text())
    assert report["detector_calls"] == 2 and report["pairs"] == 3
    assert report["repair"] == {
        "rows": 4,
        "exact": 2,
        "snapped": 1,
        "inserted": 1,
        "dropped": 0,
        "boxes_snapped": 1,
        "boxes_inserted": 1,
        "kept": 0,
    }
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [[2, ["cat", "cat"], 1, "hi"], [1, ["dog"], 1, "hi"]]


@pytest.mark.parametrize(
    ("policy", "line", "kept"),
    [
        ("insert", "2 rows exact, 0 snapped (0 boxes), 2 inserted (2 boxes), 0 dropped", 4),
        ("drop", "2 rows exact, 0 snapped (0 boxes), 0 inserted (0 boxes), 2 dropped", 2),
    ],
)
def test_insert_and_drop_policies(setup, capsys, policy, line, kept):
    assert run(setup, "--gt-policy", policy, "--detector-arg", "offset=1") == 0
    assert line in capsys.readouterr().out
    records = json.loads((setup[0] / "out.json").read_text())
    assert len(records) == kept
    for record in records:
        hints = [c["bbox"] for c in record["candidate_boxes"] if c["category"] == record["category"]]
        assert all(box in hints for box in record["answer_boxes"])


def test_bad_records_and_bad_detectors(setup, capsys):
    tmp_path, images, _, anno = setup
    records = json.loads(anno.read_text())
    records[1]["image_name"] = "gone.png"
    records[3]["answer_boxes"] = [[5, 5, 300, 30]]
    anno.write_text(json.dumps(records))
    assert run(setup) == 1
    out = capsys.readouterr().out
    assert "anno.json record 1: image file 'gone.png' not found under" in out
    assert "anno.json record 3: answer box [5, 5, 300, 30] lies outside the 224x224 image" in out
    assert not (tmp_path / "out.json").exists()
    assert run(setup, "--on-error", "skip") == 0
    assert [r["id"] for r in json.loads((tmp_path / "out.json").read_text())] == ["a-cat", "b-cat"]
    assert run(setup, "--overwrite", detector="broken") == 2  # out.json exists now: replacing it needs the flag
    assert "expected a list of {'bbox': [x0, y0, x1, y1], 'score': number}" in capsys.readouterr().err
    assert run(setup, "--detector-arg", "speed=9", "--overwrite") == 2
    assert "got an unexpected keyword argument 'speed'" in capsys.readouterr().err
