"""Nothing silent: a value the framework would change or ignore is converted correctly and counted, or stops with one
line naming it, before Ray starts. One section per item of issue #20 (2: reward selection, 3: image modes, 4: EXIF
orientation, 5: resume compatibility, 6: own-data conversion, 7: the smaller items); 1 is ``test_nothing_lost.py``,
8 and Ctrl-C ``test_ray_security.py``.

Real files, real models, real CLIs in this process. Expected pixels come from ``tests/faults/pictures.py``, computed
with numpy from the values written, not by the decoder under test.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import TINY_OVERRIDES
from tests.faults import pictures
from tests.faults.runs import call, run_overrides

FRAME = ["data.min_pixels=3136", "data.max_pixels=12544"]  # holds the small test pictures of any aspect


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def train_without_ray(argv: list[str], capsys) -> str:
    """``rexthinker-train`` in this process: exit status 2, one error line, and Ray never started."""
    import ray

    from rexthinker_rl.apps.cli import train_main

    status = call(train_main, argv)
    err = capsys.readouterr().err
    assert status == 2, err[-3000:]
    assert not ray.is_initialized()
    return one_error_line(err)


# ------------------------------------------------------------------------------------------- 2: reward selection
def test_reward_function_replaces_the_default_components():
    from rexthinker_rl.config import load_config
    from rexthinker_rl.train.rewarding import RewardRunner

    config = load_config(None, ["reward.function=rewards.rexthinker:rexthinker_reward"])
    assert config.reward.components == []
    assert RewardRunner(config.reward).spec == {"function": "rewards.rexthinker:rexthinker_reward", "kwargs": {}}


def test_reward_function_beside_other_components_is_an_error():
    from rexthinker_rl.config import ConfigError, load_config

    pair = ["reward.function=rewards.box:iou_f1", "reward.components=[{function: rewards.format:format_reward}]"]
    with pytest.raises(ConfigError, match=r"reward\.function=rewards\.box:iou_f1 and reward\.components are both set"):
        load_config(None, pair)


def test_a_reward_function_that_does_not_exist_stops_before_ray(tiny_model_dir, synthetic_data_dir, tmp_path, capsys):
    overrides = [o for o in run_overrides(tiny_model_dir, synthetic_data_dir, tmp_path) if not o.startswith("reward.")]
    line = train_without_ray([*overrides, "reward.function=nosuchmodule:fn"], capsys)
    assert "reward.function=nosuchmodule:fn" in line and "nosuchmodule" in line.split(": ", 2)[-1]


# ------------------------------------------------------------------------------------------------ 3: image modes
def _gradient(height: int = 6, width: int = 8) -> np.ndarray:
    return np.linspace(0, 65535, height * width).round().astype(np.uint16).reshape(height, width)


def _mode_cases() -> dict[str, tuple[bytes, np.ndarray, int]]:
    """name -> (file bytes, expected 8-bit RGB, tolerance in levels)."""
    grey16 = _gradient()
    rgb16 = np.stack([grey16, grey16[::-1], np.full_like(grey16, 32768)], axis=-1)
    grey8 = np.linspace(0, 255, 48).astype(np.uint8).reshape(6, 8)
    alpha = np.linspace(0, 255, 48).astype(np.uint8).reshape(6, 8)
    rgb = np.stack([grey8, 255 - grey8, np.full_like(grey8, 40)], axis=-1)
    floats = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    cmyk = np.stack([grey8, grey8 // 2, 255 - grey8, np.full_like(grey8, 30)], axis=-1)
    palette = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8) % 4, mode="P")
    colours = [(0, 0, 0), (250, 10, 10), (10, 250, 10), (10, 10, 250)]
    palette.putpalette([v for colour in colours for v in colour])
    indices = np.asarray(palette)
    palette_rgb = np.array(colours, np.uint8)[indices]
    palette_rgb[indices == 0] = 255  # index 0 is the transparent colour: white
    pgm = b"P5\n8 6\n65535\n" + grey16.astype(">u2").tobytes()
    return {
        "16-bit grey PNG (I;16)": (
            pictures.save(Image.fromarray(grey16), "PNG"),
            pictures.grey_to_rgb(pictures.scaled_16bit(grey16)),
            0,
        ),
        "16-bit RGB PNG": (pictures.png_16bit(rgb16), pictures.scaled_16bit(rgb16), 1),
        "16-bit PGM (I)": (pgm, pictures.grey_to_rgb(pictures.scaled_16bit(grey16)), 0),
        "float TIFF (F)": (
            pictures.save(Image.fromarray(floats), "TIFF"),
            pictures.grey_to_rgb(np.rint(floats.astype(np.float64) * 255).astype(np.uint8)),
            0,
        ),
        "RGBA PNG": (
            pictures.save(Image.fromarray(np.dstack([rgb, alpha])), "PNG"),
            pictures.composite_on_white(rgb, alpha),
            1,
        ),
        "LA PNG": (
            pictures.save(Image.fromarray(np.dstack([grey8, alpha])), "PNG"),
            pictures.composite_on_white(pictures.grey_to_rgb(grey8), alpha),
            1,
        ),
        "palette PNG with a transparent colour": (pictures.save(palette, "PNG", transparency=0), palette_rgb, 0),
        "CMYK TIFF": (
            pictures.save(Image.frombytes("CMYK", (8, 6), cmyk.tobytes()), "TIFF"),
            np.rint((255.0 - cmyk[..., :3]) * (255.0 - cmyk[..., 3:]) / 255.0).astype(np.uint8),
            1,
        ),
        "1-bit PNG": (
            pictures.save(Image.fromarray(grey8 > 127), "PNG"),
            pictures.grey_to_rgb(np.where(grey8 > 127, 255, 0).astype(np.uint8)),
            0,
        ),
    }


MODE_CASES = list(_mode_cases())


@pytest.mark.parametrize("case", MODE_CASES)
def test_every_mode_decodes_to_correct_8bit_rgb(case):
    from rexthinker_rl.data.dataset import decode_image

    payload, expected, tolerance = _mode_cases()[case]
    decoded = np.asarray(decode_image(payload, "photo"))
    assert decoded.dtype == np.uint8 and decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= tolerance, case


def _truncated_png() -> bytes:
    data = pictures.save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "PNG")
    return data[: len(data) // 2]


def _bomb_header() -> bytes:
    """A PNG claiming 20000 x 10000 pixels: over PIL's decompression-bomb limit."""
    return pictures.png_header_only(20000, 10000)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (lambda: b"GIF89a but not really" + bytes(range(40)), "not an image file PIL can read"),
        (lambda: pictures.save(Image.fromarray(np.full((4, 4), 2.5, np.float32)), "TIFF"), "outside 0..1"),
        (lambda: pictures.save(Image.fromarray(np.full((4, 4), 70000, np.int32)), "TIFF"), "outside 0..65535"),
        (_truncated_png, "does not decode"),
        (_bomb_header, "pixels"),
    ],
    ids=["garbage bytes", "float out of range", "32-bit out of range", "truncated", "decompression bomb"],
)
def test_a_picture_that_cannot_be_decoded_is_one_line_naming_it(payload, words):
    from rexthinker_rl.data.dataset import DataError, decode_image

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's own warnings must not reach the user either
        with pytest.raises(DataError) as info:
            decode_image(payload(), "train.parquet row 7")
    message = str(info.value)
    assert message.startswith("train.parquet row 7: ") and words in message and "\n" not in message, message
    assert "BytesIO" not in message and "0x" not in message


