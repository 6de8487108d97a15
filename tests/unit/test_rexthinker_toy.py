"""Rex-Thinker's data tools, reproduced by name: ``add-candidates --gt-policy append`` adds candidates as its
add_candidates_by_grounding_dino.py does, and ``convert --gt-policy keep`` converts as its convert_dataset.py does, so
that its own toy set (rexthinker/tools/dataset_tools/toy_dataset) comes out as its own anno_with_candidates.json and
anno_with_candidates.parquet. The original's files are read from a clone named by $REXTHINKER_ORIGINAL (their license
keeps them out of this repository); those tests are skipped without one."""

from __future__ import annotations

import inspect
import io
import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from data_tools.candidates import add_candidates
from data_tools.cli import main
from data_tools.detectors import grounding_dino, grounding_dino_rexthinker, select_detections
from data_tools.interchange import read_raw_records
from tests import rexthinker_original as original

TOY = original.TOY_DATASET
IMAGES = ["COCO_train2014_000000038850.jpg", "COCO_train2014_000000181828.jpg", "COCO_train2014_000000519404.jpg"]


@pytest.fixture()
def toy_set(tmp_path):
    """The original's toy set, copied from the clone: anno.json, anno_with_candidates.json(.parquet), images/."""
    files = {name: original.original_file(f"{TOY}/{name}") for name in
             ["anno.json", "anno_with_candidates.json", "anno_with_candidates.parquet"]}  # fmt: skip
    if any(data is None for data in files.values()):
        pytest.skip(
            f"set {original.ORIGINAL_REPO_ENV} to a clone of IDEA-Research/Rex-Thinker to compare with its files"
        )
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "images").mkdir()
    for name in IMAGES:
        (tmp_path / "images" / name).write_bytes(original.original_file(f"{TOY}/images/{name}"))
    return tmp_path


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_convert_keep_reproduces_the_originals_parquet(toy_set, capsys):
    out = toy_set / "ours.parquet"
    args = ["convert", "--anno", str(toy_set / "anno_with_candidates.json"), "--image-root", str(toy_set / "images")]
    args += ["--out", str(out), "--prompt-preset", "rexthinker-grpo"]
    assert main(args) == 1  # by default a ground truth outside the hints is a bad record: 3 of the 5 are
    assert capsys.readouterr().out.count("is not exactly one of the 'person' candidate boxes") == 3
    assert main([*args, "--gt-policy", "keep"]) == 0
    printed = capsys.readouterr().out
    assert "3 kept with ground truth outside the hints" in printed
    assert "warning: 3 of 5 rows keep a ground-truth box that is not among their hints (--gt-policy keep" in printed
    theirs = pq.read_table(toy_set / "anno_with_candidates.parquet").to_pylist()
    ours = pq.read_table(out).to_pylist()
    # convert_dataset.py lines 231-240 collect rows as the worker processes finish (as_completed): the original's file
    # holds them in that order (4, 0, 1, 3, 2), ours in record order. Each problem text is unique: rows pair by it.
    assert len({row["problem"] for row in theirs}) == len(theirs) == len(ours) == 5
    by_problem = {row["problem"]: row for row in theirs}
    for row in ours:
        match = by_problem[row["problem"]]  # problem byte-equal
        assert row["answer"] == match["answer"]  # answer byte-equal
        # Images: theirs re-encoded as PNG (lines 16-31), ours the JPEG as stored; the same pixels once decoded.
        assert np.array_equal(_pixels(row["images"][0]["bytes"]), _pixels(match["images"]))
    report = json.loads((toy_set / "ours.parquet.report.json").read_text())
    assert report["repair"]["kept"] == 3 and report["repair"]["exact"] == 2


def _toy_detector(anno_with_candidates: list[dict], image_root):
    """What Grounding DINO found on each image of the toy set: the original's candidates without the appended ground
    truth (a detector never returns the annotation's own numbers to the last digit). The three images differ in size,
    which tells the detector which one it is given."""
    found = {}
    for record in anno_with_candidates:
        size = Image.open(image_root / record["image_name"]).size
        found[size] = [c["bbox"] for c in record["candidate_boxes"] if c["bbox"] != record["ans"]]

    def detect(images, categories):
        return [[{"bbox": box, "score": 0.5} for box in found[image.size]] for image in images]

    return detect


