"""The Rex-Thinker reward reproduction (rewards.rexthinker): hand-computed cases and an independent re-implementation."""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.parsing import REJECTION_TEXT
from rewards.rexthinker import compute_score, rexthinker_reward

GT = '```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "person"}]\n```'
GT_TWO = '```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "a"}, {"bbox_2d": [50, 60, 70, 80], "label": "b"}]\n```'


def one(predict: str, ground_truth: str = GT, format_weight: float = 0.1) -> dict:
    return compute_score([predict], [ground_truth], format_weight)[0]


def answer(boxes: str, think: str = "Planning. Action. Summary.") -> str:
    return f"<think>{think}</think><answer>```json\n{boxes}\n```</answer>"


def test_perfect_answer():
    assert one(answer('[{"bbox_2d": [10, 20, 30, 40], "label": "person"}]')) == {
        "overall": 1.0,
        "format": 1.0,
        "accuracy": 1.0,
    }


def test_correct_rejection_and_its_fragility():
    rejection = f"<think>No one matches.</think><answer>{REJECTION_TEXT}</answer>"
    assert one(rejection, REJECTION_TEXT) == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}
    assert one(rejection, GT)["accuracy"] == 0.0  # precision 1, recall 0
    # Quoting a hint box in the reasoning turns a correct rejection into a "prediction".
    quoting = f"<think>Person 1 [5, 5, 9, 9] is not it.</think><answer>{REJECTION_TEXT}</answer>"
    assert one(quoting, REJECTION_TEXT)["accuracy"] == 0.0  # precision 0, recall 1 (empty GT)


def test_numbers_in_think_are_scored():
    # Predicted lists: [5, 5, 9, 9] from <think> and the answer box: precision 1/2, recall 1, F1 2/3.
    result = one(answer("[[10, 20, 30, 40]]", think="Person 1 [5, 5, 9, 9] is not it."))
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["overall"] == pytest.approx(0.9 * 2 / 3 + 0.1)
    # Quoting the answer box in the reasoning is a duplicate: accuracy 0.
    assert one(answer("[[10, 20, 30, 40]]", think="Person 1 [10, 20, 30, 40] matches."))["accuracy"] == 0.0


def test_exact_equality_only():
    assert one(answer("[[10, 20, 30, 41]]"))["accuracy"] == 0.0  # IoU 0.95, still wrong
    assert one(answer("[[10.0, 20.0, 30.0, 40.0]]"))["accuracy"] == 1.0  # int equals float
    assert one(answer("[[10, 20, 30, 40], [10, 20, 30, 40]]"))["accuracy"] == 0.0  # duplicates
    assert one(answer("[[10.0, 20, 30, 40], [10, 20, 30, 40]]"))["accuracy"] == 0.0  # 10.0 == 10


def test_multi_box_f1():
    # One of two ground-truth boxes plus one wrong: precision 1/2, recall 1/2, F1 1/2.
    assert one(answer("[[10, 20, 30, 40], [1, 1, 2, 2]]"), GT_TWO)["accuracy"] == pytest.approx(0.5)
    assert one(answer("[[50, 60, 70, 80], [10, 20, 30, 40]]"), GT_TWO)["accuracy"] == 1.0  # order-free


@pytest.mark.parametrize(
    ("boxes", "accuracy"),
    [
        ("[[10,20,30,40]]", 1.0),  # no space after the comma
        ("[[10,  20, 30, 40]]", 0.0),  # two spaces: not a list, so nothing predicted
        ("[[10, 20, 30, 40.5.1]]", 0.0),  # malformed number
        ("[[-10, 20, 30, 40]]", 0.0),  # unsigned only: the list is not extracted
        ("[[10, 20, 30, 40], [7]]", 2 / 3),  # any length counts
        ("[[10, 20, 30, 40], [a, b]]", 1.0),  # not numbers: ignored
    ],
)
def test_number_list_extraction(boxes, accuracy):
    assert one(answer(boxes))["accuracy"] == pytest.approx(accuracy)


def test_malformed_number_in_ground_truth_zeroes_accuracy():
    assert one(answer("[[10, 20, 30, 40]]"), "[[10, 20, 30, 4..0]]")["accuracy"] == 0.0


@pytest.mark.parametrize(
    ("predict", "fmt"),
    [
        ("<think>a</think><answer>b</answer>", 1.0),
        ("< think >a</ think >\n < answer > b < / answer >", 1.0),
        ("<think>a</think>\n\n<answer>b</answer>", 1.0),
        ("<think>a</think>x<answer>b</answer>", 0.0),
        ("<think>a</think><answer>b</answer>\nthanks", 0.0),
        (" <think>a</think><answer>b</answer> ", 1.0),  # whitespace next to < and > is removed first
        ("<think><think>a</think><answer>b</answer><answer>c</answer>", 1.0),  # the original's regex allows it
        ("<think>a\nb</think><answer>b\nc</answer>", 1.0),
        ("<answer>b</answer>", 0.0),
    ],
)
def test_format(predict, fmt):
    assert one(predict, REJECTION_TEXT)["format"] == fmt


def test_format_weight():
    result = one("no tags, box [10, 20, 30, 40]", format_weight=0.25)
    assert (result["accuracy"], result["format"], result["overall"]) == (1.0, 0.0, 0.75)


def test_contract_wrapper_and_length_check():
    inputs = [{"response": answer("[[10, 20, 30, 40]]"), "ground_truth": GT, "metadata": {"row_id": "a"}}]
    assert rexthinker_reward(inputs, format_weight=0.5) == [{"overall": 1.0, "format": 1.0, "accuracy": 1.0}]
    with pytest.raises(ValueError, match="2 predictions but 1 ground truths"):
        compute_score(["a", "b"], [GT])


