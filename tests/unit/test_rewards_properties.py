"""Property-based tests over arbitrary completions and box lists, for every reward function."""

import json
import math
import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.box import iou_f1, iou_matrix
from rewards.composite import DEFAULT_COMPONENTS, build_reward
from rewards.format import format_reward
from rewards.parsing import REJECTION_TEXT, parse_answer, parse_completion
from rewards.rejection import rejection_reward
from rewards.rexthinker import rexthinker_reward

FRAME = (640, 480)
UNIT = (0.0, 1.0)
BINARY = {0.0, 1.0}


def unit_ranges(*keys: str) -> dict:
    return {key: UNIT for key in keys}


BOX_KEYS = ("overall", "precision", "recall", "f1", "iou", "out_of_image", "parsed")
# name -> (reward function with kwargs bound, {key: (low, high) or set of allowed values})
REWARDS = {
    "iou_f1": (lambda inputs: iou_f1(inputs), unit_ranges(*BOX_KEYS)),
    "iou_f1_greedy_coco": (
        lambda inputs: iou_f1(
            inputs, matching="greedy", iou_thresholds="coco", duplicates="zero", out_of_image="miss"
        ),
        unit_ranges(*BOX_KEYS),
    ),
    "iou_f1_max_iou": (
        lambda inputs: iou_f1(inputs, matching="hungarian_iou", duplicates="merge", out_of_image="ignore"),
        unit_ranges(*BOX_KEYS),
    ),
    "format": (lambda inputs: format_reward(inputs), dict.fromkeys(("overall", "tags", "answer"), BINARY)),
    "format_strict": (
        lambda inputs: format_reward(inputs, require_sections=True, strict_answer=True),
        dict.fromkeys(("overall", "tags", "answer", "sections", "strict_answer"), BINARY),
    ),
    "rejection": (lambda inputs: rejection_reward(inputs), {"overall": (-1.0, 1.0), "correct": BINARY}),
    "rexthinker": (lambda inputs: rexthinker_reward(inputs), unit_ranges("overall", "format", "accuracy")),
    "default": (build_reward(components=DEFAULT_COMPONENTS), unit_ranges("overall", "accuracy", "format")),
}


def integer_boxes(max_size: int = 4, unique: bool = True, span: int | None = None):
    """Boxes with x0 <= x1, y0 <= y1 inside FRAME (zero-area boxes included); ``span`` crowds them near the
    origin, where tied IoUs are common."""
    width, height = FRAME if span is None else (span, span)
    xs = st.tuples(st.integers(0, width), st.integers(0, width)).map(sorted)
    ys = st.tuples(st.integers(0, height), st.integers(0, height)).map(sorted)
    box = st.builds(lambda x, y: (x[0], y[0], x[1], y[1]), xs, ys)
    return st.lists(box, max_size=max_size, unique=unique)


def answer_text(boxes) -> str:
    if not boxes:
        return REJECTION_TEXT
    return "```json\n" + json.dumps([{"bbox_2d": list(box), "label": "person"} for box in boxes]) + "\n```"


def perfect(boxes) -> str:
    return f"<think>Planning. Action. Summary.</think><answer>{answer_text(boxes)}</answer>"


FRAGMENTS = st.sampled_from(
    ["<think>", "</think>", "<answer>", "</answer>", "< think >", "</ answer>", "```json", "```", "[", "]", "{", "}",
     ",", " ", "\n", '"bbox_2d":', '"label": "a"', "1", "-5", "1e999", "NaN", "0.5", "99999", "null", REJECTION_TEXT,
     "[1, 2, 3, 4]", "[10, 20, 700, 40]", "[5, 5, 5, 5]", "[9, 9, 1, 1]", "Planning", "Action", "Summary"]
)  # fmt: skip
COMPLETIONS = (
    st.text(max_size=80)
    | st.lists(FRAGMENTS, max_size=30).map("".join)
    | st.builds(perfect, integer_boxes(unique=False))
    | st.builds(lambda think, body: f"<think>{think}</think><answer>{body}</answer>", st.text(max_size=20),
                st.lists(FRAGMENTS, max_size=12).map("".join))
)  # fmt: skip
METADATA = st.sampled_from([{}, {"resized_size": list(FRAME), "image_size": [1280, 960], "row_id": "r"}])


