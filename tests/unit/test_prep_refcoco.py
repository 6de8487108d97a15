"""from-refcoco -> convert -> validate on a COCO-style refs/instances set (and images) built here."""

from __future__ import annotations

import json
import pickle

import pytest
from PIL import Image

from data_tools.cli import main
from data_tools.refcoco import coco_to_xyxy
from data_tools.validate import parse_answer_boxes, validate_file
from rexthinker_rl.data.dataset import boxes_to_original, read_rows

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
IMAGES = [  # (id, width, height); sizes near the default pixel bounds' frame, so resizing moves boxes by little
    (100, 200, 150),
    (101, 320, 240),
    (102, 150, 200),
]
ANNOTATIONS = [  # (id, image, category, [x, y, w, h])
    (1, 100, 1, [10.5, 20.25, 40.0, 80.75]),
    (2, 100, 1, [60.0, 22.0, 41.5, 79.0]),
    (3, 100, 18, [120.0, 90.0, 60.0, 40.0]),
    (4, 101, 1, [5.0, 5.0, 30.0, 60.0]),
    (5, 101, 18, [200.2, 150.7, 119.9, 89.6]),  # reaches 0.3 px past the right edge: clipped
    (6, 101, 18, [100.0, 100.0, 50.0, 40.0]),
    (7, 101, 18, [102.0, 101.0, 50.0, 40.0]),  # a near-duplicate of 6
    (8, 102, 1, [30.0, 40.0, 50.0, 100.0]),
]
REFS = [  # (ref id, image, annotation, split, sentences)
    (10, 100, 1, "train", ["the man on the left", "left person"]),
    (11, 100, 2, "train", ["man on right"]),
    (12, 100, 3, "val", ["the dog"]),
    (13, 101, 5, "train", ["dog bottom right", "the big dog", "rightmost dog"]),
    (14, 101, 7, "train", ["dog in the middle slightly right"]),
    (15, 102, 8, "testA", ["the only person"]),
]
NUM_TRAIN_SENTENCES = 7


def write_coco(root) -> dict:
    """refs(unc).p, instances.json and images/ under ``root``; returns their paths."""
    images = root / "images"
    images.mkdir()
    for image_id, width, height in IMAGES:
        Image.new("RGB", (width, height), (image_id, 80, 160)).save(images / f"COCO_train2014_{image_id:012d}.jpg")
    category_of = {ann_id: category for ann_id, _, category, _ in ANNOTATIONS}
    instances = {
        "images": [
            {"id": i, "width": w, "height": h, "file_name": f"COCO_train2014_{i:012d}.jpg"} for i, w, h in IMAGES
        ],
        "annotations": [
            {"id": a, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for a, i, c, b in ANNOTATIONS
        ],
        "categories": CATEGORIES,
    }
    refs, sent_id = [], 0
    for ref_id, image_id, ann_id, split, sentences in REFS:
        sents = []
        for text in sentences:
            sents.append({"tokens": text.split(), "raw": text.upper(), "sent_id": sent_id, "sent": text})
            sent_id += 1
        refs.append(
            {
                "ref_id": ref_id,
                "image_id": image_id,
                "ann_id": ann_id,
                "category_id": category_of[ann_id],
                "split": split,
                "sentences": sents,
                "sent_ids": [s["sent_id"] for s in sents],
                "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
            }
        )
    (root / "instances.json").write_text(json.dumps(instances))
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))  # as the original (Python 2) files
    return {"refs": root / "refs(unc).p", "instances": root / "instances.json", "images": images}


@pytest.fixture()
def coco(tmp_path):
    return write_coco(tmp_path)


def from_refcoco(coco, out, *extra) -> int:
    args = ["from-refcoco", "--refs", str(coco["refs"]), "--instances", str(coco["instances"])]
    return main([*args, "--image-root", str(coco["images"]), "--out", str(out), *extra])


