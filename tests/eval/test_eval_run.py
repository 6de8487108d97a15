"""rexthinker-eval on the tiny model and a synthetic set: report files and keys, the original frame, re-scoring."""

import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_tools.synthetic import HINT_PREFIX, make_synthetic_dataset
from rexthinker_rl.config import load_config
from rexthinker_rl.data.dataset import RLDataset
from rexthinker_rl.data.prompts import DEFAULT_PRESET, load_preset
from rexthinker_rl.eval import cli
from rexthinker_rl.eval.annotations import dataset_records, derive_domain, write_humanref
from rexthinker_rl.eval.metrics import METRIC_KEYS, evaluate
from rexthinker_rl.eval.prompts import make_prompt
from rexthinker_rl.eval.run import HumanRefPrompts, parse_response, run_eval
from rexthinker_rl.model.loading import load_processor
from tests.conftest import TINY_OVERRIDES, TINY_PIXELS

NUM_SAMPLES = 4


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    """12 rows drawn at 224x224 and resized to 112x112: every box doubles on the way back to the original image."""
    out = tmp_path_factory.mktemp("eval_set")
    paths = make_synthetic_dataset(out, num_train=0, num_val=12, seed=3, image_size=224)
    return paths["val"]


@pytest.fixture(scope="module")
def humanref_set(eval_set, tmp_path_factory):
    """The same rows as HumanRef annotations.jsonl + image files (boxes in original pixels)."""
    out = tmp_path_factory.mktemp("humanref")
    (out / "images").mkdir()
    records = dataset_records(eval_set, TINY_PIXELS, TINY_PIXELS)
    for row, record in zip(pq.read_table(eval_set).to_pylist(), records, strict=True):
        record.image_name = f"{record.id}.png"
        record.category = row["category"]
        (out / "images" / record.image_name).write_bytes(row["images"][0]["bytes"])
    write_humanref(out / "annotations.jsonl", records)
    return out


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):
    from rexthinker_rl.rollout.hf_engine import HFEngine

    return HFEngine(load_config(None, TINY_OVERRIDES + ["rollout.engine=hf"]), str(tiny_model_dir))


def test_hint_prefix_matches_the_data_tools():
    assert load_preset(DEFAULT_PRESET).problem_text({"circle": [[1, 2, 3, 4]]}, "x").startswith(HINT_PREFIX)


def test_derived_domains():
    assert derive_domain("the red circle", False) == ("attribute", "colour")
    assert derive_domain("all blue squares", False) == ("attribute", "colour_multi")
    assert derive_domain("the leftmost triangle", False) == ("position", "leftmost")
    assert derive_domain("the red circle", True) == ("rejection", "rejection")
    assert derive_domain("the man holding a cup", False) == ("other", "other")


def test_correct_answers_score_perfectly_in_the_original_frame(eval_set):
    """The rows' own chain-of-thought targets, parsed and mapped back, are exactly the ground truth."""
    rows = pq.read_table(eval_set).to_pylist()
    records = dataset_records(eval_set, TINY_PIXELS, TINY_PIXELS)
    predictions = {}
    for row, record in zip(rows, records, strict=True):
        answer = parse_response(row["sft_target"], row["image_size"], row["resized_size"])
        assert answer.boxes_resized == json.loads(row["answer_boxes"])
        assert answer.boxes_original == [[2 * v for v in box] for box in answer.boxes_resized]  # 224 / 112
        predictions[record.id] = answer.boxes_original
    report = evaluate([record.ground_truth() for record in records], predictions)
    assert report["overall"]["count"] > 0 and report["rejection_total"] > 0
    assert all(report["overall"][key] == 1.0 for key in METRIC_KEYS)
    assert report["rejection_score"] == 1.0 and report["accuracy_50"] == 1.0
    # Still in the resized frame, the same boxes are wrong: the report would show it.
    resized = {
        record.id: parse_response(row["sft_target"], [1, 1], [1, 1]).boxes_original
        for record, row in zip(records, rows, strict=True)
    }
    assert evaluate([record.ground_truth() for record in records], resized)["overall"]["recall_50"] < 0.5


