"""Rex-Thinker's own data files through our tools: its JSON-lines records convert (byte for byte what its convert
writes, under the rexthinker-grpo preset and original rounding), its parquet validates, is repaired and loads; the
`original` rounding equals its mapping on random boxes; from-refcoco's seeded subset."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_tools.cli import main
from data_tools.interchange import read_raw_records
from data_tools.validate import validate_file
from rexthinker_rl.data.dataset import boxes_to_resized, resized_size
from rexthinker_rl.data.parquet_meta import read_frame_metadata
from tests import rexthinker_original as original

BOUNDS = [(16 * 28 * 28, 1280 * 28 * 28), (256 * 28 * 28, 1280 * 28 * 28)]  # convert / demo, and the HumanRef eval


def test_original_rounding_equals_the_originals_mapping_on_random_boxes():
    rng = random.Random(0)
    differ = total = 0
    for _ in range(400):
        width, height = rng.randint(60, 1600), rng.randint(60, 1600)
        if max(width, height) / min(width, height) > 8:
            continue
        min_pixels, max_pixels = rng.choice(BOUNDS)
        frame = resized_size(width, height, min_pixels, max_pixels)
        assert frame[::-1] == original.smart_resize(height, width, min_pixels, max_pixels)  # same frame
        boxes = []
        for _ in range(5):  # COCO-style two-decimal boxes, plus a box at the image's edges
            x0, x1 = sorted(round(rng.uniform(0, width), 2) for _ in range(2))
            y0, y1 = sorted(round(rng.uniform(0, height), 2) for _ in range(2))
            boxes.append([x0, y0, x1, y1])
        boxes.append([0, 0, width, height])
        expected = original.map_boxes(boxes, width, height, min_pixels, max_pixels)
        assert boxes_to_resized(boxes, (width, height), frame, "original") == expected
        rounded = boxes_to_resized(boxes, (width, height), frame, "round")
        differ += sum(ours != theirs for ours, theirs in zip(rounded, expected, strict=True))
        total += len(boxes)
    assert differ / total > 0.8  # our own rounding lands elsewhere for most boxes: the frames must not be mixed


# --------------------------------------------------------------------------------------------- the original's files
SIZES = {"a.jpg": (320, 240), "b.jpg": (300, 400)}
# anno.json as the original's tool reads it (rexthinker/tools/dataset_tools/toy_dataset/anno.json): one JSON record a
# line under a .json name, a single `ans` box, the COCO `image_id`; candidate_boxes as add_candidates_by_grounding_dino.py
# lines 196-204 writes them ({"bbox", "category"} per detection; the ground truth appended when no detection overlaps
# it by IoU 0.5, else left out).
RECORDS = [
    {"image_name": "a.jpg", "image_id": 1, "ans": [10.0, 20.5, 120.25, 200.0], "category": "person",
     "referring": "the man on the left", "candidate_boxes": [
         {"bbox": [10.0, 20.5, 120.25, 200.0], "category": "person"},
         {"bbox": [150.7, 30.1, 300.9, 220.4], "category": "person"}]},
    {"image_name": "a.jpg", "image_id": 1, "ans": [150.7, 30.1, 300.9, 220.4], "category": "person",
     "referring": "the man on the right", "candidate_boxes": [
         {"bbox": [10.0, 20.5, 120.25, 200.0], "category": "person"},
         {"bbox": [150.7, 30.1, 300.9, 220.4], "category": "person"}]},
    # A detection overlaps the ground truth (IoU > 0.5), so the original keeps the row with its GT not among the hints.
    {"image_name": "b.jpg", "image_id": 2, "ans": [40.0, 50.0, 200.0, 350.0], "category": "dog",
     "referring": "the sleeping dog", "candidate_boxes": [
         {"bbox": [38.2, 47.9, 205.3, 352.6], "category": "dog"},
         {"bbox": [210.0, 20.0, 290.0, 120.0], "category": "dog"}]},
]  # fmt: skip


@pytest.fixture()
def original_files(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for index, (name, size) in enumerate(SIZES.items()):
        Image.new("RGB", size, (40 * index, 90, 160)).save(images / name, quality=95)
    (tmp_path / "anno.json").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "candidate_boxes"}) + "\n"
                                                for r in RECORDS))  # fmt: skip
    (tmp_path / "anno_with_candidates.json").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    rows = [original.convert_row(r, (images / r["image_name"]).read_bytes()) for r in RECORDS]
    original.write_parquet(rows, tmp_path / "original.parquet")
    return tmp_path, images, rows


def test_records_as_json_lines_under_a_json_name(original_files):
    folder, _, _ = original_files
    assert [record["image_id"] for record in read_raw_records(folder / "anno.json")] == [1, 1, 2]
    (folder / "one.json").write_text(json.dumps(RECORDS[0]) + "\n")  # one record, one line
    assert len(read_raw_records(folder / "one.json")) == 1


def test_convert_writes_what_the_originals_convert_writes(original_files, capsys):
    folder, images, rows = original_files
    out = folder / "ours.parquet"
    args = ["convert", "--anno", str(folder / "anno_with_candidates.json"), "--image-root", str(images)]
    args += ["--out", str(out), "--prompt-preset", "rexthinker-grpo"]
    assert main(args) == 1  # GT-not-in-hints is a bad record by default, named
    assert "anno_with_candidates.json record 2: answer box [40.0, 50.0, 200.0, 350.0] is not exactly one of" in (
        capsys.readouterr().out
    )
    assert main([*args, "--gt-policy", "snap"]) == 0
    ours = pq.read_table(out).to_pylist()
    for mine, theirs in zip(ours[:2], rows[:2], strict=True):  # the rows the original writes correctly
        assert mine["problem"] == theirs["problem"] and mine["answer"] == theirs["answer"]  # byte for byte
    # The third: the ground truth snapped onto the detection it overlaps, exactly as mapped in the hints.
    assert ours[2]["problem"] == rows[2]["problem"]
    assert json.loads(ours[2]["answer_boxes"]) == [json.loads(ours[2]["hints"])["dog"][0]]
    assert read_frame_metadata(out) == {
        "box_rounding": "original",
        "min_pixels": 12544,
        "max_pixels": 1003520,
        "prompt_preset": "rexthinker-grpo",
    }
    assert json.loads((folder / "ours.parquet.report.json").read_text())["frame"]["box_rounding"] == "original"
    report = validate_file(out, min_pixels=12544, max_pixels=1003520)
    assert report.ok, [problem.line() for problem in report.problems]


def test_original_parquet_validates_and_repairs(original_files, capsys):
    folder, _, rows = original_files
    parquet = folder / "original.parquet"
    assert main(["validate", str(parquet), "--min-pixels", "12544", "--max-pixels", "1003520"]) == 1
    printed = capsys.readouterr().out
    (gt,) = original.map_boxes([RECORDS[2]["ans"]], *SIZES["b.jpg"])
    assert f"original.parquet row 2: ground-truth box {gt} is not among the hint boxes" in printed
    assert "rows checked, 1 bad" in printed
    for policy, hint_count in (("snap", 2), ("insert", 3)):
        fixed = folder / f"{policy}.parquet"
        assert main(["repair", str(parquet), "--out", str(fixed), "--gt-policy", policy]) == 0
        assert "original.parquet row 2: " in capsys.readouterr().out
        assert validate_file(fixed, min_pixels=12544, max_pixels=1003520).ok
        before, after = pq.read_table(parquet).to_pylist(), pq.read_table(fixed).to_pylist()
        assert after[:2] == before[:2]  # untouched rows, images included, byte for byte
        assert after[2]["images"] == before[2]["images"]
        problem = after[2]["problem"]
        assert problem.startswith("<image>Hint: ") and problem.endswith(
            "\nPlease detect the sleeping dog in this image."
        )
        hints = json.loads(problem.split("image: ", 1)[1].split("\n")[0])
        assert len(hints["dog"]) == hint_count
