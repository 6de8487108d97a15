"""Parsing of completions and ground truths (rewards.parsing)."""

import json

import pytest

from rewards.parsing import REJECTION_TEXT, parse_answer, parse_completion, parse_ground_truth


def fenced(boxes: list[list[float]], label: str = "person") -> str:
    return "```json\n" + json.dumps([{"bbox_2d": box, "label": label} for box in boxes]) + "\n```"


def test_well_formed_completion_with_boxes():
    parsed = parse_completion(f"<think>plan</think><answer>{fenced([[1, 2, 3, 4], [5, 6, 7, 8]])}</answer>")
    assert parsed.error is None
    assert parsed.think == "plan"
    assert parsed.answer.kind == "boxes"
    assert parsed.answer.boxes == ((1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0))
    assert parsed.answer.labels == ("person", "person")
    assert parsed.answer.style == "json" and parsed.answer.fenced and not parsed.answer.extra_text


def test_whitespace_inside_tags_is_forgiven():
    parsed = parse_completion(f"< think >plan</ think >\n< answer >{REJECTION_TEXT}< / answer >")
    assert parsed.error is None
    assert parsed.answer.kind == "rejection"


@pytest.mark.parametrize(
    "text",
    [REJECTION_TEXT, "there is no such thing in the image", "  There is  no such thing\nin the image.  ", "[]"],
)
def test_rejection_variants(text):
    assert parse_answer(text).kind == "rejection"
    assert parse_answer(f"```json\n{text}\n```").kind == "rejection"


def test_rejection_with_other_words_is_invalid():
    answer = parse_answer("I think there is no such thing in the image.")
    assert answer.kind == "invalid"
    assert "neither" in answer.error


@pytest.mark.parametrize(
    ("text", "boxes"),
    [
        ("[1, 2, 3, 4]", ((1.0, 2.0, 3.0, 4.0),)),
        ("[[1, 2, 3, 4], [5, 6, 7, 8.5]]", ((1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.5))),
        ("[1, 2, 3, 4], [5, 6, 7, 8]", ((1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0))),
        ('{"bbox_2d": [1, 2, 3, 4]}', ((1.0, 2.0, 3.0, 4.0),)),
        ("```\n[[1, 2, 3, 4]]\n```", ((1.0, 2.0, 3.0, 4.0),)),
        ("```json\n[[1, 2, 3, 4]]", ((1.0, 2.0, 3.0, 4.0),)),  # unterminated fence (truncated output)
    ],
)
def test_bare_and_loose_box_lists(text, boxes):
    answer = parse_answer(text)
    assert answer.kind == "boxes"
    assert answer.boxes == boxes


def test_text_around_fence_is_recorded():
    answer = parse_answer("Here you go: " + fenced([[1, 2, 3, 4]]))
    assert answer.kind == "boxes" and answer.extra_text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("[1, 2, 3]", "not a box"),
        ('[{"bbox_2d": [1, 2, 3, "4"]}]', "not a box"),
        ("[NaN, 2, 3, 4]", "neither"),
        ("[1e999, 2, 3, 4]", "not a box"),
        ("[true, 2, 3, 4]", "not a box"),
        ('"a string"', "expected a JSON list"),
        ("[" * 50_000, "neither"),
        ("[" + "9" * 5000 + ", 1, 1, 1]", "neither"),
    ],
)
def test_invalid_answers_say_why(text, reason):
    answer = parse_answer(text)
    assert answer.kind == "invalid"
    assert reason in answer.error


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("<answer>[1, 2, 3, 4]</answer>", "0x <think>"),
        ("<think>a</think><think>b</think><answer>[1, 2, 3, 4]</answer>", "2x <think>"),
        ("<answer>[1, 2, 3, 4]</answer><think>a</think>", "out of order"),
        ("<think>a</think>so<answer>[1, 2, 3, 4]</answer>", "outside"),
        ("<think>a</think><answer>[1, 2, 3, 4]</answer> done", "outside"),
        ("<think>a</think><answer>[1, 2, 3, 4]", "0x </answer>"),
    ],
)
def test_structure_errors(response, reason):
    assert reason in parse_completion(response).error


def test_truncated_answer_is_invalid():
    answer = parse_completion("<think>a</think><answer>[1, 2, 3, 4]").answer
    assert answer.kind == "invalid"
    assert "no <answer>" in answer.error


def test_last_closed_answer_block_is_the_answer():
    parsed = parse_completion("<answer>[1, 2, 3, 4]</answer><answer>[5, 6, 7, 8]</answer>")
    assert parsed.answer.boxes == ((5.0, 6.0, 7.0, 8.0),)
    assert parsed.structure_error is not None


def test_boxes_in_think_are_not_the_answer():
    parsed = parse_completion(f"<think>hint [1, 2, 3, 4]</think><answer>{REJECTION_TEXT}</answer>")
    assert parsed.answer.kind == "rejection"
    assert parsed.answer.boxes == ()


@pytest.mark.parametrize("value", [None, 3, b"<think>"])
def test_non_string_response_never_raises(value):
    parsed = parse_completion(value)
    assert parsed.answer.kind == "invalid"
    assert "not a string" in parsed.error


def test_ground_truth_formats():
    assert parse_ground_truth(fenced([[1, 2, 3, 4]])).boxes == ((1.0, 2.0, 3.0, 4.0),)
    assert parse_ground_truth(REJECTION_TEXT).kind == "rejection"
    assert parse_ground_truth("```json\n[]\n```").boxes == ()


@pytest.mark.parametrize(
    ("ground_truth", "metadata", "message"),
    [
        ("[1, 2, 3]", {"row_id": "r7"}, "row 'r7': malformed ground truth"),
        ("nonsense", {}, "no row_id"),
        (fenced([[30, 2, 3, 4]]), {"row_id": 5}, "x0 > x1"),
        (fenced([[10, 10, 700, 40]]), {"row_id": "r1", "resized_size": [504, 252]}, "outside the resized frame"),
    ],
)
def test_malformed_ground_truth_raises_naming_the_row(ground_truth, metadata, message):
    with pytest.raises(ValueError, match=message):
        parse_ground_truth(ground_truth, metadata)


def test_ground_truth_may_touch_the_frame_edge():
    parsed = parse_ground_truth(fenced([[0, 0, 504.5, 252]]), {"resized_size": [504, 252]})
    assert parsed.boxes == ((0.0, 0.0, 504.5, 252.0),)
