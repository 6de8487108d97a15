"""The Rex-Thinker reward reproduction (rewards.rexthinker): hand-computed cases and an independent re-implementation."""

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
    with pytest.raises(ValueError, match="row 'bad'"):
        rexthinker_reward([{"response": "", "ground_truth": "[[1, 2]]", "metadata": {"row_id": "bad"}}])
    with pytest.raises(ValueError, match="2 predictions but 1 ground truths"):
        compute_score(["a", "b"], [GT])


# --- an independent re-implementation of the described behaviour, written without regular expressions ---

MARKS = "<>/"


def reference_strip(text: str) -> str:
    """Remove every whitespace run that touches a mark on either side."""
    out = []
    index = 0
    while index < len(text):
        if text[index].isspace():
            end = index
            while end < len(text) and text[end].isspace():
                end += 1
            before = text[index - 1] if index > 0 else ""
            after = text[end] if end < len(text) else ""
            touches_mark = (before != "" and before in MARKS) or (after != "" and after in MARKS)
            if not touches_mark:
                out.append(text[index:end])
            index = end
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def reference_format(text: str) -> float:
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return 0.0
    start = 0
    while (close := text.find("</think>", start)) >= 0:
        position = close + len("</think>")
        while position < len(text) and text[position].isspace():
            position += 1
        if text.startswith("<answer>", position) and position + len("<answer>") <= len(text) - len("</answer>"):
            return 1.0
        start = close + 1
    return 0.0


def reference_lists(text: str) -> list[tuple] | None:
    """Scan for '[' number (', ' or ',' number)* ']'; None if a matched list holds a malformed number."""
    found = []
    index = 0
    while index < len(text):
        if text[index] != "[":
            index += 1
            continue
        position, numbers = index + 1, []
        while True:
            end = position
            # str.isdecimal is Unicode category Nd, exactly what re's \d matches in a str pattern.
            while end < len(text) and (text[end].isdecimal() or text[end] == "."):
                end += 1
            if end == position:
                numbers = None
                break
            numbers.append(text[position:end])
            if end < len(text) and text[end] == "]":
                position = end + 1
                break
            if end < len(text) and text[end] == ",":
                position = end + 1 + (text[end + 1 : end + 2] == " ")
                continue
            numbers = None
            break
        if numbers is None:
            index += 1
            continue
        try:
            found.append(tuple(float(n) if "." in n else int(n) for n in numbers))
        except ValueError:
            return None
        index = position
    return found


def reference_accuracy(predict: str, ground_truth: str) -> float:
    pred, gt = reference_lists(predict), reference_lists(ground_truth)
    if pred is None or gt is None:
        return 0.0
    if not pred and not gt:
        return 1.0
    if len(set(pred)) < len(pred):
        return 0.0
    precision = sum(1 for box in pred if box in gt) / len(pred) if pred else 1.0
    recall = sum(1 for box in gt if box in pred) / len(gt) if gt else 1.0
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


FRAGMENTS = st.sampled_from(
    ["<think>", "</think>", "<answer>", "</answer>", "< think >", "</ answer>", " ", "\n", "[", "]", ",", ", ",
     ",  ", "1", "10", "2.5", "1.2.3", ".", "0", "\u0663", "a", "/", REJECTION_TEXT, "[10, 20, 30, 40]", "[1,2]"]
)  # fmt: skip
TEXTS = st.lists(FRAGMENTS, max_size=25).map("".join) | st.text(max_size=60)


@settings(max_examples=300, deadline=None, database=None)
@given(predict=TEXTS, ground_truth=TEXTS, format_weight=st.floats(0, 1))
def test_matches_independent_reference(predict, ground_truth, format_weight):
    result = one(predict, ground_truth, format_weight)
    stripped = reference_strip(predict)
    assert result["format"] == reference_format(stripped)
    assert result["accuracy"] == pytest.approx(reference_accuracy(stripped, ground_truth))
    expected = (1 - format_weight) * result["accuracy"] + format_weight * result["format"]
    assert result["overall"] == pytest.approx(expected)
