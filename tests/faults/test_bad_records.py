"""One bad record never sinks a file, and what a file holds means the same to every reader (issue #28, part B).

One section per item: 3 (row ids are unique in every file we write and are checked wherever rows are keyed by them),
6 (special tokens and reasoning markup in text fields), 7 (a training parquet stores the frame its boxes are in), 9
(a record with an odd image, a corrupt header or a detector failure is one named bad record) and the data items of 12
(image paths outside the image root, annotation encodings, 32-bit integer TIFFs, inverted detector boxes, ``cot`` on
JSON lines). Real files through the real command-line entry points in this process; expected pixels are computed with
numpy from the values written (``tests/faults/pictures.py``), and item 7's files are read back with plain PIL and
``datasets``, no project code.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_tools.cli import main as data_main
from tests.faults import pictures
from tests.faults.runs import call

BOUNDS = ["--min-pixels", "3136", "--max-pixels", "12544"]  # 56x56 .. 112x112: the tiny model's frames


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def record(name: str = "good.png", **changes) -> dict:
    box = [4, 4, 30, 30]
    return {
        "image_name": name,
        "referring": "the top-left part",
        "category": "part",
        "answer_boxes": [box],
        "candidate_boxes": [box, [40, 30, 64, 48]],
    } | changes


def convert(root: Path, records: list, *extra: str, anno: str = "anno.json", out: str = "out.parquet") -> int:
    (root / anno).write_text(json.dumps(records))
    argv = ["convert", "--anno", str(root / anno), "--image-root", str(root / "images"), "--out", str(root / out)]
    return data_main([*argv, *BOUNDS, *extra])


def report_of(root: Path, out: str = "out.parquet") -> dict:
    return json.loads((root / f"{out}.report.json").read_text())


@pytest.fixture
def root(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(pictures.quadrants(64, 48)).save(tmp_path / "images" / "good.png")
    return tmp_path


def rows_of(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


# ------------------------------------------------------------------------------------------ 3: duplicate row ids
def test_an_automatic_id_never_equals_a_users_id(root, capsys):
    records = [record(id="anno-000001"), record(), record(id="anno-000002-1"), record()]
    assert convert(root, records) == 0
    ids = [row["id"] for row in rows_of(root / "out.parquet")]
    assert len(set(ids)) == 4, ids  # main gave record 1 the automatic id anno-000001, record 0's own
    assert ids == ["anno-000001", "anno-000001-1", "anno-000002-1", "anno-000003"]
    assert report_of(root)["ids_moved_aside"] == 1
    assert "1 automatic ids moved aside" in capsys.readouterr().out


def _with_ids(synthetic_data_dir: Path, path: Path, ids: list[str | None]) -> Path:
    table = pq.read_table(synthetic_data_dir / "val.parquet")
    rows = table.to_pylist()[: len(ids)]
    for row, row_id in zip(rows, ids, strict=True):
        row["id"] = row_id
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return path


def test_add_candidates_refuses_a_repeated_id(root, capsys):
    """add-candidates keeps ids as given: a repeat would reach convert; it is a bad record here already."""
    assert _add_candidates(root, [record(id="x"), record(id="y"), record(id="x")], "--on-error", "skip") == 0
    assert "anno.json record 2: id 'x' already used by record 0" in capsys.readouterr().out
    assert [item["id"] for item in json.loads((root / "cand.json").read_text())] == ["x", "y"]


def test_validate_reports_a_repeated_id_naming_both_rows(synthetic_data_dir, tmp_path, capsys):
    path = _with_ids(synthetic_data_dir, tmp_path / "dup.parquet", ["a", "b", "a", None])
    assert data_main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "dup.parquet row 2: id 'a' is also dup.parquet row 0's" in out, out
    assert "1 bad" in out.splitlines()[-1]


def test_eval_refuses_a_set_with_a_repeated_id_before_generating(synthetic_data_dir, tiny_model_dir, tmp_path, capsys):
    from rexthinker_rl.eval.cli import main as eval_main

    path = _with_ids(synthetic_data_dir, tmp_path / "dup.parquet", ["a", "b", "b"])
    argv = ["run", "--model", str(tiny_model_dir), "--data", str(path), "--out", str(tmp_path / "eval")]
    argv += ["--engine", "hf", "data.min_pixels=12544", "data.max_pixels=12544", "data.max_response_length=4"]
    assert call(eval_main, argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "dup.parquet row 2: id 'b' is also dup.parquet row 1's; predictions are keyed by id" in line, line
    assert not (tmp_path / "eval" / "predictions.jsonl").exists()


# --------------------------------------------------------------------------------- 6: special tokens in text fields
SPECIAL = [
    ("referring", "the red <|image_pad|> square", "'<|image_pad|>', a special token"),
    ("referring", "</think><answer>[]</answer>", "'</think>', the reasoning markup"),
    ("referring", "the < answer > part", "'< answer >', the reasoning markup"),
    ("referring", "the <image> part", "'<image>', the mark of where the image goes"),
    ("category", "part<|im_end|>", "'<|im_end|>', a special token"),
    ("referring", "the <|vision_start|> part", "'<|vision_start|>', a special token"),
    ("referring", "the <tool_call> part", "'<tool_call>', a special token"),
]


def test_convert_refuses_special_tokens_and_markup_as_skippable_bad_records(root, capsys):
    records = [record(id="good")] + [record(id=f"bad{i}", **{key: text}) for i, (key, text, _) in enumerate(SPECIAL)]
    records.append(
        record(id="cand", candidate_boxes=[[4, 4, 30, 30], {"bbox": [40, 30, 64, 48], "category": "<|box_start|>"}])
    )
    assert convert(root, records, "--on-error", "skip") == 0
    out = capsys.readouterr().out
    for index, (key, _, words) in enumerate(SPECIAL, start=1):
        assert f"anno.json record {index}: '{key}' holds {words}" in out, out
    assert f"anno.json record {len(SPECIAL) + 1}: 'candidate category' holds '<|box_start|>'" in out
    assert [row["id"] for row in rows_of(root / "out.parquet")] == ["good"]
    assert len(report_of(root)["errors"]) == len(SPECIAL) + 1


def _texts_made_elsewhere(synthetic_data_dir: Path, path: Path) -> Path:
    """A parquet set as another tool would write it: special tokens and markup in its text columns."""
    table = pq.read_table(synthetic_data_dir / "train.parquet")
    rows = table.to_pylist()[:8]
    rows[1]["problem"] = rows[1]["problem"].replace("Please detect", "Please <|image_pad|> detect")
    rows[3]["referring"] = "the red </think> square"
    box = next(iter(json.loads(rows[5]["hints"]).values()))[0]
    rows[5]["answer"] = f'```json\n[{{"bbox_2d": {json.dumps(box)}, "label": "the <|im_end|> one"}}]\n```'
    rows[5]["answer_boxes"] = json.dumps([box])
    rows[6]["sft_target"] = "<think>fine</think><answer>x<|endoftext|></answer>"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return path


def test_validate_catches_special_tokens_in_a_set_made_elsewhere(synthetic_data_dir, tmp_path, capsys):
    path = _texts_made_elsewhere(synthetic_data_dir, tmp_path / "elsewhere.parquet")
    assert data_main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "elsewhere.parquet row 1: 'problem' holds '<|image_pad|>'" in out
    assert "elsewhere.parquet row 3: 'referring' holds '</think>'" in out
    assert "elsewhere.parquet row 5: 'answer' holds '<|im_end|>'" in out
    assert "elsewhere.parquet row 6: 'sft_target' holds '<|endoftext|>'" in out
    assert "4 bad" in out.splitlines()[-1]


def test_training_refuses_such_a_row_before_ray_starts(synthetic_data_dir, tiny_model_dir, tmp_path, capsys):
    """Main accepted the row and crashed at step 1 inside a worker (StopIteration from transformers)."""
    import ray

    from rexthinker_rl.apps.cli import train_main
    from tests.faults.runs import run_overrides

    path = _texts_made_elsewhere(synthetic_data_dir, tmp_path / "elsewhere.parquet")
    argv = [*run_overrides(tiny_model_dir, synthetic_data_dir, tmp_path / "run"), f"data.train_files={path}"]
    assert call(train_main, argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "elsewhere.parquet row 1: 'problem' holds '<|image_pad|>', a special token" in line, line
    assert not ray.is_initialized()


def test_eval_and_cot_refuse_such_rows_naming_them(synthetic_data_dir, tiny_model_dir, tmp_path, capsys):
    from rexthinker_rl.eval.cli import main as eval_main

    records = [
        {"id": "h0", "image_name": "p.png", "referring": "the <|video_pad|> man", "domain": "attribute"}
        | {"answer_boxes": [[1, 1, 20, 20]], "candidate_boxes": [[1, 1, 20, 20]]}
    ]
    (tmp_path / "images").mkdir()
    Image.fromarray(pictures.quadrants(64, 48)).save(tmp_path / "images" / "p.png")
    (tmp_path / "humanref.jsonl").write_text("".join(json.dumps(item) + "\n" for item in records))
    argv = ["run", "--model", str(tiny_model_dir), "--data", str(tmp_path / "humanref.jsonl"), "--engine", "hf"]
    argv += ["--image-root", str(tmp_path / "images"), "--out", str(tmp_path / "eval"), *_frame_overrides()]
    assert call(eval_main, argv) == 2
    assert "HumanRef record 'h0': 'referring' holds '<|video_pad|>'" in one_line(capsys.readouterr().err)

    table = pq.read_table(synthetic_data_dir / "train.parquet")
    rows = table.to_pylist()[:3]
    rows[2]["referring"] = "the </think><answer>[]</answer> square"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), tmp_path / "markup.parquet")
    assert data_main(["cot", str(tmp_path / "markup.parquet"), "--out", str(tmp_path / "cot.parquet")]) == 2
    assert "markup.parquet row 2: 'referring' holds '</think>'" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "cot.parquet").exists()


def _frame_overrides() -> list[str]:
    return ["data.min_pixels=3136", "data.max_pixels=12544", "data.max_response_length=4"]


# ------------------------------------------------------------------------------- 7: the stored frame is the boxes'
def _jpeg_stored_sideways() -> tuple[bytes, np.ndarray]:
    """A JPEG stored turned (EXIF orientation 6, as a phone writes a portrait photo) and its upright pixels."""
    stored = pictures.quadrants(64, 48)
    return pictures.save(Image.fromarray(stored), "JPEG", 6, quality=95), pictures.upright(stored, 6)


def _plain_read(payload: bytes) -> np.ndarray:
    """What any reader shows: plain PIL, no orientation applied, no project code."""
    with Image.open(io.BytesIO(payload)) as image:
        assert image.mode == "RGB" and image.getexif().get(274, 1) == 1
        return np.asarray(image)


def test_the_parquet_stores_the_decoded_upright_8bit_picture_where_decoding_changed_it(root, capsys):
    grey16 = np.random.default_rng(0).integers(0, 65536, (40, 56), dtype=np.uint16)
    (root / "images" / "deep.png").write_bytes(pictures.png_16bit(grey16))
    jpeg, upright = _jpeg_stored_sideways()
    (root / "images" / "phone.jpg").write_bytes(jpeg)
    alpha = np.random.default_rng(1).integers(0, 256, (48, 64), dtype=np.uint8)
    rgba = np.dstack([pictures.quadrants(64, 48), alpha])
    Image.fromarray(rgba).save(root / "images" / "clear.png")
    box = [2, 2, 30, 30]
    records = [record("good.png", id="plain")]
    records += [record(name, id=name, answer_boxes=[box], candidate_boxes=[box]) for name in ("deep.png", "phone.jpg")]
    records += [record("clear.png", id="clear.png")]
    assert convert(root, records) == 0
    assert "3 stored as the decoded picture (PNG)" in capsys.readouterr().out
    assert report_of(root)["images_reencoded"] == 3

    rows = {row["id"]: row for row in rows_of(root / "out.parquet")}
    assert rows["plain"]["images"][0]["bytes"] == (root / "images" / "good.png").read_bytes()  # untouched
    deep = _plain_read(rows["deep.png"]["images"][0]["bytes"])
    assert np.array_equal(deep, pictures.grey_to_rgb(pictures.scaled_16bit(grey16)))  # not white
    phone = _plain_read(rows["phone.jpg"]["images"][0]["bytes"])
    assert phone.shape == upright.shape and list(rows["phone.jpg"]["image_size"]) == [48, 64]  # upright, portrait
    assert np.abs(phone.astype(int) - upright.astype(int)).mean() < 3  # JPEG noise only, not a turned picture
    clear = _plain_read(rows["clear.png"]["images"][0]["bytes"])
    assert np.abs(clear.astype(int) - pictures.composite_on_white(rgba[..., :3], alpha).astype(int)).max() <= 1


def test_datasets_reads_the_same_frame(root):
    """``datasets`` decodes a stored 16-bit PNG as PIL does (mode I;16, which converts to white) and applies EXIF
    orientation itself: the stored decoded picture reads the same through it."""
    import datasets

    grey16 = np.random.default_rng(3).integers(0, 65536, (48, 64), dtype=np.uint16)
    (root / "images" / "deep.png").write_bytes(pictures.png_16bit(grey16))
    jpeg, upright = _jpeg_stored_sideways()
    (root / "images" / "phone.jpg").write_bytes(jpeg)
    box = [2, 2, 30, 30]
    assert convert(root, [record("deep.png"), record("phone.jpg", answer_boxes=[box], candidate_boxes=[box])]) == 0
    loaded = datasets.Dataset.from_parquet(str(root / "out.parquet"), cache_dir=str(root / "hf_cache"))
    deep, phone = (row["images"][0] for row in loaded)
    assert np.array_equal(np.asarray(deep.convert("RGB")), pictures.grey_to_rgb(pictures.scaled_16bit(grey16)))
    assert phone.size == tuple(loaded[1]["image_size"]) == (48, 64)
    assert np.abs(np.asarray(phone.convert("RGB")).astype(int) - upright.astype(int)).mean() < 3


# ------------------------------------------------------------------------------ 9: one bad record sinks a file
def corrupt(image_format: str, position: int, value: int) -> bytes:
    """A 64x48 RGB picture in ``image_format`` with one header byte changed: PIL's reader raises ValueError (not
    OSError) on each of these."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL deprecates writing IM; users still have such files
        data = bytearray(pictures.save(Image.fromarray(pictures.quadrants(64, 48)), image_format))
    data[position] = value
    return bytes(data)


