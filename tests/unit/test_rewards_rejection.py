"""Rejection correctness (rewards.rejection)."""

import pytest

from rewards.parsing import REJECTION_TEXT
from rewards.rejection import rejection_reward

BOXES = '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "person"}]\n```'


def item(answer: str, ground_truth: str) -> dict:
    return {"response": f"<think>x</think><answer>{answer}</answer>", "ground_truth": ground_truth, "metadata": {}}


@pytest.mark.parametrize(
    ("answer", "ground_truth", "overall", "correct", "rejected"),
    [
        (REJECTION_TEXT, REJECTION_TEXT, 1.0, 1.0, 1.0),  # correct rejection
        ("[]", "[]", 1.0, 1.0, 1.0),  # empty lists are rejections on both sides
        (BOXES, BOXES, 0.0, 1.0, 0.0),  # correct detection: the box reward judges the boxes
        ("[[500, 500, 600, 600]]", BOXES, 0.0, 1.0, 0.0),  # wrong box, right decision
        (BOXES, REJECTION_TEXT, -1.0, 0.0, 0.0),  # hallucinated box
        (REJECTION_TEXT, BOXES, -1.0, 0.0, 1.0),  # rejected a present object
        ("somewhere", BOXES, 0.0, 0.0, 0.0),  # unparseable
        ("somewhere", REJECTION_TEXT, 0.0, 0.0, 0.0),
    ],
)
def test_default_table(answer, ground_truth, overall, correct, rejected):
    assert rejection_reward([item(answer, ground_truth)])[0] == {
        "overall": overall,
        "correct": correct,
        "rejected": rejected,
    }


def test_configurable_values():
    kwargs = {
        "correct_rejection": 2.0,
        "correct_detection": 0.5,
        "hallucination_penalty": 3.0,
        "false_rejection_penalty": 0.25,
        "invalid_penalty": 1.0,
    }
    inputs = [
        item(REJECTION_TEXT, REJECTION_TEXT),
        item(BOXES, BOXES),
        item(BOXES, REJECTION_TEXT),
        item(REJECTION_TEXT, BOXES),
        item("??", BOXES),
    ]
    assert [score["overall"] for score in rejection_reward(inputs, **kwargs)] == [2.0, 0.5, -3.0, -0.25, -1.0]


def test_rejection_inside_think_does_not_count():
    response = f"<think>Maybe {REJECTION_TEXT} No, Person 1 matches.</think><answer>{BOXES}</answer>"
    score = rejection_reward([{"response": response, "ground_truth": BOXES, "metadata": {}}])[0]
    assert score["rejected"] == 0.0 and score["correct"] == 1.0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1", True])
def test_bad_configuration_raises(value):
    with pytest.raises(ValueError, match="hallucination_penalty must be a finite number"):
        rejection_reward([], hallucination_penalty=value)


def test_malformed_ground_truth_names_the_row():
    with pytest.raises(ValueError, match="row 'x1'"):
        rejection_reward([{"response": "", "ground_truth": "maybe", "metadata": {"row_id": "x1"}}])
