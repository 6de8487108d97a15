"""The paper's recipe (configs/grpo_refcocog.yaml) end to end on CPU, from Rex-Thinker's own file formats: its records
(one JSON record a line under a .json name, a single `ans` box, `candidate_boxes` entries) with generated images ->
convert (rexthinker-grpo preset, original rounding, GT-in-hints snapped) -> validate -> 2 GRPO steps of the tiny model,
started from an EasyR1 actor checkpoint of it (model.path names the global_step folder: converted on the fly), with
the exact reward, EasyR1's loss aggregation, row order and request seed, validating in chunks on a parquet written in
the original's own format."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image, ImageDraw

from data_tools.cli import main as data_main
from rexthinker_rl.config import load_config
from tests import rexthinker_original as original
from tests.conftest import TINY_OVERRIDES
from tests.scale.ranks import run_ranks

pytestmark = [pytest.mark.slow]

# 112 x 112 and 140 x 112 images: inside the recipe's pixel bounds (12544..1003520), 16 and 20 image tokens.
SCENES = [((112, 112), [[10, 12, 50, 60], [60, 20, 100, 90]]), ((140, 112), [[5, 5, 60, 100], [70, 30, 130, 80]])]


@pytest.fixture(scope="module")
def original_format_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rexthinker_format")
    (folder / "images").mkdir()
    records = []
    for index, (size, boxes) in enumerate(SCENES):
        image = Image.new("RGB", size, (120, 120, 120))
        draw = ImageDraw.Draw(image)
        for colour, box in zip(("red", "blue"), boxes, strict=True):
            draw.rectangle(box, fill=colour)
        name = f"COCO_train2014_{index:012d}.jpg"
        image.save(folder / "images" / name, quality=95)
        for target, colour in enumerate(("red", "blue")):
            candidates = [{"bbox": [float(v) for v in box], "category": "block"} for box in boxes]
            # As the original's detector step leaves some rows: a detection a pixel off the ground truth.
            ans = [v + 0.7 for v in boxes[target]] if target == 1 else boxes[target]
            records.append({"image_name": name, "image_id": index, "ans": ans, "category": "block",
                            "referring": f"the {colour} block", "candidate_boxes": candidates})  # fmt: skip
    (folder / "anno_with_candidates.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = [original.convert_row(r, (folder / "images" / r["image_name"]).read_bytes()) for r in records]
    original.write_parquet(rows, folder / "original.parquet")
    return folder


@pytest.fixture(scope="module")
def paper_run(original_format_data, tiny_model_dir, tmp_path_factory):
    from rexthinker_rl.train.trainer import GRPOTrainer

    folder = original_format_data
    train = folder / "train.parquet"
    args = ["convert", "--anno", str(folder / "anno_with_candidates.json"), "--image-root", str(folder / "images")]
    assert data_main([*args, "--out", str(train), "--prompt-preset", "rexthinker-grpo", "--gt-policy", "snap"]) == 0
    assert data_main(["validate", str(train), "--min-pixels", "12544", "--max-pixels", "1003520"]) == 0
    run_dir = tmp_path_factory.mktemp("paper_run")
    easyr1 = tmp_path_factory.mktemp("easyr1") / "global_step_3"
    (easyr1 / "actor").mkdir(parents=True)
    run_ranks(original.write_easyr1_actor, 2, (str(tiny_model_dir), str(easyr1 / "actor")), easyr1.parent)
    cpu = [o for o in TINY_OVERRIDES if not o.startswith(("data.min_pixels", "data.max_pixels"))]
    config = load_config(
        "configs/grpo_refcocog.yaml",
        cpu
        + [
            f"model.path={easyr1}",  # an EasyR1 checkpoint, as Rex-Thinker's training leaves it
            "data.val_batch_size=3",  # the 4 validation rows in two generation calls
            f"data.train_files={train}",
            f"data.val_files={folder / 'original.parquet'}",  # Rex-Thinker's own parquet, as it writes it
            "data.max_response_length=24",
            "data.rollout_batch_size=2",
            "actor.global_batch_size=2",
            "actor.strategy=torch",
            "rollout.placement=separate",
            "rollout.engine=hf",
            "rollout.n=4",
            "trainer.total_steps=2",
            "trainer.val_freq=2",
            f"trainer.output_dir={run_dir}",
            "logging.sinks=[jsonl]",
        ],
    )
    trainer = GRPOTrainer(config)
    try:
        summary = trainer.fit()
    finally:
        trainer.shutdown()
    return config, summary, run_dir


def test_paper_recipe_trains_on_rexthinker_format_data(paper_run):
    config, summary, run_dir = paper_run
    assert config.data.prompt_preset == "rexthinker-grpo" and config.actor.loss_agg_mode == "micro-batch-token-mean"
    assert config.reward.function == "rewards.rexthinker:rexthinker_reward" and config.algorithm.kl_mode == "loss"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward/overall" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for record in steps:
        for key in ("reward/overall", "reward/accuracy", "reward/format", "actor/pg_loss", "actor/kl_loss"):
            assert math.isfinite(record[key]), key
        assert record["actor/skipped_updates"] == 0.0
    assert "val/reward" in steps[-1] and summary["steps"] == 2  # validated on the original-format parquet
    assert len(json.loads((run_dir / "val_rewards.json").read_text())["2"]) == 4  # every row, over two chunks
    assert (run_dir / "easyr1_model" / "config.json").is_file()  # the EasyR1 checkpoint, converted once
    assert (config.data.order, config.rollout.seed_mode, config.rollout.suppress_tokens) == (
        "easyr1",
        "easyr1",
        "image_pad",
    )
    rollout = json.loads((run_dir / "rollouts.jsonl").read_text().splitlines()[0])
    # The paper's prompt: the dataset's problem through r1v_format.jinja (the chat text, system message included, is
    # held byte for byte to the original's in tests/unit/test_prompts.py).
    assert rollout["prompt"].startswith("Hint: Object and its coordinates in this image: {")
    assert "block in this image. A conversation between User and Assistant." in rollout["prompt"]


def test_a_refused_resume_from_an_easyr1_model_path_changes_nothing(paper_run):
    """With an EasyR1 model.path the trainer makes the folder a run folder (config.yaml) before converting; into a run
    folder that has one, nothing is written before the resume's checks: a resume in another data.order is refused
    before Ray and leaves every file as it was (the conversion is reused, config.yaml not rewritten)."""
    from rexthinker_rl.train.checkpoint import CheckpointError
    from rexthinker_rl.train.trainer import GRPOTrainer

    _, _, run_dir = paper_run
    files = {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}
    config = load_config(run_dir / "config.yaml", ["data.order=ours"])
    with pytest.raises(CheckpointError, match="trained with data.order = 'easyr1', this run has 'ours'"):
        GRPOTrainer(config)
    assert {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()} == files