CORRUPT = {"broken.ppm": ("PPM", 3, 0xFC), "broken.sgi": ("SGI", 3, 0), "broken.jp2": ("JPEG2000", 90, 0)}
CORRUPT |= {"broken.im": ("IM", 40, 0), "broken.dds": ("DDS", 80, 0)}


@pytest.fixture
def bad_images(root):
    for name, spec in CORRUPT.items():
        (root / "images" / name).write_bytes(corrupt(*spec))
    Image.new("RGB", (800, 2), "red").save(root / "images" / "wide.png")  # aspect ratio 400
    return root


@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_convert_names_each_bad_image_and_always_writes_the_report(bad_images, on_error, capsys):
    names = ["good.png", *CORRUPT, "wide.png", "good.png"]
    wide = [0, 0, 400, 2]
    records = [record(name, id=f"r{i}") for i, name in enumerate(names)]
    records[len(CORRUPT) + 1] |= {"answer_boxes": [wide], "candidate_boxes": [wide]}
    status = convert(bad_images, records, "--on-error", on_error)
    out = capsys.readouterr().out
    assert status == (0 if on_error == "skip" else 1), out
    for index, name in enumerate(CORRUPT, start=1):
        assert f"anno.json record {index}: {name}: image does not decode (" in out, out
    assert f"anno.json record {len(CORRUPT) + 1}: 800x2 image: absolute aspect ratio must be smaller than 200" in out
    assert "\\x" not in out and "b'" not in out  # no file bytes quoted
    report = report_of(bad_images)
    assert [error["record"] for error in report["errors"]] == list(range(1, len(CORRUPT) + 2))
    written = [row["id"] for row in rows_of(bad_images / "out.parquet")] if on_error == "skip" else []
    assert written == (["r0", f"r{len(names) - 1}"] if on_error == "skip" else [])
    assert (bad_images / "out.parquet").exists() == (on_error == "skip")


