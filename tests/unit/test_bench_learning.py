"""benchmarks/bench_learning.py: the split of the reward a seed could still gain, by what each prompt asks, and a
finished seed read back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import benchutil bare
from bench_learning import WALL_FILE, room_by_ask, seed_record  # noqa: E402

ROWS = [  # referring expression, answer boxes, greedy reward at step 0 and step 20 (each image: one circle hint)
    ("the red circle", [[1, 2, 3, 4]], 1.0, 1.0),
    ("the leftmost circle", [[1, 2, 3, 4]], 0.1, 1.0),
    ("the topmost square", [[5, 6, 7, 8]], 0.1, 0.1),
    ("all blue squares", [[1, 2, 3, 4], [5, 6, 7, 8]], 0.55, 1.0),
    ("the green triangle", [], 0.0, 1.0),
]


def write_run(run: Path, rewards: dict[str, list[float]]) -> None:
    (run / "data").mkdir(parents=True)
    (run / "grpo").mkdir()
    table = {"referring": [r[0] for r in ROWS], "answer_boxes": [json.dumps(r[1]) for r in ROWS]}
    table |= {"hints": [json.dumps({"circle": [[1, 2, 3, 4]]})] * len(ROWS), "category": ["circle"] * len(ROWS)}
    pq.write_table(pa.table(table), run / "data" / "val.parquet")
    (run / "grpo" / "val_rewards.json").write_text(json.dumps(rewards))


def test_the_room_splits_by_what_a_prompt_asks_and_adds_up_to_one_minus_the_mean(tmp_path):
    rewards = {"0": [r[2] for r in ROWS], "20": [r[3] for r in ROWS]}
    write_run(tmp_path, rewards)
    room = room_by_ask(tmp_path, "0", "20")
    assert {kind: entry["prompts"] for kind, entry in room.items()} == {
        "colour": 1,
        "position": 2,
        "multi": 1,
        "rejection": 1,
    }
    assert room["position"]["start"] == pytest.approx((0.9 + 0.9) / 5)
    assert room["position"]["end"] == pytest.approx(0.9 / 5)
    assert room["rejection"] == {"prompts": 1, "start": pytest.approx(1 / 5), "end": 0.0}
    for step, side in (("0", "start"), ("20", "end")):
        mean = sum(rewards[step]) / len(ROWS)
        assert sum(entry[side] for entry in room.values()) == pytest.approx(1 - mean)


def test_a_validation_that_left_rows_out_gives_no_split(tmp_path):
    write_run(tmp_path, {"0": [1.0] * 4, "20": [1.0] * 4})  # 4 rewards for 5 rows: the order no longer lines up
    assert room_by_ask(tmp_path, "0", "20") == {}


def test_a_seed_read_back_keeps_the_wall_time_its_run_wrote(tmp_path):
    write_run(tmp_path, {"0": [r[2] for r in ROWS], "20": [r[3] for r in ROWS]})
    summary = {"val_reward_before": 0.35, "val_reward_last": 0.82, "val_reward_gain": 0.47, "val_reward_gain_se": 0.1}
    summary |= {"val_prompts": 5, "val_prompts_improved": 3, "val_prompts_worse": 0}
    summary |= {"train_reward_first_quarter": 0.3, "train_reward_last_quarter": 0.6}
    (tmp_path / "grpo" / "summary.json").write_text(json.dumps(summary))
    vals = [{"step": step, "val/reward": value} for step, value in ((0, 0.35), (20, 0.82))]
    (tmp_path / "grpo" / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in vals))
    assert "wall_s" not in seed_record(101, tmp_path)  # a run from before the file: no time, not a made-up one
    (tmp_path / WALL_FILE).write_text("537.4\n")
    record = seed_record(101, tmp_path)
    assert record["wall_s"] == 537.4 and record["gain"] == 0.47
    single = {"prompts": 4, "start": pytest.approx((1 + 0.1 + 0.1 + 0.55) / 4), "end": pytest.approx(3.1 / 4)}
    assert record["by_kind"]["single"] == single  # one hint each: every row with a target