def test_humanref_prompts_equal_training_prompts(eval_set, humanref_set, tiny_model_dir):
    config = load_config(None, TINY_OVERRIDES)
    processor = load_processor(str(tiny_model_dir), TINY_PIXELS, TINY_PIXELS)
    training = RLDataset(str(eval_set), processor, config.data)
    from rexthinker_rl.eval.annotations import read_humanref

    prompts = HumanRefPrompts(
        read_humanref(humanref_set / "annotations.jsonl"), humanref_set / "images", processor, config
    )
    for index in range(len(training)):
        assert prompts[index].prompt_text == training[index].prompt_text
        assert prompts[index].image.tobytes() == training[index].image.tobytes()
    image = Image.open(io.BytesIO(pq.read_table(eval_set).to_pylist()[0]["images"][0]["bytes"]))
    single = make_prompt(processor, config.data, image, "the red circle", {"circle": [[0, 0, 224, 224]]})
    assert '{"circle": [[0, 0, 112, 112]]}' in single.prompt_text


def test_eval_run_writes_report_and_rescoring_agrees(eval_set, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["run", "--model", str(tiny_model_dir), "--data", str(eval_set), "--out", str(out)]
    args += ["--engine", "hf", "--max-samples", str(NUM_SAMPLES), "--batch-size", "2", *TINY_OVERRIDES]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "| Domain | Sub-domain |" in printed and "report:" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["num_samples"] == NUM_SAMPLES
    assert report["overall"]["count"] + report["rejection_total"] == NUM_SAMPLES
    assert set(METRIC_KEYS) | {"count"} == set(report["overall"])
    for group in (*report["domains"].values(), *report["sub_domains"].values()):
        assert set(METRIC_KEYS) <= set(group) and all(0.0 <= group[key] <= 1.0 for key in METRIC_KEYS)
    assert {"rejection_score", "rejection_count", "accuracy_50", "unparsed_answers"} <= set(report)
    assert (out / "report.md").read_text().startswith("| Domain |")
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == [f"synth-val-{i:06d}" for i in range(NUM_SAMPLES)]
    assert all(set(p) == {"id", "extracted_predictions"} for p in predictions)
    assert len(responses) == NUM_SAMPLES and all(isinstance(r["response"], str) for r in responses)

    rescored = tmp_path / "rescored.json"
    args = ["score", "--annotations", str(out / "annotations.jsonl"), "--predictions", str(out / "predictions.jsonl")]
    assert cli.main([*args, "--out", str(rescored)]) == 0
    again = json.loads(rescored.read_text())
    for key in ("overall", "domains", "sub_domains", "rejection_score", "rejection_count", "accuracy_50"):
        assert again[key] == report[key]


def test_humanref_run_gives_the_parquet_answers(eval_set, humanref_set, tiny_model_dir, hf_engine, tmp_path):
    config = load_config(None, TINY_OVERRIDES + ["rollout.engine=hf"])
    kwargs = {"max_samples": 2, "engine": hf_engine, "progress": False}
    from_parquet = run_eval(config, str(tiny_model_dir), str(eval_set), tmp_path / "a", **kwargs)
    anno = str(humanref_set / "annotations.jsonl")
    from_humanref = run_eval(config, str(tiny_model_dir), anno, tmp_path / "b", str(humanref_set / "images"), **kwargs)
    assert (tmp_path / "a" / "responses.jsonl").read_text() == (tmp_path / "b" / "responses.jsonl").read_text()
    assert from_parquet["overall"] == from_humanref["overall"]


def test_eval_reads_the_configured_answer_column(eval_set, tiny_model_dir, hf_engine, tmp_path):
    """data.answer_key names the ground truth (issue 28: eval read the "answer" column whatever it said, here a decoy
    box, and scored against it silently)."""
    import pyarrow as pa

    table = pq.read_table(eval_set)
    decoy = '```json\n[{"bbox_2d": [0, 0, 8, 8], "label": "decoy"}]\n```'
    renamed = table.append_column("truth", table.column("answer")).set_column(
        table.column_names.index("answer"), "answer", pa.array([decoy] * len(table))
    )
    moved = tmp_path / "truth_column.parquet"
    pq.write_table(renamed.replace_schema_metadata(table.schema.metadata), moved)
    kwargs = {"max_samples": 2, "engine": hf_engine, "progress": False}
    config = load_config(None, TINY_OVERRIDES + ["rollout.engine=hf"])
    expected = run_eval(config, str(tiny_model_dir), str(eval_set), tmp_path / "a", **kwargs)
    config = load_config(None, TINY_OVERRIDES + ["rollout.engine=hf", "data.answer_key=truth"])
    report = run_eval(config, str(tiny_model_dir), str(moved), tmp_path / "b", **kwargs)
    assert (tmp_path / "a" / "annotations.jsonl").read_text() == (tmp_path / "b" / "annotations.jsonl").read_text()
    assert report["overall"] == expected["overall"] and report["rejection_score"] == expected["rejection_score"]


def test_score_with_perfect_predictions_and_bad_files(humanref_set, tmp_path, capsys):
    anno = humanref_set / "annotations.jsonl"
    records = [json.loads(line) for line in anno.read_text().splitlines()]
    perfect = tmp_path / "perfect.jsonl"
    perfect.write_text(
        "".join(json.dumps({"id": r["id"], "extracted_predictions": r["answer_boxes"]}) + "\n" for r in records)
    )
    report_path = tmp_path / "report.json"
    assert (
        cli.main(["score", "--annotations", str(anno), "--predictions", str(perfect), "--out", str(report_path)]) == 0
    )
    report = json.loads(report_path.read_text())
    assert report["overall"]["density_f1_mean"] == 1.0 and report["rejection_score"] == 1.0

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "extracted_predictions": [[1, 2, 3]]}) + "\n")
    assert cli.main(["score", "--annotations", str(anno), "--predictions", str(bad), "--out", str(report_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: bad.jsonl line 1:") and "extracted_predictions" in error and "\n" not in error
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"id": "x", "referring": "a", "domain": "attribute", "image_name": "a.png"}) + "\n")
    assert cli.main(["score", "--annotations", str(broken), "--predictions", str(perfect), "--out", "r.json"]) == 2
    assert "broken.jsonl line 1: missing key 'answer_boxes'" in capsys.readouterr().err
    args = ["run", "--model", str(tmp_path), "--data", str(anno), "--out", str(tmp_path / "x"), "--engine", "hf"]
    assert cli.main(args + TINY_OVERRIDES) == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.vllm