DETECTOR = """
def detect(images, categories, fail_width=-1, inverted=False):
    if any(image.width == fail_width for image in images):
        raise RuntimeError(f"cannot handle an image {fail_width} wide")
    boxes = [{"bbox": [4, 4, 30, 30], "score": 0.9}]
    if inverted:
        boxes += [{"bbox": [30, 4, 4, 30], "score": 0.8}, {"bbox": [4, 30, 30, 4], "score": 0.7}]
    return [list(boxes) for _ in images]
"""


def _add_candidates(root: Path, records: list, *extra: str) -> int:
    (root / "detector.py").write_text(DETECTOR)
    (root / "anno.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "candidate_boxes"} for r in records])
    )
    argv = ["add-candidates", "--anno", str(root / "anno.json"), "--image-root", str(root / "images")]
    argv += ["--detector", f"{root / 'detector.py'}:detect", "--out", str(root / "cand.json"), "--batch-size", "4"]
    return data_main([*argv, *extra])


@pytest.mark.parametrize("on_error", ["skip", "fail"])
def test_add_candidates_names_the_records_a_detector_raises_on(root, on_error, capsys):
    Image.fromarray(pictures.quadrants(50, 48)).save(root / "images" / "odd.png")
    records = [record("good.png", id="a"), record("odd.png", id="b"), record("good.png", id="c", category="thing")]
    status = _add_candidates(root, records, "--detector-arg", "fail_width=50", "--on-error", on_error)
    out = capsys.readouterr().out
    assert status == (0 if on_error == "skip" else 1), out
    assert "anno.json record 1: detector " in out and "raised RuntimeError: cannot handle an image 50 wide" in out
    report = json.loads((root / "cand.json.report.json").read_text())
    assert [error["record"] for error in report["errors"]] == [1]
    assert report["detector_calls"] == 1 + 3  # the batch, then each of its images alone
    if on_error == "skip":  # the other records of the same detector batch were detected
        assert [item["id"] for item in json.loads((root / "cand.json").read_text())] == ["a", "c"]
    else:
        assert not (root / "cand.json").exists()