def test_repeated_ground_truth_box_caps_recall():
    # reward_func.py lines 41-42: recall counts the *predicted* boxes found in the ground truth, over len(gt): a
    # prediction [A] against a ground truth [A, A] has recall 1/2, precision 1, F1 2/3.
    twice = "```json\n" + json.dumps([{"bbox_2d": [10, 20, 30, 40], "label": "a"}] * 2) + "\n```"
    assert one(answer("[[10, 20, 30, 40]]"), twice)["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("ground_truth", [None, 7, ["[1, 2, 3, 4]"], "[[1.2.3, 4, 5, 6]]", "[.]", b"[1, 2, 3, 4]"])
def test_malformed_ground_truth_scores_zero_and_never_raises(ground_truth):
    # reward_func.py lines 31-55: parsing runs inside a bare try/except that scores 0.
    inputs = [{"response": answer("[[1, 2, 3, 4]]"), "ground_truth": ground_truth, "metadata": {"row_id": "bad"}}]
    assert rexthinker_reward(inputs) == [{"overall": 0.1, "format": 1.0, "accuracy": 0.0}]


# --- the original, re-implemented from rexthinker/scripts/reward_func.py (IDEA-Research/Rex-Thinker), written here
# --- from reading it (lines cited), without its debug logging; the fuzz test below holds ours equal to it.


def original_parse_json(text):
    # reward_func.py lines 22-29: re.findall of r"\[([0-9\.]+(?:, ?[0-9\.]+)*)\]", each match split on ",",
    # a piece with "." becomes float(piece), any other int(piece) (both accept the space after a comma).
    lists = []
    for body in re.findall(r"\[([0-9\.]+(?:, ?[0-9\.]+)*)\]", text):
        lists.append([float(piece) if "." in piece else int(piece) for piece in body.split(",")])
    return lists


def original_accuracy(predict, ground_truth):
    # reward_func.py lines 31-55 (the part that decides the value).
    try:
        gt_box = original_parse_json(ground_truth)
        out_box = original_parse_json(predict)
        if len(gt_box) == 0 and len(out_box) == 0:
            return 1.0
        if len(out_box) != len({tuple(box) for box in out_box}):
            return 0.0
        hits = [box for box in out_box if box in gt_box]
        recall = len(hits) / len(gt_box) if len(gt_box) > 0 else 1.0
        precision = len(hits) / len(out_box) if len(out_box) > 0 else 1.0
        return 2 * recall * precision / (recall + precision) if (recall + precision) > 0 else 0.0
    except Exception:
        return 0.0


def original_compute_score(predicts, ground_truths, format_weight=0.1):
    # reward_func.py lines 69-88, with format_reward of lines 7-18 (fullmatch after removing whitespace around
    # "<", ">" and "/").
    scores = []
    for predict, ground_truth in zip(predicts, ground_truths, strict=False):  # a plain zip, as the original
        predict = re.sub(r"\s*(<|>|/)\s*", r"\1", predict)
        format_score = 1.0 if re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", predict, re.DOTALL) else 0.0
        accuracy_score = original_accuracy(predict, ground_truth)
        scores.append(
            {
                "overall": (1 - format_weight) * accuracy_score + format_weight * format_score,
                "format": format_score,
                "accuracy": accuracy_score,
            }
        )
    return scores


FRAGMENTS = st.sampled_from(
    ["<think>", "</think>", "<answer>", "</answer>", "< think >", "</ answer>", " ", "\n", "[", "]", ",", ", ",
     ",  ", "1", "10", "2.5", "1.2.3", ".", "0", "\u0663", "a", "/", REJECTION_TEXT, "[10, 20, 30, 40]", "[1,2]",
     "[10.0, 20, 30, 40.0]", "[5, 6, 7, 8]"]
)  # fmt: skip
TEXTS = st.lists(FRAGMENTS, max_size=25).map("".join) | st.text(max_size=60)
SMALL_BOXES = st.lists(st.sampled_from([[10, 20, 30, 40], [5, 6, 7, 8], [1, 2, 3, 4], [10.0, 20.0, 30.0, 40.0]]),
                       max_size=4)  # fmt: skip
# Ground truths as the converters write them, with boxes repeated (lists are drawn with replacement), plus malformed
# ones: a broken number, a non-string, arbitrary text.
GROUND_TRUTHS = (
    SMALL_BOXES.map(lambda boxes: "```json\n" + json.dumps([{"bbox_2d": b, "label": "x"} for b in boxes]) + "\n```")
    | SMALL_BOXES.map(lambda boxes: json.dumps(boxes).replace("[1, 2,", "[1.2.3, 2,"))
    | st.sampled_from([None, 3, REJECTION_TEXT, "[[1.2.3]]", "[\u0663, 1, 2, 3]"])
    | TEXTS
)
PREDICTIONS = TEXTS | SMALL_BOXES.map(lambda boxes: f"<think>x</think><answer>{json.dumps(boxes)}</answer>")


@settings(max_examples=1500, deadline=None, database=None)
@given(predict=PREDICTIONS, ground_truth=GROUND_TRUTHS, format_weight=st.sampled_from([0.1, 0.0, 0.25, 1.0]))
def test_equals_the_original_on_every_input(predict, ground_truth, format_weight):
    ours = rexthinker_reward([{"response": predict, "ground_truth": ground_truth, "metadata": {}}], format_weight)
    assert ours == original_compute_score([predict], [ground_truth], format_weight)  # exactly, floats included
