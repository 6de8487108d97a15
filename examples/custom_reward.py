"""A reward of your own: box F1, scaled down when an answered box is not one of the prompt's hint boxes.

    rexthinker-train --config configs/grpo_tiny.yaml reward.components=[] \
        reward.function=examples/custom_reward.py:hint_faithful_f1 reward.kwargs.penalty=0.5

The contract (rewards/types.py): a list of {response, ground_truth, metadata} in, one {"overall": float, ...} out per
input; never raise on a bad completion, raise naming the row on a bad ground truth (rewards.box.iou_f1 does both).
Every other key is logged as reward/<name>. Tested by tests/tiny/test_custom_reward.py.
"""

from rewards.box import iou_f1
from rewards.parsing import parse_completion
from rewards.types import RewardInput, RewardScore


def hint_faithful_f1(inputs: list[RewardInput], penalty: float = 0.5) -> list[RewardScore]:
    scores = []
    for item, f1 in zip(inputs, iou_f1(inputs), strict=True):
        hints = [list(box) for boxes in item["metadata"].get("hints", {}).values() for box in boxes]
        answer = parse_completion(item["response"]).answer  # never raises; an unreadable answer has no boxes
        faithful = all(list(box) in hints for box in answer.boxes)
        scores.append({"overall": f1["overall"] * (1.0 if faithful else penalty), "faithful": float(faithful)})
    return scores
