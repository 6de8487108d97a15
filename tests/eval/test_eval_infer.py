"""rexthinker-infer on the tiny model: hints from a file or a detector, printed answer, saved visualisation."""

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from rexthinker_rl.apps.infer import Predictor, detect_hints, main, read_hints
from rexthinker_rl.config import load_config
from tests.conftest import TINY_OVERRIDES

TOY_DETECTOR = "examples/toy/toy_detector.py:detect"


@pytest.fixture(scope="module")
def scene(synthetic_data_dir, tmp_path_factory):
    """A synthetic image written to a file, its category and its hint boxes (112x112: original = resized frame)."""
    row = pq.read_table(synthetic_data_dir / "val.parquet").to_pylist()[0]
    path = tmp_path_factory.mktemp("infer") / "scene.png"
    path.write_bytes(row["images"][0]["bytes"])
    return path, row["category"], json.loads(row["hints"])[row["category"]], row["referring"]


def test_infer_cli_prints_answer_and_saves_picture(scene, tiny_model_dir, tmp_path, capsys):
    image_path, category, hints, referring = scene
    hints_file = tmp_path / "hints.json"
    hints_file.write_text(json.dumps({category: hints}))
    out = tmp_path / "vis" / "answer.png"
    args = ["--model", str(tiny_model_dir), "--image", str(image_path), "--ref", referring]
    assert main([*args, "--hints", str(hints_file), "--out", str(out), *TINY_OVERRIDES]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("reasoning:\n") and "boxes (image pixels): [" in printed and str(out) in printed
    picture = Image.open(out)
    assert picture.width > 448 + 400 and picture.height >= 448  # enlarged image plus the text panel
    # the hint boxes are drawn (their magenta is not in the scene), and text is written in the right-hand panel
    from rexthinker_rl.apps.visualize import HINT_COLOUR

    colours = dict((colour, count) for count, colour in picture.convert("RGB").getcolors(2**20))
    assert colours.get(HINT_COLOUR, 0) > 4 * 448 * len(hints) / 4
    panel = picture.crop((460, 60, picture.width, picture.height)).convert("L")
    assert panel.getextrema()[0] < 100  # dark text on white


def test_detector_hints_follow_the_protocol(scene):
    image_path, category, hints, _ = scene
    image = Image.open(image_path)
    found = detect_hints(TOY_DETECTOR, ["jitter=0", "miss_rate=0"], image, category)
    assert sorted(found[category]) == sorted([float(v) for v in box] for box in hints)


def test_predictor_maps_boxes_to_the_image_frame(scene, tiny_model_dir):
    image_path, category, hints, referring = scene
    config = load_config(None, TINY_OVERRIDES + ["rollout.engine=hf"])
    predictor = Predictor(config, str(tiny_model_dir))
    big = Image.open(image_path).resize((224, 224))
    result = predictor.predict(big, referring, {category: [[2 * v for v in box] for box in hints]})
    assert result.hints[category][0] == [2 * v for v in hints[0]]
    assert [[2 * v for v in box] for box in result.boxes_resized] == [
        [pytest.approx(v) for v in box] for box in result.boxes
    ]
    assert isinstance(result.response, str) and result.kind in {"boxes", "rejection", "invalid"}


def test_bad_input_is_one_line(scene, tiny_model_dir, tmp_path, capsys):
    image_path, category, _, referring = scene
    args = ["--model", str(tiny_model_dir), "--image", str(image_path), "--ref", referring, *TINY_OVERRIDES]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"person": [[10, 10, 5, 20]]}))
    assert main([*args, "--hints", str(bad)]) == 2
    assert "bad.json: hint box [10, 10, 5, 20] has x1 <= x0" in capsys.readouterr().err
    assert main([*args, "--hints", str(tmp_path / "missing.json")]) == 2
    assert main([*args, "--detector", "no_such_module:detect"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 2 and "cannot import 'no_such_module'" in error[1]
    with pytest.raises(ValueError, match="list of \\[x0, y0, x1, y1\\] boxes"):
        hints_file = tmp_path / "wrong.json"
        hints_file.write_text(json.dumps({"person": [[1, 2, 3]]}))
        read_hints(hints_file, "person")


def test_list_hints_take_the_category(tmp_path):
    hints_file = tmp_path / "list.json"
    hints_file.write_text(json.dumps([[1, 2, 30, 40]]))
    assert read_hints(hints_file, "cup") == {"cup": [[1.0, 2.0, 30.0, 40.0]]}


def test_rexthinker_infer_preset_asks_as_the_demo_does(scene, tiny_model_dir):
    """`--prompt-preset rexthinker-infer`: the demo's messages (tests/rexthinker_original.py) with its pixel bounds,
    hints rounded its way, and a run that reads every bracketed list as the demo does."""
    from rexthinker_rl.data.prompts import load_preset
    from rexthinker_rl.eval.prompts import make_prompt
    from tests import rexthinker_original as original

    image_path, category, hints, referring = scene
    preset = load_preset("rexthinker-infer")
    cpu = [o for o in TINY_OVERRIDES if not o.startswith(("data.min_pixels", "data.max_pixels"))]
    config = load_config(None, [*preset.config_overrides(), *cpu, "rollout.engine=hf", "data.max_response_length=8"])
    predictor = Predictor(config, str(tiny_model_dir))
    big = Image.open(image_path).resize((224, 168))  # 224 x 168 is already a multiple of 28 within the bounds
    # Non-integer scales (the rounding matters), onto the 224 x 168 picture: every hint stays inside it.
    original_hints = {
        category: [[v * scale for v, scale in zip(box, (1.9, 1.45, 1.9, 1.45), strict=True)] for box in hints]
    }
    prompt = make_prompt(predictor.processor, config.data, big, referring, original_hints)
    expected_hints = {category: original.map_boxes(original_hints[category], 224, 168)}
    expected = predictor.processor.tokenizer.apply_chat_template(
        original.original_infer_messages(expected_hints, referring),
        chat_template=original.QWEN25VL_CHAT_TEMPLATE,
        tokenize=False,
        add_generation_prompt=True,
    )
    assert prompt.prompt_text == expected and prompt.metadata["box_rounding"] == "original"
    result = predictor.predict(big, referring, original_hints)
    assert result.kind in {"boxes", "rejection", "invalid"}