def test_refcoco_to_parquet_end_to_end(coco, tmp_path, capsys):
    anno, parquet = tmp_path / "train.json", tmp_path / "train.parquet"
    assert from_refcoco(coco, anno, "--split", "train") == 0
    assert "7 records" in capsys.readouterr().out
    records = json.loads(anno.read_text())
    assert len(records) == NUM_TRAIN_SENTENCES
    assert main(["convert", "--anno", str(anno), "--image-root", str(coco["images"]), "--out", str(parquet)]) == 0
    assert "wrote 7 rows" in capsys.readouterr().out
    assert validate_file(parquet).ok

    rows = list(read_rows(parquet).iter_rows())
    assert len(rows) == NUM_TRAIN_SENTENCES
    assert len({row["id"] for row in rows}) == NUM_TRAIN_SENTENCES
    sentences = [s for _, _, _, split, texts in REFS if split == "train" for s in texts]
    assert sorted(row["referring"] for row in rows) == sorted(sentences)
    annotation = {a: (i, c, b) for a, i, c, b in ANNOTATIONS}
    size = {i: (w, h) for i, w, h in IMAGES}
    ref_of_sentence = {s: ref for ref in REFS for s in ref[4]}
    for row in rows:
        ref_id, image_id, ann_id, _, _ = ref_of_sentence[row["referring"]]
        hints = json.loads(row["hints"])
        answers = parse_answer_boxes(row["answer"])
        assert list(hints) == [row["category"]]
        assert all(box in hints[row["category"]] for box in answers) and len(answers) == 1
        # every instance of the category in the image is a hint (6 and 7 stay two boxes)
        same_category = [a for a, (i, c, _) in annotation.items() if i == image_id and c == annotation[ann_id][1]]
        assert len(hints[row["category"]]) == len(same_category)
        # the resized box maps back onto the annotated (clipped) box within one pixel
        original = coco_to_xyxy(annotation[ann_id][2], *size[image_id])
        back = boxes_to_original(answers, row["image_size"], row["resized_size"])[0]
        assert max(abs(a - b) for a, b in zip(back, original, strict=True)) <= 1.0
        assert row["image_size"] == list(size[image_id]) and row["id"].startswith(f"ref{ref_id}-sent")


def test_clipping_and_candidates_in_original_pixels(coco, tmp_path):
    anno = tmp_path / "train.json"
    assert from_refcoco(coco, anno) == 0
    record = next(r for r in json.loads(anno.read_text()) if r["referring"] == "the big dog")
    assert record["answer_boxes"] == [[200.2, 150.7, 320, 240]]
    assert sorted(c["bbox"] for c in record["candidate_boxes"]) == sorted(
        [[200.2, 150.7, 320, 240], [100.0, 100.0, 150.0, 140.0], [102.0, 101.0, 152.0, 141.0]]
    )
    assert {c["category"] for c in record["candidate_boxes"]} == {"dog"}


def test_max_per_image_is_seeded(coco, tmp_path, capsys):
    outputs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert from_refcoco(coco, tmp_path / f"{name}.json", "--max-per-image", "2", "--seed", str(seed)) == 0
        outputs.append((tmp_path / f"{name}.json").read_text())
    assert outputs[0] == outputs[1]
    records = json.loads(outputs[0])
    per_image = {}
    for record in records:
        per_image[record["image_name"]] = per_image.get(record["image_name"], 0) + 1
    assert max(per_image.values()) == 2 and len(records) == 4  # 3 sentences on image 100, 4 on image 101
    assert "(3 sentences over --max-per-image left out)" in capsys.readouterr().out


def test_limit_is_a_seeded_subset(coco, tmp_path, capsys):
    assert from_refcoco(coco, tmp_path / "all.json") == 0
    everything = [json.dumps(record, sort_keys=True) for record in json.loads((tmp_path / "all.json").read_text())]
    outputs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 5)):
        assert from_refcoco(coco, tmp_path / f"{name}.json", "--limit", "4", "--seed", str(seed)) == 0
        outputs.append([json.dumps(r, sort_keys=True) for r in json.loads((tmp_path / f"{name}.json").read_text())])
    assert outputs[0] == outputs[1] and len(outputs[0]) == 4
    assert set(outputs[0]) <= set(everything)  # the very records the same seed writes without --limit
    ids = [[json.loads(record)["id"] for record in output] for output in outputs]
    assert set(ids[2]) <= {json.loads(record)["id"] for record in everything} and ids[0] != ids[2]  # the seed decides
    assert "3 records over --limit" in capsys.readouterr().out


def test_unknown_split_and_missing_images(coco, tmp_path, capsys):
    assert from_refcoco(coco, tmp_path / "x.json", "--split", "testC") == 2
    assert "no refs in split 'testC'; this refs file has splits testA, train, val" in capsys.readouterr().err
    (coco["images"] / "COCO_train2014_000000000101.jpg").unlink()
    assert from_refcoco(coco, tmp_path / "y.json") == 0
    out = capsys.readouterr().out
    assert "missing image: COCO_train2014_000000000101.jpg" in out and "1 images missing" in out