def check_ranges(name: str, scores: list[dict], ranges: dict) -> None:
    for score in scores:
        for key, value in score.items():
            assert isinstance(value, float) and math.isfinite(value), (name, key, value)
        for key, allowed in ranges.items():
            value = score[key]
            if isinstance(allowed, set):
                assert value in allowed, (name, key, value)
            else:
                assert allowed[0] <= value <= allowed[1], (name, key, value)


@settings(max_examples=150, deadline=None, database=None)
@given(response=COMPLETIONS | st.none(), gt_boxes=integer_boxes(), metadata=METADATA)
def test_no_reward_raises_and_scores_stay_in_range(response, gt_boxes, metadata):
    inputs = [{"response": response, "ground_truth": answer_text(gt_boxes), "metadata": metadata}]
    for name, (reward, ranges) in REWARDS.items():
        scores = reward(inputs)
        assert len(scores) == 1
        check_ranges(name, scores, ranges)
    assert iou_f1(inputs)[0]["duplicates"] >= 0.0


@settings(max_examples=150, deadline=None, database=None)
@given(text=COMPLETIONS)
def test_parsers_never_raise(text):
    parsed = parse_completion(text)
    assert (parsed.error is None) == (parsed.structure_error is None and not parsed.outside_text and parsed.answer.ok)
    answer = parse_answer(text)
    assert answer.ok == (answer.error is None)
    assert (answer.kind == "boxes") == bool(answer.boxes)


@settings(max_examples=100, deadline=None, database=None)
@given(gt_boxes=integer_boxes(), metadata=METADATA)
def test_perfect_answer_scores_the_maximum(gt_boxes, metadata):
    inputs = [{"response": perfect(gt_boxes), "ground_truth": answer_text(gt_boxes), "metadata": metadata}]
    for name in ("iou_f1", "iou_f1_greedy_coco", "iou_f1_max_iou", "format", "format_strict", "rexthinker", "default"):
        assert REWARDS[name][0](inputs)[0]["overall"] == 1.0, name
    rejection = rejection_reward(inputs)[0]
    assert rejection["correct"] == 1.0
    assert rejection["overall"] == (1.0 if not gt_boxes else 0.0)  # the best each case can earn


@settings(max_examples=150, deadline=None, database=None)
@given(
    data=st.data(),
    pred_boxes=integer_boxes(max_size=5, unique=False) | integer_boxes(max_size=5, unique=False, span=8),
    gt_boxes=integer_boxes() | integer_boxes(span=8),
    metadata=METADATA,
)
def test_box_order_does_not_matter(data, pred_boxes, gt_boxes, metadata):
    shuffled_pred = data.draw(st.permutations(pred_boxes))
    shuffled_gt = data.draw(st.permutations(gt_boxes))
    original = [{"response": perfect(pred_boxes), "ground_truth": answer_text(gt_boxes), "metadata": metadata}]
    shuffled = [{"response": perfect(shuffled_pred), "ground_truth": answer_text(shuffled_gt), "metadata": metadata}]
    for name in ("iou_f1", "iou_f1_greedy_coco", "iou_f1_max_iou", "rejection", "rexthinker", "default"):
        reward = REWARDS[name][0]
        assert reward(original) == reward(shuffled), name


FLOAT_BOXES = st.lists(st.tuples(*[st.floats(allow_nan=False, allow_infinity=False)] * 4), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None, database=None)
@given(pred=FLOAT_BOXES, gt=FLOAT_BOXES)
def test_iou_is_bounded_for_any_finite_coordinates(pred, gt):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overflow must be handled, not warned about
        iou = iou_matrix(np.array(pred), np.array(gt))
        assert iou.shape == (len(pred), len(gt))
        assert np.all((iou >= 0.0) & (iou <= 1.0))
        assert np.all(np.diag(iou_matrix(np.array(pred), np.array(pred))) == 1.0)  # identical boxes
        response = "<think></think><answer>" + json.dumps([list(box) for box in pred]) + "</answer>"
        for name in ("iou_f1", "iou_f1_greedy_coco", "iou_f1_max_iou", "default"):
            check_ranges(
                name,
                REWARDS[name][0]([{"response": response, "ground_truth": "[]", "metadata": {}}]),
                REWARDS[name][1],
            )
