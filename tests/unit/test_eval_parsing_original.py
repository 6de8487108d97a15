"""The humanref-eval preset reads a completion as Rex-Thinker's evaluation/eval.py does: the same boxes, in the same
original-image floats, hence the same HumanRef scores; our own parsing stays the default and differs where it should."""

from __future__ import annotations

import pytest

from rexthinker_rl.data.prompts import clean_up_spaces, load_preset
from rexthinker_rl.eval.metrics import GroundTruth, evaluate
from rexthinker_rl.eval.run import parse_response
from tests import rexthinker_original as original

IMAGE, FRAME = (640, 427), (644, 420)  # original size, resized frame (what input_width/height are in eval.py)
GT = [[100.0, 40.0, 300.0, 400.0]]
ANSWER = '```json\n[{"bbox_2d": [101, 39, 302, 394], "label": "the man"}]\n```'
COMPLETIONS = [
    f"<think>Person 1 [101, 39, 302, 394] matches; Person 2 [350, 20, 500, 410] does not.</think><answer>{ANSWER}</answer>",
    f"<think>Only one candidate.</think><answer>{ANSWER}</answer>",
    "<think>none</think><answer>There is no such thing in the image.</answer>",
    "<think>Box [5, 6] is a point.</think><answer>[[101, 39, 302, 394]]</answer>",  # a 2-list voids the answer
    "<answer>[[101.5, 39, 302.25, 394], [1.2.3, 4, 5, 6]]</answer>",  # a broken number voids it too
    "<answer>[[10 ,20, 30, 40], [7,8,9,10.5]]</answer>",  # " ," parses only after the decode clean-up
    "plain text [3, 4, 5, 6] with no tags",
]


@pytest.mark.parametrize("completion", COMPLETIONS)
def test_humanref_eval_parsing_equals_the_originals(completion):
    preset = load_preset("humanref-eval")
    assert preset.answer_parsing == "all-lists" and preset.decode_cleanup
    text = clean_up_spaces(completion)
    assert text == original.clean_up_tokenization(completion)
    ours = parse_response(text, IMAGE, FRAME, preset.answer_parsing).boxes_original
    expected = original.eval_predictions(text, FRAME[0], FRAME[1], *IMAGE)
    assert ours == expected  # the very floats eval.py writes to extracted_predictions
    truth = [GroundTruth("s", GT, "attribute", "x")]
    assert evaluate(truth, {"s": ours}) == evaluate(truth, {"s": expected})


def test_the_two_parsings_differ_where_the_reasoning_quotes_boxes():
    quoting = COMPLETIONS[0]
    ours = parse_response(quoting, IMAGE, FRAME)  # the default: the <answer> block only
    theirs = parse_response(quoting, IMAGE, FRAME, "all-lists")
    assert len(ours.boxes_original) == 1 and len(theirs.boxes_original) == 3
    truth = [GroundTruth("s", GT, "attribute", "x")]
    # The quoted boxes count as predictions in the original's reading: precision drops from 1 to 1/3.
    assert evaluate(truth, {"s": ours.boxes_original})["overall"]["precision_50"] == 1.0
    assert evaluate(truth, {"s": theirs.boxes_original})["overall"]["precision_50"] == pytest.approx(1 / 3)
    assert parse_response(COMPLETIONS[3], IMAGE, FRAME, "all-lists").kind == "invalid"
