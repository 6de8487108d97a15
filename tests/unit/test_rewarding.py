"""The controller's reward runner: loads the reward before training, names the row a reward crashes on."""

import time
from pathlib import Path

import pytest

from rexthinker_rl.config import ConfigError, load_config
from rexthinker_rl.train.rewarding import RewardError, RewardRunner, _spec, score_all

GT = '```json\n[{"bbox_2d": [10, 10, 50, 50], "label": "the red circle"}]\n```'


def _input(response, row_id):
    return {"response": response, "ground_truth": GT, "metadata": {"row_id": row_id, "resized_size": [112, 112]}}


def test_default_reward_scores_a_perfect_answer_fully():
    spec = _spec(load_config().reward)
    perfect = (
        f"<think>Planning: find it. Action: Box 1 red circle: yes. Summary: 1 match.</think><answer>{GT}</answer>"
    )
    scores = score_all(spec, [_input(perfect, "a"), _input("no idea", "b")])
    assert scores[0]["overall"] == pytest.approx(1.0)
    assert scores[1]["overall"] == 0.0
    assert {"accuracy", "format"} <= set(scores[0])


def test_a_crashing_reward_names_the_row(tmp_path: Path):
    plugin = tmp_path / "fragile.py"
    plugin.write_text(
        "def fragile(inputs):\n    return [{'overall': 1.0 / (len(i['response']) - 3)} for i in inputs]\n"
    )
    spec = {"function": f"{plugin}:fragile", "kwargs": {}}
    with pytest.raises(RewardError, match=r"reward failed on row row-7 \(batch index 1\).*ZeroDivisionError"):
        score_all(spec, [_input("long enough", "row-0"), _input("abc", "row-7")])


def test_bad_reward_function_fails_before_training(tmp_path: Path):
    config = load_config(None, ["reward.components=[]", "reward.function=rewards.box:no_such_function"])
    with pytest.raises(ConfigError, match=r"reward\.function=rewards\.box:no_such_function: .*no attribute"):
        RewardRunner(config.reward)


def test_a_reward_that_calls_sys_exit_is_an_error_naming_the_row(tmp_path: Path):
    """sys.exit(0) in a reward ended the run with exit status 0 (issue 28): now an error naming the row."""
    plugin = tmp_path / "quits.py"
    plugin.write_text("import sys\n\n\ndef quits(inputs):\n    if any(i['response'] == 'bye' for i in inputs):\n"
                      "        sys.exit(0)\n    return [{'overall': 1.0} for _ in inputs]\n")  # fmt: skip
    spec = {"function": f"{plugin}:quits", "kwargs": {}}
    with pytest.raises(RewardError, match=r"reward failed on row row-2 \(batch index 1\): it called sys.exit\(0\)"):
        score_all(spec, [_input("hello", "row-1"), _input("bye", "row-2")])


def test_a_blocking_reward_is_stopped_before_training_within_its_timeout(tmp_path: Path):
    plugin = tmp_path / "stuck.py"
    plugin.write_text("import time\n\n\ndef stuck(inputs):\n    time.sleep(600)\n")
    overrides = ["reward.components=[]", f"reward.function={plugin}:stuck", "reward.timeout_s=1"]
    runner = RewardRunner(load_config(None, overrides).reward)
    started = time.monotonic()
    with pytest.raises(RewardError, match=r"did not return within reward.timeout_s=1 s on the sample completions"):
        runner.check([_input("hello", "row-1")])
    assert time.monotonic() - started < 10
