"""rexthinker_rl.data.dataset without a model: box frames, row reading and the resumable sampler (the RL prompt dataset, which
needs the tiny model's processor: tests/tiny/test_dataset.py)."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from rexthinker_rl.config.rules import DATA_ORDERS
from rexthinker_rl.data.dataset import (
    DataError,
    ResumableSampler,
    boxes_to_original,
    boxes_to_resized,
    check_fixed_point,
    hints_from_problem,
    image_tokens,
    read_rows,
    resized_size,
)

SYNTH_PIXELS = 112 * 112


# ------------------------------------------------------------------------------------------------------------ frames
def test_resized_size_is_smart_resize_with_width_first():
    # smart_resize takes (height, width) and returns (h, w); ours takes and returns (w, h).
    assert smart_resize(100, 130, factor=28, min_pixels=3136, max_pixels=1003520) == (112, 140)
    assert resized_size(130, 100, 3136, 1003520) == (140, 112)
    assert resized_size(112, 112, SYNTH_PIXELS, SYNTH_PIXELS) == (112, 112)
    assert resized_size(1000, 500, 3136, 200_000) == (616, 308)  # scaled down into max_pixels


@settings(max_examples=200, deadline=None)
@given(width=st.integers(28, 4000), height=st.integers(28, 4000))
def test_resized_frame_is_multiple_of_28_within_bounds(width, height):
    min_pixels, max_pixels = 16 * 28 * 28, 1280 * 28 * 28
    resized_w, resized_h = resized_size(width, height, min_pixels, max_pixels)
    assert resized_w % 28 == 0 and resized_h % 28 == 0
    assert resized_w * resized_h <= max_pixels
    assert image_tokens(resized_w, resized_h) == resized_w * resized_h // (28 * 28)


def test_image_tokens():
    assert image_tokens(112, 112) == 16
    assert image_tokens(140, 84) == 15
    with pytest.raises(ValueError, match="multiple of 28"):
        image_tokens(100, 112)


def test_fixed_point_check_catches_bounds_that_resize_twice():
    # With min = max = 112*112, a 130x100 image becomes 112x84, which the processor would resize again to 140x112.
    assert resized_size(130, 100, SYNTH_PIXELS, SYNTH_PIXELS) == (112, 84)
    with pytest.raises(DataError, match="again to 140x112"):
        check_fixed_point((112, 84), SYNTH_PIXELS, SYNTH_PIXELS)
    check_fixed_point((140, 112), 3136, 1003520)


def test_box_conversion_by_hand():
    assert boxes_to_resized([[100, 50, 200, 100]], (200, 100), (112, 56)) == [[56, 28, 112, 56]]
    assert boxes_to_resized([[10.4, 10.6, 20, 30]], (100, 100), (100, 100)) == [[10, 11, 20, 30]]
    # Boxes past the image edge are clipped into it.
    assert boxes_to_resized([[-5, -5, 150, 80]], (100, 100), (200, 100)) == [[0, 0, 200, 80]]
    assert boxes_to_original([[56, 28, 112, 56]], (200, 100), (112, 56)) == [[100.0, 50.0, 200.0, 100.0]]
    with pytest.raises(ValueError, match="4 numbers"):
        boxes_to_resized([[1, 2, 3]], (10, 10), (28, 28))


@st.composite
def frame_and_boxes(draw):
    width, height = draw(st.integers(28, 3000)), draw(st.integers(28, 3000))
    max_pixels = draw(st.sampled_from([128 * 28 * 28, 1280 * 28 * 28]))
    resized = resized_size(width, height, 4 * 28 * 28, max_pixels)
    boxes = []
    for _ in range(draw(st.integers(1, 4))):
        x0, x1 = sorted(draw(st.floats(0, width, allow_nan=False)) for _ in range(2))
        y0, y1 = sorted(draw(st.floats(0, height, allow_nan=False)) for _ in range(2))
        boxes.append([x0, y0, x1, y1])
    return (width, height), resized, boxes


@settings(max_examples=300, deadline=None)
@given(frame_and_boxes())
def test_box_round_trip(case):
    original, resized, boxes = case
    in_resized = boxes_to_resized(boxes, original, resized)
    assert all(isinstance(value, int) for box in in_resized for value in box)
    assert all(0 <= box[0] <= resized[0] and 0 <= box[3] <= resized[1] for box in in_resized)
    # resized -> original -> resized is exact; original -> resized -> original is off by at most half a resized pixel
    # (within 1 px whenever the image is not shrunk more than 2x).
    back = boxes_to_original(in_resized, original, resized)
    assert boxes_to_resized(back, original, resized) == in_resized
    tolerance = [0.5 * original[0] / resized[0] + 1e-6, 0.5 * original[1] / resized[1] + 1e-6]
    for box, restored in zip(boxes, back, strict=True):
        for axis, (value, value_back) in enumerate(zip(box, restored, strict=True)):
            assert abs(value - value_back) <= tolerance[axis % 2]
    if original[0] <= 2 * resized[0] and original[1] <= 2 * resized[1]:
        assert all(
            abs(a - b) <= 1
            for box, restored in zip(boxes, back, strict=True)
            for a, b in zip(box, restored, strict=True)
        )


def test_hints_from_problem():
    problem = 'Hint: Object and its coordinates in this image: {"person": [[1, 2, 3, 4], [5, 6, 7, 8]]}\nPlease ...'
    assert hints_from_problem(problem) == {"person": [[1, 2, 3, 4], [5, 6, 7, 8]]}
    assert hints_from_problem("Please detect the cat in the image.") is None
    with pytest.raises(DataError, match="x.parquet row 3: the hint JSON"):
        hints_from_problem("coordinates in this image: {broken", where="x.parquet row 3")
    with pytest.raises(DataError, match="must be a list of"):
        hints_from_problem('coordinates in this image: {"cat": [[1, 2, 3]]}', where="x.parquet row 3")


# -------------------------------------------------------------------------------------------------------------- rows
def _png(size=(112, 112), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_jsonl(folder, rows):
    path = folder / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _jsonl_row(image="img0.png", problem=None):
    hints = 'Hint: Object and its coordinates in this image: {"square": [[10, 10, 40, 40], [60, 60, 90, 90]]}'
    answer = '```json\n[{"bbox_2d": [10, 10, 40, 40], "label": "the red square"}]\n```'
    return {
        "image": image,
        "problem": problem or f"<image>{hints}\nPlease detect the red square in the image.",
        "answer": answer,
    }


def test_read_rows_from_shards_and_jsonl(tmp_path, synthetic_data_dir):
    table = pq.read_table(synthetic_data_dir / "train.parquet")
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(table.slice(0, 10), shards / "part-0.parquet")
    pq.write_table(table.slice(10, 5), shards / "part-1.parquet")
    rows = read_rows(shards)
    assert len(rows) == 15
    assert rows[12]["id"] == table.slice(12, 1).to_pylist()[0]["id"]
    assert rows.where(12) == "part-1.parquet row 2"

    (tmp_path / "img0.png").write_bytes(_png())
    rows = read_rows(_write_jsonl(tmp_path, [_jsonl_row(), _jsonl_row()]))
    assert len(rows) == 2 and rows.where(1) == "data.jsonl row 1"


# ----------------------------------------------------------------------------------------------------------- sampler
def _drain(sampler: ResumableSampler, count: int) -> list[list[int]]:
    return [sampler.next_batch() for _ in range(count)]


@settings(max_examples=60, deadline=None)
@given(
    num_samples=st.integers(4, 40),
    batch_size=st.integers(1, 4),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    stop=st.integers(0, 30),
    order=st.sampled_from(DATA_ORDERS),
)
def test_sampler_resume_equals_uninterrupted(num_samples, batch_size, shuffle, drop_last, stop, order):
    def make():
        return ResumableSampler(num_samples, batch_size, shuffle=shuffle, seed=3, drop_last=drop_last, order=order)

    total = 3 * make().batches_per_epoch + 1
    stop = min(stop, total)
    uninterrupted = _drain(make(), total)
    first = make()
    head = _drain(first, stop)
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # survives a JSON checkpoint
    assert head + _drain(resumed, total - stop) == uninterrupted


def test_sampler_epochs_cover_data_once_and_differ():
    sampler = ResumableSampler(10, 3, shuffle=True, seed=0)
    assert sampler.batches_per_epoch == 3 and len(sampler) == 3
    epochs = [[i for batch in sampler for i in batch] for _ in range(3)]
    assert sampler.epoch == 3 and sampler.state_dict() == {"epoch": 3, "batch_in_epoch": 0, "order": "ours"}
    assert all(len(set(order)) == 9 for order in epochs)  # drop_last drops one sample per epoch
    assert epochs[0] != epochs[1]
    assert epochs[0] != [i for batch in ResumableSampler(10, 3, shuffle=True, seed=1) for i in batch]
    plain = ResumableSampler(5, 2, shuffle=False, seed=0, drop_last=False)
    assert list(plain) == [[0, 1], [2, 3], [4]]


def test_sampler_as_dataloader_batch_sampler():
    sampler = ResumableSampler(8, 4, shuffle=True, seed=0)
    loader = torch.utils.data.DataLoader(list(range(100, 108)), batch_sampler=sampler, collate_fn=list)
    batches = list(loader)
    assert len(batches) == 2 and sorted(sum(batches, [])) == list(range(100, 108))


def test_sampler_rejects_bad_state():
    sampler = ResumableSampler(8, 4, shuffle=True, seed=0)
    with pytest.raises(KeyError, match="batch_in_epoch"):
        sampler.load_state_dict({"epoch": 1})
    with pytest.raises(ValueError, match="out of range"):
        sampler.load_state_dict({"epoch": 0, "batch_in_epoch": 2})
    too_few = ResumableSampler(3, 4, shuffle=False, seed=0)
    assert too_few.batches_per_epoch == 0  # the trainer reports this with the config keys to change
    with pytest.raises(ValueError, match="no batch of 4"):
        too_few.next_batch()
