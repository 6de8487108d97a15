"""Nothing a user has is lost: every writer pointed at something it did not create refuses, with one line and exit
status 2, and leaves it byte for byte as it was; ``--overwrite`` replaces only the writer's own kind of output.

Every case runs a real command entry point in this process on real folders: a data folder (parquet, images, JSON), a run
folder (config, metrics, a checkpoint), a Hugging Face model folder, and the inputs of the command itself.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.faults.runs import call, run_overrides

TOY_DETECTOR = Path(__file__).resolve().parents[2] / "examples" / "toy" / "toy_detector.py"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with its sha256 (folders: "dir")."""
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        state[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.fixture(scope="module")
def template(tmp_path_factory, synthetic_data_dir, tiny_model_dir):
    """A data folder, two model folders and a HumanRef-style benchmark folder; the actor's weights of the tiny model."""
    from rexthinker_rl.model.loading import load_model

    root = tmp_path_factory.mktemp("places")
    data, model, other, bench = (root / name for name in ("data", "model", "other", "bench"))
    shutil.copytree(synthetic_data_dir, data)
    (data / "images").mkdir()
    Image.new("RGB", (112, 112), (200, 30, 30)).save(data / "images" / "a.png")
    anno = [{"image_name": "a.png", "referring": "the red square", "category": "square", "answer_boxes": []}]
    (data / "anno.json").write_text(json.dumps(anno))
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(tiny_model_dir, other)
    (bench / "images").mkdir(parents=True)
    Image.new("RGB", (112, 112), (30, 30, 200)).save(bench / "images" / "p.png")
    record = {"id": "h0", "image_name": "p.png", "referring": "the person", "domain": "attribute"}
    record |= {"answer_boxes": [[10, 10, 50, 50]], "candidate_boxes": [[10, 10, 50, 50], [60, 60, 100, 100]]}
    (bench / "annotations.jsonl").write_text(json.dumps(record) + "\n")
    (bench / "predictions.jsonl").write_text(json.dumps({"id": "h0", "extracted_predictions": [[9, 9, 50, 50]]}))
    (bench / "hints.json").write_text(json.dumps({"person": [[10, 10, 50, 50]]}))
    return root, load_model(str(tiny_model_dir), "float32", "sdpa").state_dict()  # named as the actor saves them


@pytest.fixture
def places(template, tmp_path):
    """A fresh copy of the template for each test (a writer that does damage damages only its own copy), and a run
    folder with a checkpoint trained, as its config says, from the copy's ``model``."""
    from rexthinker_rl.config import load_config, to_yaml
    from rexthinker_rl.train.checkpoint import save_checkpoint
    from tests.conftest import TINY_OVERRIDES

    source, weights = template
    root = tmp_path / "places"
    shutil.copytree(source, root)
    places = {name: root / name for name in ("data", "run", "model", "other", "bench")}
    config = load_config(
        None, [*TINY_OVERRIDES, f"model.path={places['model']}", f"trainer.output_dir={root / 'run'}"]
    )
    places["checkpoint"] = save_checkpoint(
        places["run"] / "checkpoints", 1, weights, None, {"step": 1}, to_yaml(config)
    )
    (places["run"] / "config.yaml").write_text(to_yaml(config))
    (places["run"] / "metrics.jsonl").write_text('{"step": 1, "reward/overall": 0.5}\n')
    return places


def _entries():
    from data_tools.cli import main as data_main
    from rexthinker_rl.apps.cli import sft_main, train_main
    from rexthinker_rl.apps.convert import main as convert_main
    from rexthinker_rl.apps.infer import main as infer_main
    from rexthinker_rl.apps.tiny_cli import main as tiny_main
    from rexthinker_rl.eval.cli import main as eval_main

    names = ("convert", "tiny", "sft", "train", "data", "eval", "infer")
    return dict(
        zip(names, (convert_main, tiny_main, sft_main, train_main, data_main, eval_main, infer_main), strict=True)
    )


def _cases(p: dict[str, Path]) -> dict[str, tuple[str, list[str], str]]:
    """name -> (entry point, arguments, words the one error line must hold)."""
    ckpt, data, bench = str(p["checkpoint"]), p["data"], p["bench"]
    convert = ["convert", "--anno", str(data / "anno.json"), "--image-root", str(data / "images"), "--out"]
    sft = [f"model.path={p['model']}", f"data.train_files={data / 'train.parquet'}", "trainer.device=cpu"]
    images = ["--image-root", str(bench / "images")]
    return {
        "convert into a data folder": ("convert", [ckpt, str(data)], "not a Hugging Face model folder"),
        "convert into a data folder, --overwrite": ("convert", [ckpt, str(data), "--overwrite"], "never replaced"),
        "convert into the run folder, --overwrite": ("convert", [ckpt, str(p["run"]), "--overwrite"], "an input"),
        "convert over the model it reads, --overwrite": (
            "convert",
            [ckpt, str(p["model"]), "--overwrite"],
            "an input",
        ),
        "convert into an existing model folder": ("convert", [ckpt, str(p["other"])], "pass --overwrite"),
        "tiny into a data folder": ("tiny", [str(data)], "never replaced"),
        "sft into its data folder": ("sft", [*sft, "sft.epochs=0", f"sft.output_dir={data}"], "sft.output_dir"),
        "sft into a run folder": ("sft", [*sft, "sft.epochs=0", f"sft.output_dir={p['run']}"], "never replaced"),
        "train into a data folder": ("train", run_overrides(p["model"], data, data), "not a run folder"),
        "train with resume=none over a run": (
            "train",
            [*run_overrides(p["model"], data, p["run"]), "trainer.resume=none"],
            "trainer.resume=none",
        ),
        "convert --out an existing parquet": ("data", [*convert, str(data / "train.parquet")], "already exists"),
        "convert shards over a run folder, --overwrite": (
            "data",
            [*convert, str(p["run"]), "--shard-size", "1", "--overwrite"],
            "never replaced",
        ),
        "synth into a data folder": ("data", ["synth", "--out", str(data)], "already exists"),
        "add-candidates over its own input": (
            "data",
            [
                "add-candidates",
                *convert[1:5],
                "--detector",
                f"{TOY_DETECTOR}:detect",
                "--out",
                str(data / "anno.json"),
            ],
            "also an input",
        ),
        "eval run into a benchmark folder": (
            "eval",
            [
                "run",
                "--model",
                str(p["model"]),
                "--data",
                str(bench / "annotations.jsonl"),
                *images,
                "--out",
                str(bench),
                "--engine",
                "hf",
                "data.max_response_length=8",
            ],
            "an input",
        ),
        "eval score over its annotations": (
            "eval",
            [
                "score",
                "--annotations",
                str(bench / "annotations.jsonl"),
                "--predictions",
                str(bench / "predictions.jsonl"),
                "--out",
                str(bench / "annotations.jsonl"),
            ],
            "also an input",
        ),
        "infer picture over the input image": (
            "infer",
            [
                "--model",
                str(p["model"]),
                "--image",
                str(bench / "images" / "p.png"),
                "--ref",
                "the person",
                "--hints",
                str(bench / "hints.json"),
                "--out",
                str(bench / "images" / "p.png"),
                "data.max_response_length=8",
            ],
            "also an input",
        ),
    }


CASES = [
    "convert into a data folder",
    "convert into a data folder, --overwrite",
    "convert into the run folder, --overwrite",
    "convert over the model it reads, --overwrite",
    "convert into an existing model folder",
    "tiny into a data folder",
    "sft into its data folder",
    "sft into a run folder",
    "train into a data folder",
    "train with resume=none over a run",
    "convert --out an existing parquet",
    "convert shards over a run folder, --overwrite",
    "synth into a data folder",
    "add-candidates over its own input",
    "eval run into a benchmark folder",
    "eval score over its annotations",
    "infer picture over the input image",
]


@pytest.mark.parametrize("case", CASES)
def test_a_writer_never_replaces_what_it_did_not_create(case, places, capsys):
    import ray

    entry, argv, words = _cases(places)[case]
    before = {name: snapshot(places[name]) for name in ("data", "run", "model", "other", "bench")}
    status = call(_entries()[entry], argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert words in lines[0], lines[0]
    for name, state in before.items():
        assert snapshot(places[name]) == state, f"{case}: {name} changed"
    assert not ray.is_initialized()


def test_a_runs_final_folder_that_is_not_a_model_is_refused_before_ray(places, tiny_model_dir, tmp_path, capsys):
    from rexthinker_rl.apps.cli import train_main

    run = tmp_path / "run"
    shutil.copytree(places["run"], run)
    (run / "final").mkdir()
    (run / "final" / "notes.txt").write_text("mine")
    assert call(train_main, run_overrides(tiny_model_dir, places["data"], run)) == 2
    assert "final" in capsys.readouterr().err and (run / "final" / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_a_model_folder_and_only_that(places, tiny_model_dir, tmp_path):
    """The way out the errors name works: a model folder is replaced whole (no stale file stays), atomically."""
    from rexthinker_rl.apps.convert import main as convert_main
    from rexthinker_rl.model.loading import load_model

    out = tmp_path / "converted" / "hf"
    out.parent.mkdir()
    shutil.copytree(tiny_model_dir, out)
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale shard of an older save")
    assert call(convert_main, [str(places["checkpoint"]), str(out), "--overwrite"]) == 0
    assert not (out / "model-00001-of-00002.safetensors").exists()
    assert load_model(str(out), "float32", "sdpa") is not None
    assert sorted(p.name for p in out.parent.iterdir()) == ["hf"]  # no temp or old folder left beside it
    new = tmp_path / "new"
    assert call(convert_main, [str(places["checkpoint"]), str(new)]) == 0 and (new / "config.json").is_file()


def test_save_hf_folder_refuses_a_folder_of_something_else_whatever_the_flag(tmp_path, tiny_model_dir):
    from rexthinker_rl.model.loading import load_model, load_processor, save_hf_folder
    from rexthinker_rl.run.outputs import OutputError

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # a model-like name is not enough
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    model = load_model(str(tiny_model_dir), "float32", "sdpa")
    processor = load_processor(str(tiny_model_dir), 12544, 12544)
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="never replaced"):
            save_hf_folder(model, processor, folder, overwrite=overwrite)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "holiday.jpg"]