def test_a_12000x9000_photo_decodes_without_pil_warnings():
    from rexthinker_rl.data.dataset import decode_image, image_header_size

    big = pictures.save(Image.new("L", (12000, 9000), 90), "PNG", compress_level=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_header_size(big, "big.png") == (12000, 9000)
        assert decode_image(big, "big.png").getpixel((5, 5)) == (90, 90, 90)


# ---------------------------------------------------------------------------------------------- 4: EXIF orientation
@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])  # PIL's TIFF reader turns TIFFs itself; PNG's does not
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_to_pixels_and_header_size(orientation, image_format):
    from rexthinker_rl.data.dataset import decode_image, image_header_size

    stored = pictures.quadrants(40, 24)
    payload = pictures.save(Image.fromarray(stored), image_format, orientation)
    expected = pictures.upright(stored, orientation)
    assert np.array_equal(np.asarray(decode_image(payload, "p.png")), expected)
    assert image_header_size(payload, "p.png") == (expected.shape[1], expected.shape[0])
    assert np.array_equal(np.asarray(decode_image(payload, "p.png", apply_exif=False)), stored)  # the stored frame


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    """Three photos a user brings (16-bit grey, RGBA, JPEG-sized PNG stored sideways with EXIF 6), annotated in the
    upright frame, converted with the data CLI; and the pictures each must decode to."""
    from data_tools.cli import main as data_main

    root = tmp_path_factory.mktemp("photos")
    (root / "photos").mkdir()
    grey16 = (np.repeat(np.linspace(0, 65535, 48)[None], 36, axis=0)).round().astype(np.uint16)
    rgba = np.dstack([pictures.quadrants(48, 36), np.full((36, 48), 128, np.uint8)])
    stored = pictures.quadrants(48, 36)  # stored sideways: upright it is 36 wide, 48 high
    files = {
        "grey16.png": (
            pictures.save(Image.fromarray(grey16), "PNG"),
            pictures.grey_to_rgb(pictures.scaled_16bit(grey16)),
        ),
        "rgba.png": (
            pictures.save(Image.fromarray(rgba), "PNG"),
            pictures.composite_on_white(rgba[..., :3], rgba[..., 3]),
        ),
        "sideways.png": (pictures.save(Image.fromarray(stored), "PNG", 6), pictures.upright(stored, 6)),
    }
    records = []
    for index, (name, (payload, expected)) in enumerate(files.items()):
        (root / "photos" / name).write_bytes(payload)
        height, width = expected.shape[:2]
        box = [0, 0, width // 2, height // 2]  # the top-left quadrant, in the upright frame
        records.append(
            {
                "id": f"p{index}",
                "image_name": name,
                "referring": "the top-left part",
                "category": "part",
                "answer_boxes": [box],
                "candidate_boxes": [box, [width // 2, height // 2, width, height]],
            }
        )
    (root / "photos.json").write_text(json.dumps(records))
    out = root / "train.parquet"
    args = ["convert", "--anno", str(root / "photos.json"), "--image-root", str(root / "photos"), "--out", str(out)]
    assert data_main([*args, "--min-pixels", "3136", "--max-pixels", "12544"]) == 0
    return {"root": root, "parquet": out, "expected": [expected for _, expected in files.values()]}


def test_convert_counts_what_it_changed_and_training_sees_the_right_pixels(photo_set, tiny_model_dir):
    from rexthinker_rl.apps.viewer import load_images
    from rexthinker_rl.config import load_config
    from rexthinker_rl.data.dataset import RLDataset
    from rexthinker_rl.model.loading import load_processor

    report = json.loads((photo_set["root"] / "train.parquet.report.json").read_text())
    assert report["exif_rotated"] == 1 and report["modes_converted"] == {"I;16": 1, "RGBA": 1}
    config = load_config(None, [*TINY_OVERRIDES, *FRAME])
    processor = load_processor(str(tiny_model_dir), 3136, 12544)
    dataset = RLDataset(str(photo_set["parquet"]), processor, config.data)
    for index, expected in enumerate(photo_set["expected"]):
        sample = dataset[index]
        assert sample.metadata["image_size"] == [expected.shape[1], expected.shape[0]]
        want = Image.fromarray(expected).resize(sample.image.size, Image.Resampling.BICUBIC)
        assert np.array_equal(np.asarray(sample.image), np.asarray(want)), sample.uid
    _, width, height = load_images(str(photo_set["parquet"]), ["p2"], {"min_pixels": 3136, "max_pixels": 12544})["p2"]
    assert height > width  # the viewer shows the sideways photo upright too


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    from rexthinker_rl.apps.infer import Predictor
    from rexthinker_rl.config import load_config

    config = load_config(None, [*TINY_OVERRIDES, *FRAME, "rollout.engine=hf", "data.max_response_length=4"])
    return Predictor(config, str(tiny_model_dir))


def _top_left_colour_of_picture(picture: Image.Image) -> tuple[int, int, int]:
    from rexthinker_rl.apps.visualize import MARGIN

    return picture.getpixel((3, 2 * 20 + MARGIN + 3))  # just inside the pasted photo, below the title and legend


def test_inference_and_the_demo_see_the_photo_upright(photo_set, predictor, tiny_model_dir, tmp_path):
    from rexthinker_rl.apps.demo import answer_request
    from rexthinker_rl.apps.infer import main as infer_main

    path = photo_set["root"] / "photos" / "sideways.png"
    upright = photo_set["expected"][2]
    hints = {"part": [[18, 24, 36, 48]]}  # the bottom-right quadrant of the upright 36x48 picture
    picture, _, boxes = answer_request(predictor, str(path), "the part", "part", json.dumps(hints), None, [])
    assert _top_left_colour_of_picture(picture) == tuple(upright[0, 0])
    assert json.loads(boxes)["hints"] == {"part": [[18.0, 24.0, 36.0, 48.0]]}
    (tmp_path / "hints.json").write_text(json.dumps(hints))
    out = tmp_path / "answer.png"
    argv = [
        "--model",
        str(tiny_model_dir),
        "--image",
        str(path),
        "--ref",
        "the part",
        "--hints",
        str(tmp_path / "hints.json"),
        "--out",
        str(out),
        *TINY_OVERRIDES,
        *FRAME,
        "data.max_response_length=4",
    ]
    assert infer_main(argv) == 0
    assert _top_left_colour_of_picture(Image.open(out).convert("RGB")) == tuple(upright[0, 0])


def test_evaluation_sees_the_photo_upright(photo_set, predictor, tiny_model_dir, tmp_path):
    from rexthinker_rl.config import load_config
    from rexthinker_rl.eval.run import run_eval

    record = {"id": "s", "image_name": "sideways.png", "referring": "the part", "domain": "attribute"}
    record |= {"answer_boxes": [[0, 0, 18, 24]], "candidate_boxes": [[0, 0, 18, 24], [18, 24, 36, 48]]}
    (tmp_path / "annotations.jsonl").write_text(json.dumps(record) + "\n")
    config = load_config(None, [*TINY_OVERRIDES, *FRAME, "data.max_response_length=4"])
    data, images = str(tmp_path / "annotations.jsonl"), str(photo_set["root"] / "photos")
    run_eval(config, str(tiny_model_dir), data, tmp_path / "eval", images, engine=predictor.engine, progress=False)
    response = json.loads((tmp_path / "eval" / "responses.jsonl").read_text())
    assert response["image_size"] == [36, 48]  # upright, as the boxes were annotated


def test_ignore_exif_keeps_the_stored_frame_for_data_annotated_in_it(tmp_path, tiny_model_dir):
    from data_tools.cli import main as data_main
    from rexthinker_rl.config import load_config
    from rexthinker_rl.data.dataset import RLDataset
    from rexthinker_rl.model.loading import load_processor

    stored = pictures.quadrants(48, 36)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "s.jpg").write_bytes(pictures.save(Image.fromarray(stored), "PNG", 6))
    box = [30, 0, 44, 18]  # annotated in the stored frame (48 wide, 36 high): outside the upright one (36 wide)
    record = {"image_name": "s.jpg", "referring": "the part", "category": "part"}
    record |= {"answer_boxes": [box], "candidate_boxes": [box]}
    (tmp_path / "a.json").write_text(json.dumps([record]))
    args = ["convert", "--anno", str(tmp_path / "a.json"), "--image-root", str(tmp_path / "photos"), "--out"]
    assert data_main([*args, str(tmp_path / "t.parquet"), "--min-pixels", "3136", "--max-pixels", "12544"]) == 1
    assert (
        data_main(
            [*args, str(tmp_path / "t.parquet"), "--min-pixels", "3136", "--max-pixels", "12544", "--ignore-exif"]
        )
        == 0
    )
    assert json.loads((tmp_path / "t.parquet.report.json").read_text())["exif_ignored"] == 1
    config = load_config(None, [*TINY_OVERRIDES, *FRAME])  # default data.apply_exif_orientation=true
    dataset = RLDataset(str(tmp_path / "t.parquet"), load_processor(str(tiny_model_dir), 3136, 12544), config.data)
    image = dataset[0].image
    assert image.width > image.height and image.getpixel((2, 2)) == tuple(stored[0, 0])


# ---------------------------------------------------------------------------------------- 5: resume compatibility
@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    """Tiny models of another width and of another vocabulary."""
    from rexthinker_rl.model.tiny import TinySpec, build_tiny_model

    root = tmp_path_factory.mktemp("other_models")
    narrow = build_tiny_model(root / "narrow", spec=TinySpec(hidden_size=128, num_heads=2, num_kv_heads=1))
    vocab = build_tiny_model(root / "vocab", spec=TinySpec(vocab_size=1000))
    return {"narrow": narrow, "vocab": vocab}


def _checkpoint(root: Path, model: Path, with_shape: bool = False) -> Path:
    """A verified checkpoint trained (as far as its files say) on ``model``."""
    import torch

    from rexthinker_rl.config import load_config, to_yaml
    from rexthinker_rl.model.loading import load_processor
    from rexthinker_rl.train.checkpoint import model_signature, save_checkpoint

    config = load_config(None, [*TINY_OVERRIDES, f"model.path={model}"])
    shape = None
    if with_shape:
        tokenizer = load_processor(str(model), 12544, 12544).tokenizer
        shape = model_signature(str(model), len(tokenizer), config.model.lora)
    weights = {"lm_head.weight": torch.zeros(1)}
    return save_checkpoint(root, 3, weights, None, {"step": 3}, to_yaml(config), model_shape=shape)


@pytest.mark.parametrize(
    ("model", "extra", "words"),
    [
        ("narrow", [], "text.hidden_size 256 vs 128"),
        ("vocab", [], "vocab_size 2631 vs"),
        ("same", ["model.lora.rank=8"], "lora.rank 0 vs 8"),
    ],
    ids=["model shape", "vocabulary", "LoRA rank"],
)
def test_resume_onto_another_model_stops_before_ray(
    model, extra, words, other_models, tiny_model_dir, synthetic_data_dir, tmp_path, capsys
):
    checkpoint = _checkpoint(tmp_path / "old_run", tiny_model_dir)
    path = tiny_model_dir if model == "same" else other_models[model]
    overrides = run_overrides(path, synthetic_data_dir, tmp_path / "run")
    line = train_without_ray([*overrides, f"trainer.resume={checkpoint}", *extra], capsys)
    assert f"trainer.resume={checkpoint}: checkpoint" in line and words in line, line


def test_the_shape_recorded_in_the_manifest_is_checked(
    other_models, tiny_model_dir, synthetic_data_dir, tmp_path, capsys
):
    import shutil

    moved = tmp_path / "base"
    shutil.copytree(tiny_model_dir, moved)
    checkpoint = _checkpoint(tmp_path / "old_run", moved, with_shape=True)
    shutil.rmtree(moved)  # the manifest alone must say what the checkpoint was trained with
    overrides = run_overrides(other_models["narrow"], synthetic_data_dir, tmp_path / "run")
    assert "text.hidden_size 256 vs 128" in train_without_ray([*overrides, f"trainer.resume={checkpoint}"], capsys)


def test_a_missing_resume_path_stops_before_ray(tiny_model_dir, synthetic_data_dir, tmp_path, capsys):
    overrides = run_overrides(tiny_model_dir, synthetic_data_dir, tmp_path / "run")
    line = train_without_ray([*overrides, f"trainer.resume={tmp_path / 'nowhere'}"], capsys)
    assert "no such checkpoint folder" in line


# ----------------------------------------------------------------------------------------- 6: own data, end to end
def test_convert_suggests_bounds_that_work_and_the_set_trains(tmp_path, tiny_model_dir, capsys):
    from data_tools.cli import main as data_main
    from rexthinker_rl.config import load_config
    from rexthinker_rl.train.sft import run_sft

    (tmp_path / "photos").mkdir()
    records = []
    for index, size in enumerate([(160, 120), (120, 160)]):
        name = f"{index}.png"
        Image.fromarray(pictures.quadrants(*size)).save(tmp_path / "photos" / name)
        box = [0, 0, size[0] // 2, size[1] // 2]
        records.append(
            {
                "image_name": name,
                "referring": "the red part",
                "category": "part",
                "answer_boxes": [box],
                "candidate_boxes": [box, [size[0] // 2, 0, size[0], size[1] // 2]],
            }
        )
    (tmp_path / "photos.json").write_text(json.dumps(records))
    args = ["convert", "--anno", str(tmp_path / "photos.json"), "--image-root", str(tmp_path / "photos"), "--out"]
    out = tmp_path / "train.parquet"
    assert data_main([*args, str(out), "--min-pixels", "12544", "--max-pixels", "12544"]) == 1
    suggested = re.search(
        r"hold every image of the file: --min-pixels (\d+) --max-pixels (\d+)", capsys.readouterr().out
    )
    assert suggested is not None
    low, high = suggested.groups()
    assert data_main([*args, str(out), "--min-pixels", low, "--max-pixels", high]) == 0
    assert (tmp_path / "train.parquet.report.json").is_file()  # OUT.report.json, as docs/data.md says
    assert data_main(["validate", str(out)]) == 0  # no bounds given: each row's own frame
    assert data_main(["validate", str(out), "--min-pixels", low, "--max-pixels", high]) == 0
    assert data_main(["cot", str(out), "--out", str(tmp_path / "cot.parquet")]) == 0
    targets = pq.read_table(tmp_path / "cot.parquet").column("sft_target").to_pylist()
    answers = pq.read_table(tmp_path / "cot.parquet").column("answer").to_pylist()
    assert all(
        t.startswith("<think>Planning: find the red part") and t.endswith(f"<answer>{a}</answer>")
        for t, a in zip(targets, answers, strict=True)
    )
    assert "Box 1 " in targets[0] and ": yes." in targets[0] and ": no." in targets[0]
    overrides = [
        *TINY_OVERRIDES,
        f"model.path={tiny_model_dir}",
        f"data.train_files={tmp_path / 'cot.parquet'}",
        f"data.min_pixels={low}",
        f"data.max_pixels={high}",
        "sft.epochs=1",
        "sft.batch_size=2",
        f"sft.output_dir={tmp_path / 'sft'}",
    ]
    assert (run_sft(load_config(None, overrides)) / "config.json").is_file()  # SFT accepts the templated targets


# -------------------------------------------------------------------------------------------------- 7: smaller items
def _edited_parquet(source: Path, target: Path, row: int, **changes) -> Path:
    table = pq.read_table(source)
    rows = table.to_pylist()
    rows[row].update(changes)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), target)
    return target


def _dataset(path: Path, tiny_model_dir: Path, *extra: str):
    from rexthinker_rl.config import load_config
    from rexthinker_rl.data.dataset import RLDataset
    from rexthinker_rl.model.loading import load_processor

    config = load_config(None, [*TINY_OVERRIDES, *extra])
    return RLDataset(str(path), load_processor(str(tiny_model_dir), 12544, 12544), config.data)


def test_an_empty_referring_expression_is_a_bad_row(synthetic_data_dir, tiny_model_dir, tmp_path):
    from rexthinker_rl.data.dataset import DataError

    source = synthetic_data_dir / "train.parquet"
    row = pq.read_table(source).slice(3, 1).to_pylist()[0]
    problem = row["problem"].replace(f"Please detect {row['referring']} in", "Please detect  in")
    path = _edited_parquet(source, tmp_path / "empty.parquet", 3, problem=problem, referring="")
    with pytest.raises(DataError, match=r"empty\.parquet row 3: the referring expression is empty"):
        _dataset(path, tiny_model_dir)


def test_a_20000_character_expression_is_dropped_naming_its_row(synthetic_data_dir, tiny_model_dir, tmp_path, caplog):
    from rexthinker_rl.data.dataset import DataError

    source = synthetic_data_dir / "train.parquet"
    row = pq.read_table(source).slice(5, 1).to_pylist()[0]
    long = "the " + "very " * 4000 + "red circle"
    problem = row["problem"].replace(row["referring"], long)
    path = _edited_parquet(source, tmp_path / "long.parquet", 5, problem=problem, referring=long)
    with caplog.at_level(logging.WARNING, logger="rexthinker_rl.data.dataset"):
        dataset = _dataset(path, tiny_model_dir)
    assert dataset.num_filtered == 1 and "long.parquet row 5" in caplog.text
    with pytest.raises(DataError, match=r"long\.parquet row 5: prompt is \d+ tokens"):
        _dataset(path, tiny_model_dir, "data.filter_overlong_prompts=false")


@pytest.mark.parametrize(
    ("overrides", "yaml_text", "words"),
    [
        (["actor=3"], None, "'actor' is a section, not a value: set one of its keys, e.g. actor."),
        ([], "trainer: 5\n", "'trainer' is a section, not a value"),
        (["trainer.total_steps=0"], None, "trainer.total_steps=0 is invalid: expected -1"),
    ],
    ids=["actor=3", "trainer: 5", "total_steps=0"],
)
def test_config_values_that_mean_nothing_are_named(overrides, yaml_text, words, tmp_path):
    from rexthinker_rl.config import ConfigError, load_config

    path = None
    if yaml_text is not None:
        path = tmp_path / "experiment.yaml"
        path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    assert words in str(info.value) and "'?'" not in str(info.value), str(info.value)


@pytest.mark.parametrize("spelling", ["data.val_files=", "data.val_files=null", "data.val_files=''"])
def test_no_validation_set_can_be_spelled_plainly(spelling):
    from rexthinker_rl.config import load_config

    assert not load_config(None, [spelling]).data.val_files


def test_an_inference_hint_box_outside_the_image_is_one_line(tiny_model_dir, tmp_path, capsys):
    from rexthinker_rl.apps.infer import main as infer_main

    Image.fromarray(pictures.quadrants(64, 48)).save(tmp_path / "p.png")
    (tmp_path / "hints.json").write_text(json.dumps({"part": [[10, 10, 900, 700]]}))
    argv = [
        "--model",
        str(tiny_model_dir),
        "--image",
        str(tmp_path / "p.png"),
        "--ref",
        "the part",
        "--hints",
        str(tmp_path / "hints.json"),
        "--out",
        str(tmp_path / "a.png"),
        *TINY_OVERRIDES,
        *FRAME,
    ]
    assert infer_main(argv) == 2
    assert "hint box [10.0, 10.0, 900.0, 700.0] ('part') lies outside the 64x48 image" in one_error_line(
        capsys.readouterr().err
    )
    assert not (tmp_path / "a.png").exists()


class ScriptedEngine:
    """A rollout engine that answers with a fixed completion: the tiny model's output cannot be chosen, and these
    tests need a completion with blank lines (what an untrained model writes) and one whose answer does not parse."""

    def __init__(self, text: str) -> None:
        self.text = text

    def generate(self, prompts, sampling):
        from rexthinker_rl.rollout.base import RolloutResult

        return [RolloutResult(i, [1, 2], [0.0, 0.0], self.text, "stop") for i in range(len(prompts))]


def test_inference_prints_reasoning_without_blank_lines_and_a_legend_of_what_is_drawn(predictor, tiny_model_dir):
    from rexthinker_rl.apps.infer import Predictor
    from rexthinker_rl.apps.visualize import legend_text

    text = "<think>\n\n\nPlanning.\n\n   \n\nAction: box 1.\n\n\n</think><answer>There is no such thing in the image.</answer>"
    scripted = Predictor(predictor.config, str(tiny_model_dir), engine=ScriptedEngine(text))
    inference = scripted.predict(Image.new("RGB", (64, 48)), "the part", {"part": [[1, 1, 20, 20]]})
    assert inference.reasoning == "Planning.\nAction: box 1."
    assert "ground truth" not in legend_text(hints=[[1, 1, 20, 20]], pred=[])
    assert legend_text(hints=[[1, 1, 2, 2]], gt=[[1, 1, 2, 2]]) == "magenta: hints (numbered)   green: ground truth"


def test_eval_says_on_the_console_when_answers_do_not_parse(synthetic_data_dir, tiny_model_dir, tmp_path, capsys):
    from rexthinker_rl.eval.cli import main as eval_main

    argv = [
        "run",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(synthetic_data_dir / "val.parquet"),
        "--out",
        str(tmp_path / "eval"),
        "--engine",
        "hf",
        "--max-samples",
        "3",
        *TINY_OVERRIDES,
        "data.max_response_length=3",
    ]
    assert eval_main(argv) == 0
    printed = capsys.readouterr().out
    assert "warning: 3 of 3 answers did not parse" in printed and "counts as a correct rejection" in printed