def test_add_candidates_append_reproduces_the_originals_candidates(toy_set):
    theirs = read_raw_records(toy_set / "anno_with_candidates.json")
    out, images = toy_set / "ours.json", toy_set / "images"
    report = add_candidates(toy_set / "anno.json", images, _toy_detector(theirs, images), out, gt_policy="append")
    assert (report.repair.inserted, report.repair.kept, report.repair.exact) == (2, 3, 0)
    assert "3 kept with ground truth outside the hints" in report.summary()
    ours = read_raw_records(out)
    for mine, record in zip(ours, theirs, strict=True):
        expected = [c["bbox"] for c in record["candidate_boxes"]]
        got = [c["bbox"] for c in mine["candidate_boxes"]]
        # Ours holds a detection to 0.01 px (check_detections); the appended ground truth is the annotation's own.
        assert got == [box if box == record["ans"] else [round(v, 2) for v in box] for box in expected]
        assert mine["answer_boxes"] == [record["ans"]]


def test_append_policy_equals_the_originals_rule_on_random_boxes(tmp_path):
    """On random detections around a ground-truth box, the ground truth is appended exactly when the original's
    add_candidates_by_grounding_dino.py appends it (tests/rexthinker_original.py), and always as the last candidate."""
    rng = random.Random(0)
    Image.new("RGB", (200, 160)).save(tmp_path / "a.png")
    records, detections = [], []
    for index in range(150):
        x0, y0 = rng.uniform(0, 100), rng.uniform(0, 80)
        gt = [round(x0, 2), round(y0, 2), round(x0 + rng.uniform(10, 99), 2), round(y0 + rng.uniform(10, 79), 2)]
        boxes = []
        for _ in range(rng.randint(0, 3)):
            shift = [rng.uniform(-15, 15) for _ in range(4)]
            boxes.append([round(min(max(v + d, 0), 200 if i % 2 == 0 else 160), 2) for i, (v, d) in
                          enumerate(zip(gt, shift, strict=True))])  # fmt: skip
        boxes = [box for box in boxes if box[2] > box[0] and box[3] > box[1]]
        records.append({"image_name": "a.png", "ans": gt, "category": f"thing{index}", "referring": "it"})
        detections.append(boxes)
    (tmp_path / "anno.json").write_text("".join(json.dumps(record) + "\n" for record in records))
    by_category = {record["category"]: boxes for record, boxes in zip(records, detections, strict=True)}

    def detect(images, categories):
        return [[{"bbox": box, "score": 0.9} for box in by_category[category]] for category in categories]

    add_candidates(tmp_path / "anno.json", tmp_path, detect, tmp_path / "out.json", gt_policy="append")
    ours = read_raw_records(tmp_path / "out.json")
    appended = 0
    for mine, record, boxes in zip(ours, records, detections, strict=True):
        expected = original.add_candidates_record(record, boxes)
        assert [c["bbox"] for c in mine["candidate_boxes"]] == [c["bbox"] for c in expected["candidate_boxes"]]
        appended += len(expected["candidate_boxes"]) > len(boxes)
    assert 20 < appended < 130  # both outcomes are exercised


def test_grounding_dino_rexthinker_keeps_the_originals_thresholds_and_boxes():
    # add_candidates_by_grounding_dino.py lines 50-61 (--text-threshold, --box-threshold default 0.25) and 155-161.
    defaults = {name: p.default for name, p in inspect.signature(grounding_dino_rexthinker).parameters.items()}
    assert (defaults["box_threshold"], defaults["text_threshold"]) == (0.25, 0.25)
    assert inspect.signature(grounding_dino).parameters["box_threshold"].default == 0.35  # ours stays
    # A post-processed result in query order: a box whose label names no word of the category, a better one after it.
    result = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0], [1.0, 2.0, 3.0, 4.0]]),
        "scores": torch.tensor([0.3, 0.9, 0.5]),
        "text_labels": ["[SEP]", "person", "person"],
    }
    theirs = select_detections(result, {"[SEP]", "[CLS]"}, ranked=False, max_detections=None)
    assert [d["score"] for d in theirs] == pytest.approx([0.3, 0.9, 0.5])  # every box, the detector's order
    ours = select_detections(result, {"[SEP]", "[CLS]"}, ranked=True, max_detections=1)
    assert [d["bbox"] for d in ours] == [[5.0, 5.0, 20.0, 20.0]]
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "text_labels": [""]}
    assert select_detections(empty, set(), ranked=False, max_detections=None) == []
