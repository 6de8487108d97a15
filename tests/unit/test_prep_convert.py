"""data_tools.convert: bad records by index and reason, skip/fail, GT exact after rounding, sharding, determinism."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_tools.cli import main
from data_tools.convert import ConvertOptions, convert_file
from data_tools.validate import parse_answer_boxes, validate_file
from rexthinker_rl.data.dataset import read_rows

TINY = ["--min-pixels", "12544", "--max-pixels", "12544"]  # every square image becomes 112x112


def good(name="a.png", **changes) -> dict:
    record = {
        "image_name": name,
        "referring": "the red cat",
        "category": "cat",
        "answer_boxes": [[20, 20, 60, 60]],
        "candidate_boxes": [{"bbox": [20, 20, 60, 60], "score": 0.9}, {"bbox": [100, 100, 150, 140]}],
    }
    return record | changes


# (record, expected reason) for every class of bad record; the good ones have reason None.
CASES = [
    (good(id="keep-0"), None),
    (good("missing.png"), "image file 'missing.png' not found under"),
    (good("broken.png"), "image does not decode"),
    (good(answer_boxes=[[20, 20, 230, 60]]), "answer box [20, 20, 230, 60] lies outside the 224x224 image"),
    (good(answer_boxes=[[60, 20, 20, 60]]), "has x1 <= x0 or y1 <= y0"),
    (good(catgory="cat"), "unknown field 'catgory' (known fields: "),
    (
        {"image_name": "a.png", "referring": "cat", "category": "cat", "ans": [100, 100, 150, 140], "id": "keep-6"},
        "no 'candidate_boxes'",
    ),
    (good(answer_boxes=[[21, 20, 60, 60]]), "answer box [21, 20, 60, 60] is not exactly one of the 'cat' candidate"),
    (good(id="keep-0"), "id 'keep-0' already used by record 0"),
    (good(answer_boxes=[], id="keep-9"), None),
    (good(referring=""), "'referring' must be a non-empty string"),
]


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (224, 224), (30, 60, 90)).save(folder / "a.png")
    Image.new("RGB", (1000, 1000), (90, 60, 30)).save(folder / "big.png")
    (folder / "broken.png").write_bytes((folder / "a.png").read_bytes()[:60])  # truncated PNG
    return folder


def write_anno(tmp_path, records, name="anno.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def convert(anno, images, out, *extra) -> int:
    return main(["convert", "--anno", str(anno), "--image-root", str(images), "--out", str(out), *TINY, *extra])


def test_every_bad_record_is_reported_and_fail_writes_nothing(tmp_path, images, capsys):
    anno = write_anno(tmp_path, [record for record, _ in CASES])
    out = tmp_path / "out.parquet"
    assert convert(anno, images, out) == 1
    printed = capsys.readouterr().out.splitlines()
    bad = [(index, reason) for index, (_, reason) in enumerate(CASES) if reason]
    for index, reason in bad:
        assert any(line.startswith(f"anno.json record {index}: ") and reason in line for line in printed), reason
    assert f"{len(CASES)} records, {len(bad)} bad" in printed[-1] and "wrote nothing" in printed[-1]
    assert not out.exists()
    report = json.loads((tmp_path / "out.parquet.report.json").read_text())
    assert [error["record"] for error in report["errors"]] == [index for index, _ in bad]


def test_skip_writes_the_good_rows(tmp_path, images, capsys):
    anno = write_anno(tmp_path, [record for record, _ in CASES])
    out = tmp_path / "out.parquet"
    assert convert(anno, images, out, "--on-error", "skip") == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert "wrote 2 rows" in summary and "9 bad" in summary
    rows = list(read_rows(out).iter_rows())
    assert [row["id"] for row in rows] == ["keep-0", "keep-9"]
    assert rows[1]["answer"] == "There is no such thing in the image."
    assert rows[0]["hints"] == json.dumps({"cat": [[10, 10, 30, 30], [50, 50, 75, 70]]})  # 224 -> 112: halved
    assert validate_file(out, min_pixels=12544, max_pixels=12544).ok


def test_rounding_keeps_gt_exact_merges_and_drops_tiny_candidates(tmp_path, images, capsys):
    # 1000 -> 112 pixels: both candidates round to [11, 11, 22, 22]; the ground truth is the second one.
    record = {
        "image_name": "big.png",
        "referring": "the second dog",
        "category": "dog",
        "answer_boxes": [[100.4, 100.4, 200.4, 200.4]],
        "candidate_boxes": [[100, 100, 200, 200], [100.4, 100.4, 200.4, 200.4], [500, 500, 502, 502]],
    }
    tiny_gt = record | {"answer_boxes": [[500, 500, 502, 502]], "id": "tiny"}
    anno = write_anno(tmp_path, [record, tiny_gt])
    out = tmp_path / "out.parquet"
    assert convert(anno, images, out, "--on-error", "skip") == 0
    printed = capsys.readouterr().out
    assert "anno.json record 1: answer box [500, 500, 502, 502] becomes [56, 56, 56, 56]" in printed
    assert "1 candidates merged by rounding, 1 too small for the resized frame" in printed
    (row,) = read_rows(out).iter_rows()
    assert json.loads(row["hints"]) == {"dog": [[11, 11, 22, 22]]}
    assert parse_answer_boxes(row["answer"]) == [[11, 11, 22, 22]]
    assert validate_file(out, min_pixels=12544, max_pixels=12544).ok


def test_gt_policy_at_convert_time(tmp_path, images, capsys):
    records = [good(answer_boxes=[[21, 20, 60, 60]], id="near"), good(answer_boxes=[[0, 0, 10, 10]], id="far")]
    anno = write_anno(tmp_path, records)
    out = tmp_path / "out.parquet"
    assert convert(anno, images, out, "--gt-policy", "snap") == 0
    assert "1 snapped (1 boxes), 1 inserted (1 boxes)" in capsys.readouterr().out
    rows = {row["id"]: row for row in read_rows(out).iter_rows()}
    assert parse_answer_boxes(rows["near"]["answer"]) == [[10, 10, 30, 30]]
    assert len(json.loads(rows["far"]["hints"])["cat"]) == 3
    assert validate_file(out, min_pixels=12544, max_pixels=12544).ok
    assert convert(anno, images, tmp_path / "d.parquet", "--gt-policy", "drop", "--on-error", "skip") == 2
    assert "no rows left to write" in capsys.readouterr().err


def test_output_is_deterministic_across_processes_and_shards(tmp_path, images):
    records = [good(id=f"r{i}", answer_boxes=[[20 + i, 20, 60, 60]]) for i in range(5)]
    anno = write_anno(tmp_path, records, "anno.jsonl")
    anno.write_text("".join(json.dumps(record) + "\n" for record in records))  # JSONL input
    options = ConvertOptions(image_root=str(images), min_pixels=12544, max_pixels=12544, gt_policy="insert")
    first = convert_file(anno, tmp_path / "one.parquet", options)
    again = convert_file(anno, tmp_path / "again.parquet", options)
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "again.parquet").read_bytes()
    sharded = convert_file(anno, tmp_path / "shards", options, num_proc=2, shard_size=2)
    assert first.written == again.written == sharded.written == 5 and sharded.shards == 3
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        f"part-{i:05d}-of-00003.parquet" for i in range(3)
    ]
    assert list(read_rows(tmp_path / "shards").iter_rows()) == list(read_rows(tmp_path / "one.parquet").iter_rows())
    assert validate_file(tmp_path / "shards", min_pixels=12544, max_pixels=12544).ok
    with pytest.raises(ValueError, match="names a folder of shards"):
        convert_file(anno, tmp_path / "x.parquet", options, shard_size=2)


def test_image_paths_instead_of_bytes(tmp_path, images):
    anno = write_anno(tmp_path, [good(id="p")])
    out = tmp_path / "sub" / "out.parquet"
    assert convert(anno, images, out, "--no-embed-images") == 0
    (image,) = pq.read_table(out).to_pylist()[0]["images"]
    assert image == {"bytes": None, "path": "../images/a.png"}
    assert validate_file(out, min_pixels=12544, max_pixels=12544).ok


def test_bounds_that_do_not_fit_the_image_are_bad_records(tmp_path, images, capsys):
    anno = write_anno(tmp_path, [good(id="x")])
    status = main(
        ["convert", "--anno", str(anno), "--image-root", str(images), "--out", str(tmp_path / "o.parquet")]
        + ["--min-pixels", "1000", "--max-pixels", "900"]
    )
    assert status == 2 and "need 0 < min <= max" in capsys.readouterr().err
