"""What a step's rollouts say beside the loss: the reward split by kind, the groups GRPO can learn from, the log."""

import json
from types import SimpleNamespace

from rexthinker_rl.rollout.base import RolloutResult
from rexthinker_rl.run.rollout_log import group_metrics, log_rollouts, metrics_by_kind

BOXES = '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "the red circle"}]\n```'
REJECTION = "There is no such thing in the image."


def _prompt(truth: str, uid: str) -> SimpleNamespace:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"find {uid}"}]}]
    return SimpleNamespace(ground_truth=truth, uid=uid, messages=messages)


def _results(groups: list[list[float]]) -> list[RolloutResult]:
    return [RolloutResult(i, [1], [0.0], f"r{i}.{j}", "stop") for i, group in enumerate(groups) for j in group]


def _scores(groups: list[list[tuple[float, float]]]) -> list[dict]:
    return [{"overall": overall, "accuracy": accuracy} for group in groups for overall, accuracy in group]


def test_contrast_and_solved_by_kind():
    """Three present prompts (one all-wrong, one with a right answer, one all-right) and one rejection prompt."""
    prompts = [_prompt(BOXES, "a"), _prompt(BOXES, "b"), _prompt(BOXES, "c"), _prompt(REJECTION, "d")]
    groups = [
        [(0.1, 0.0), (0.1, 0.0)],  # no contrast, unsolved
        [(1.0, 1.0), (0.1, 0.0)],  # contrast, solved
        [(1.0, 1.0), (1.0, 1.0)],  # no contrast, solved
        [(1.0, 1.0), (0.1, 0.0)],
    ]
    scores = _scores(groups)
    metrics = group_metrics(prompts, _results(groups), scores)
    assert metrics == {
        "groups/contrast@present": 1 / 3,
        "groups/solved@present": 2 / 3,
        "groups/contrast@rejection": 1.0,
        "groups/solved@rejection": 1.0,
    }
    by_kind = metrics_by_kind(prompts, _results(groups), scores, "reward")
    assert by_kind["reward/accuracy@present"] == 3 / 6 and by_kind["reward/overall@rejection"] == 0.55


def test_solved_needs_the_accuracy_component():
    """A reward without an accuracy component (a custom one) still gets the contrast, and no solved share."""
    prompts = [_prompt(BOXES, "a")]
    metrics = group_metrics(prompts, _results([[0.2, 0.5]]), [{"overall": 0.2}, {"overall": 0.5}])
    assert metrics == {"groups/contrast@present": 1.0}


def test_log_rollouts_counts_and_all(tmp_path):
    prompts = [_prompt(BOXES, "a")]
    results = _results([[0.0, 0.0, 0.0]])
    scores = [{"overall": 0.0}] * 3
    for count, expected in ((0, 0), (2, 2), (-1, 3)):
        path = tmp_path / f"{count}.jsonl"
        log_rollouts(path, 1, prompts, results, scores, count)
        lines = path.read_text().splitlines() if path.exists() else []
        assert len(lines) == expected
        assert all(json.loads(line)["uid"] == "a" for line in lines)