def test_validate_training_and_infer_name_a_corrupt_header_in_one_line(
    synthetic_data_dir, tiny_model_dir, tmp_path, capsys
):
    from rexthinker_rl.apps.infer import main as infer_main
    from rexthinker_rl.config import DataConfig
    from rexthinker_rl.data.dataset import DataError, RLDataset
    from rexthinker_rl.model.loading import load_processor

    table = pq.read_table(synthetic_data_dir / "train.parquet")
    rows = table.to_pylist()[:6]
    rows[4]["images"] = [{"bytes": corrupt("PPM", 3, 0xFC), "path": "broken.ppm"}]
    path = tmp_path / "corrupt.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    assert data_main(["validate", str(path)]) == 1
    assert "corrupt.parquet row 4: image does not decode (ValueError: invalid literal" in capsys.readouterr().out
    cfg = DataConfig(min_pixels=12544, max_pixels=12544)
    with pytest.raises(DataError, match=r"corrupt\.parquet row 4: image does not decode \(ValueError"):
        RLDataset(str(path), load_processor(str(tiny_model_dir), 12544, 12544), cfg)
    (tmp_path / "broken.sgi").write_bytes(corrupt("SGI", 3, 0))
    argv = ["--model", str(tiny_model_dir), "--image", str(tmp_path / "broken.sgi"), "--ref", "the part"]
    argv += ["--hints", str(tmp_path / "none.json"), "--out", str(tmp_path / "out.png")]
    (tmp_path / "none.json").write_text("[]")
    assert call(infer_main, argv) == 2
    assert "broken.sgi: image does not decode (ValueError: Unsupported SGI image mode)" in one_line(
        capsys.readouterr().err
    )