@pytest.mark.slow
def test_eval_with_the_vllm_engine(eval_set, tiny_model_dir, vllm_engine, tmp_path):
    config = load_config(None, TINY_OVERRIDES)
    report = run_eval(
        config,
        str(tiny_model_dir),
        str(eval_set),
        tmp_path,
        max_samples=NUM_SAMPLES,
        engine=vllm_engine,
        progress=False,
    )
    assert report["num_samples"] == NUM_SAMPLES
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == NUM_SAMPLES


def test_humanref_eval_preset_reproduces_the_originals_run(humanref_set, tiny_model_dir, tmp_path):
    """`--preset humanref-eval`: evaluation/eval.py's prompt through Qwen2.5-VL's chat template, its pixel bounds (the
    224 px images grow to the 256-token minimum) and its box mapping (tests/rexthinker_original.py); then a run."""
    from rexthinker_rl.eval.annotations import read_humanref
    from tests import rexthinker_original as original

    preset = load_preset("humanref-eval")
    config = load_config(None, [*TINY_OVERRIDES, *preset.config_overrides()])
    processor = load_processor(str(tiny_model_dir), config.data.min_pixels, config.data.max_pixels)
    records = read_humanref(humanref_set / "annotations.jsonl")[:3]
    prompts = HumanRefPrompts(records, humanref_set / "images", processor, config)
    for index, record in enumerate(records):
        width, height = Image.open(humanref_set / "images" / str(record.image_name)).size
        boxes = original.map_boxes(record.candidate_boxes, width, height, 200704, 1003520)
        assert record.category != "person"  # the original names every hint "person"; so does the preset
        expected = processor.tokenizer.apply_chat_template(
            original.original_eval_messages(boxes, record.referring),
            chat_template=original.QWEN25VL_CHAT_TEMPLATE,
            tokenize=False,
            add_generation_prompt=True,
        )
        assert prompts[index].prompt_text == expected
        assert prompts[index].image.size == (448, 448)
    out = tmp_path / "eval"
    tiny = [o for o in TINY_OVERRIDES if not o.startswith(("data.min_pixels", "data.max_pixels", "data.max_resp"))]
    args = ["run", "--model", str(tiny_model_dir), "--data", str(humanref_set / "annotations.jsonl")]
    args += ["--image-root", str(humanref_set / "images"), "--out", str(out), "--preset", "humanref-eval"]
    args += [
        "--engine",
        "hf",
        "--max-samples",
        "2",
        *tiny,
        "data.max_prompt_length=1024",
        "data.max_response_length=8",
    ]
    assert cli.main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["prompt_preset"] == "humanref-eval" and report["num_samples"] == 2
    for response in (json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()):
        assert response["resized_size"] == [448, 448] and response["kind"] in ("boxes", "rejection", "invalid")
