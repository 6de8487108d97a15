"""Rex-Thinker's own files through the tiny model's processor: its parquet trains as it is (raw images, "<image>"
problems, the rexthinker-grpo prompt), and a frame recorded in a converted file must match the config. The data tools
without a model: tests/unit/test_rexthinker_files.py."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from data_tools.cli import main
from rexthinker_rl.config import DataConfig
from rexthinker_rl.data.dataset import RLDataset, read_rows, resized_size
from rexthinker_rl.data.prompts import chat_prompt, load_preset
from rexthinker_rl.model.loading import load_processor
from tests.unit.test_rexthinker_files import original_files  # noqa: F401  (the fixture)


def test_the_original_parquet_loads(original_files, tiny_model_dir):  # noqa: F811
    folder, _, rows = original_files
    parquet = folder / "original.parquet"
    # The original parquet trains directly: raw binary images, "<image>" problems, the rexthinker-grpo prompt.
    cfg = DataConfig(prompt_preset="rexthinker-grpo", min_pixels=12544, max_pixels=1003520, max_prompt_length=1024)
    processor = load_processor(str(tiny_model_dir), cfg.min_pixels, cfg.max_pixels)
    dataset = RLDataset(str(parquet), processor, cfg)
    sample = dataset[0]
    assert sample.prompt_text == chat_prompt(processor, load_preset("rexthinker-grpo"), rows[0]["problem"])[1]
    assert sample.metadata["referring"] == "the man on the left" and sample.metadata["hints"]["person"]
    assert sample.image.size == resized_size(*Image.open(io.BytesIO(rows[0]["images"])).size, 12544, 1003520)
    assert "box_rounding" not in sample.metadata  # no record in the original's file: nothing is claimed


def test_a_recorded_frame_must_match_the_config(original_files, tiny_model_dir):  # noqa: F811
    folder, images, _ = original_files
    out = folder / "ours.parquet"
    args = ["convert", "--anno", str(folder / "anno_with_candidates.json"), "--image-root", str(images)]
    assert main([*args, "--out", str(out), "--prompt-preset", "rexthinker-grpo", "--gt-policy", "snap"]) == 0
    processor = load_processor(str(tiny_model_dir), 12544, 1003520)
    cfg = DataConfig(prompt_preset="rexthinker-grpo", min_pixels=12544, max_pixels=1003520, max_prompt_length=1024)
    assert RLDataset(str(out), processor, cfg)[0].metadata["box_rounding"] == "original"
    with pytest.raises(ValueError, match="made with min_pixels=12544, max_pixels=1003520 .* data.min_pixels=3136"):
        RLDataset(str(out), processor, DataConfig(prompt_preset="rexthinker-grpo", min_pixels=3136))
    assert read_rows(out).column_names  # still a plain parquet file for every other reader