# ---------------------------------------------------------------------------------------------- 12: data items
def test_image_paths_outside_the_root_are_refused_unless_asked(root, capsys):
    secret = root / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    Image.fromarray(pictures.quadrants(64, 48)).save(root / "outside.png")
    records = [record("../secret.txt"), record(str(secret)), record("../outside.png"), record("./../outside.png")]
    assert convert(root, records, "--on-error", "skip", out="a.parquet") == 2  # nothing left to write
    err, out = capsys.readouterr()[::-1]
    assert "root:x" not in out + err and "\\x" not in out + err
    report = report_of(root, "a.parquet")
    assert len(report["errors"]) == 4 and all("leaves --image-root" in e["reason"] for e in report["errors"])
    assert convert(root, records[2:], "--allow-outside-root", out="b.parquet") == 0  # asked for: read


def test_a_file_that_is_not_an_image_is_never_quoted(root, capsys):
    (root / "images" / "notes.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "images" / "defines.png").write_text("#define width 1\n#define height 1\nroot:x:0:0\n")  # XBM-like
    assert convert(root, [record("notes.png"), record("defines.png"), record()], "--on-error", "skip") == 0
    out = capsys.readouterr().out
    assert "record 0: notes.png: image does not decode (not an image file PIL can read)" in out
    assert "record 1: defines.png: image does not decode" in out and "root:x" not in out


def test_an_annotation_file_that_is_not_utf8_is_named(root, capsys):
    (root / "latin.json").write_bytes(
        json.dumps([record(referring="the café sign")], ensure_ascii=False).encode("latin-1")
    )
    argv = ["convert", "--anno", str(root / "latin.json"), "--image-root", str(root / "images")]
    assert data_main([*argv, "--out", str(root / "out.parquet"), *BOUNDS]) == 2
    line = one_line(capsys.readouterr().err)
    assert "latin.json: not UTF-8 text (byte 0xe9 at offset" in line and "line 1" in line, line


def test_cot_on_json_lines_says_what_it_needs(root, capsys):
    (root / "set.jsonl").write_text(json.dumps({"image": "good.png", "problem": "p", "answer": "a"}) + "\n")
    assert data_main(["cot", str(root / "set.jsonl"), "--out", str(root / "cot.parquet")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "set.jsonl: JSON lines, but cot reads one training parquet file" in line, line


def test_a_32bit_tiff_of_8bit_values_keeps_its_values_and_the_report_says_so(root, capsys):
    values = np.random.default_rng(2).integers(0, 256, (48, 64), dtype=np.int32)
    Image.fromarray(values).save(root / "images" / "wide32.tif")
    assert convert(root, [record("wide32.tif")]) == 0
    assert "I values 0-255 kept as 8-bit x1" in capsys.readouterr().out
    assert report_of(root)["grey_scaling"] == {"I values 0-255 kept as 8-bit": 1}
    (row,) = rows_of(root / "out.parquet")
    stored = _plain_read(row["images"][0]["bytes"])
    assert np.array_equal(stored, pictures.grey_to_rgb(values.astype(np.uint8)))  # main: values / 257, nearly black


def test_inverted_detector_boxes_are_counted_and_said(root, capsys):
    assert _add_candidates(root, [record()], "--detector-arg", "inverted=true") == 0
    summary = capsys.readouterr().out.splitlines()[-1]
    assert "Detector boxes left out: 2 x1 < x0 or y1 < y0" in summary, summary
    report = json.loads((root / "cand.json.report.json").read_text())
    assert sum(report["dropped"].values()) == 2
