"""The RL prompt dataset on the tiny model's processor: prompt token counts, the resized frame, over-long prompts, the
processor's own pixel bounds, and errors that name file and row. (The frame maths, row reading and the sampler need no
model: tests/unit/test_data.py.)"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from rexthinker_rl.config import DataConfig
from rexthinker_rl.data.dataset import DataError, RLDataset, resized_size
from rexthinker_rl.data.prompts import load_preset
from rexthinker_rl.model.loading import load_processor
from tests.unit.test_data import SYNTH_PIXELS, _jsonl_row, _png, _write_jsonl


@pytest.fixture(scope="module")
def tiny_processor(tiny_model_dir):
    return load_processor(str(tiny_model_dir), SYNTH_PIXELS, SYNTH_PIXELS)


def _synth_cfg(**overrides) -> DataConfig:
    return DataConfig(min_pixels=SYNTH_PIXELS, max_pixels=SYNTH_PIXELS, **overrides)


def test_dataset_errors_name_file_and_row(tmp_path, tiny_processor):
    (tmp_path / "img0.png").write_bytes(_png())
    path = _write_jsonl(tmp_path, [_jsonl_row(), _jsonl_row(), _jsonl_row(image="missing.png")])
    with pytest.raises(DataError, match="data.jsonl row 2: image file 'missing.png' not found"):
        RLDataset(str(path), tiny_processor, DataConfig(min_pixels=SYNTH_PIXELS, max_pixels=SYNTH_PIXELS))
    with pytest.raises(DataError, match="no column 'question'"):
        RLDataset(str(path), tiny_processor, DataConfig(prompt_key="question"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RLDataset(str(tmp_path / "nope.parquet"), tiny_processor, DataConfig())


def test_prompt_tokens_match_the_processor(synthetic_data_dir, tiny_processor):
    dataset = RLDataset(str(synthetic_data_dir / "train.parquet"), tiny_processor, _synth_cfg())
    assert len(dataset) == 64 and dataset.num_filtered == 0
    table = pq.read_table(synthetic_data_dir / "train.parquet").to_pylist()
    for i in (0, 1, 7, 63):
        sample = dataset[i]
        inputs = tiny_processor(text=[sample.prompt_text], images=[sample.image], return_tensors="pt")
        assert sample.num_prompt_tokens == inputs["input_ids"].shape[1]
        assert inputs["image_grid_thw"].tolist() == [[1, 8, 8]]  # 112x112 unchanged: 8x8 patches -> 16 tokens
        assert sample.prompt_text.count("<|image_pad|>") == 1
        assert sample.prompt_text.endswith("<|im_start|>assistant\n")
        row = table[i]
        assert sample.uid == row["id"]
        assert sample.ground_truth == row["answer"] and sample.sft_target == row["sft_target"]
        assert sample.image.mode == "RGB" and sample.image.size == (112, 112)
        assert sample.metadata == {
            "image_size": [112, 112],
            "resized_size": [112, 112],
            "row_id": row["id"],
            "hints": json.loads(row["hints"]),
            "referring": row["referring"],
            "category": row["category"],
        }
        user = sample.messages[-1]
        assert sample.messages[0] == {"role": "system", "content": "You are a helpful assistant."}
        assert user["content"][0] == {"type": "image"}
        assert user["content"][1]["text"] == row["problem"] + "\n" + load_preset("rexthinker-rl").instruction


def test_jsonl_image_is_resized_once_and_metadata_parsed_from_text(tmp_path, tiny_model_dir):
    (tmp_path / "img0.png").write_bytes(_png(size=(200, 150)))
    path = _write_jsonl(tmp_path, [_jsonl_row()])
    cfg = DataConfig(min_pixels=3136, max_pixels=SYNTH_PIXELS, format_prompt="", system_prompt="")
    processor = load_processor(str(tiny_model_dir), cfg.min_pixels, cfg.max_pixels)
    sample = RLDataset(str(path), processor, cfg)[0]
    assert resized_size(200, 150, cfg.min_pixels, cfg.max_pixels) == (112, 84)
    assert sample.image.size == (112, 84)
    inputs = processor(text=[sample.prompt_text], images=[sample.image], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [[1, 6, 8]]  # the processor does not resize it again
    assert sample.num_prompt_tokens == inputs["input_ids"].shape[1]
    assert sample.uid == "data.jsonl:0"
    assert "<image>" not in sample.prompt_text and len(sample.messages) == 1
    assert sample.metadata["hints"] == {"square": [[10, 10, 40, 40], [60, 60, 90, 90]]}
    assert sample.metadata["referring"] == "the red square" and sample.metadata["category"] == "square"
    assert sample.metadata["image_size"] == [200, 150]


def test_overlong_prompts_filtered_or_rejected(synthetic_data_dir, tiny_processor, caplog):
    path = str(synthetic_data_dir / "train.parquet")
    lengths = [sample.num_prompt_tokens for sample in RLDataset(path, tiny_processor, _synth_cfg())]
    limit = sorted(lengths)[len(lengths) // 2]
    with caplog.at_level("WARNING"):
        dataset = RLDataset(path, tiny_processor, _synth_cfg(max_prompt_length=limit))
    expected = sum(length > limit for length in lengths)
    assert 0 < expected < len(lengths)
    assert dataset.num_filtered == expected and len(dataset) == len(lengths) - expected
    assert all(dataset[i].num_prompt_tokens <= limit for i in range(len(dataset)))
    assert f"dropped {expected} prompts" in caplog.text
    first_long = lengths.index(next(length for length in lengths if length > limit))
    with pytest.raises(DataError, match=f"train.parquet row {first_long}: prompt is"):
        RLDataset(path, tiny_processor, _synth_cfg(max_prompt_length=limit, filter_overlong_prompts=False))


def test_max_samples_counts_kept_prompts(synthetic_data_dir, tiny_processor):
    path = str(synthetic_data_dir / "train.parquet")
    full = RLDataset(path, tiny_processor, _synth_cfg())
    limit = sorted(sample.num_prompt_tokens for sample in full)[32]
    dataset = RLDataset(path, tiny_processor, _synth_cfg(max_prompt_length=limit), max_samples=5)
    kept = [full[i].uid for i in range(len(full)) if full[i].num_prompt_tokens <= limit][:5]
    assert [dataset[i].uid for i in range(len(dataset))] == kept


def test_resized_size_column_must_match_pixel_bounds(synthetic_data_dir, tiny_model_dir):
    cfg = DataConfig(min_pixels=3136, max_pixels=3136)
    processor = load_processor(str(tiny_model_dir), cfg.min_pixels, cfg.max_pixels)
    with pytest.raises(DataError, match="train.parquet row 0: resized_size column .* other min/max pixels"):
        RLDataset(str(synthetic_data_dir / "train.parquet"), processor, cfg)


def test_processor_with_other_bounds_is_refused(tmp_path, tiny_model_dir):
    (tmp_path / "img0.png").write_bytes(_png(size=(200, 150)))
    path = _write_jsonl(tmp_path, [_jsonl_row()])
    processor = load_processor(str(tiny_model_dir), SYNTH_PIXELS, SYNTH_PIXELS)  # would resize 112x84 to 140x112
    with pytest.raises(DataError, match="data.jsonl row 0: .*processor"):
        RLDataset(str(path), processor, DataConfig(min_pixels=3136, max_pixels=SYNTH_PIXELS))
