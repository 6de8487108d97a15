"""Loading reward functions by name and combining them (rewards.composite)."""

import json
import pickle
import textwrap

import numpy as np
import pytest

from rewards.box import iou_f1
from rewards.composite import DEFAULT_COMPONENTS, build_reward, load_function, validate_scores
from rewards.parsing import REJECTION_TEXT

GT = '```json\n[{"bbox_2d": [0, 0, 10, 10], "label": "person"}]\n```'


def completion(boxes: list[list[float]]) -> str:
    answer = "```json\n" + json.dumps([{"bbox_2d": box, "label": "person"} for box in boxes]) + "\n```"
    return f"<think>Planning. Action. Summary.</think><answer>{answer if boxes else REJECTION_TEXT}</answer>"


def inputs(*responses: str, ground_truth: str = GT) -> list[dict]:
    return [
        {"response": r, "ground_truth": ground_truth, "metadata": {"row_id": f"r{i}"}} for i, r in enumerate(responses)
    ]


@pytest.fixture
def reward_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(
        textwrap.dedent(
            """
            import math

            NOT_CALLABLE = 3

            def length_reward(inputs, scale=1.0):
                return [{"overall": scale * len(item["response"]), "chars": float(len(item["response"]))} for item in inputs]

            def no_arguments():
                return []

            def keyword_only(*, inputs):
                return []

            def too_short(inputs):
                return [{"overall": 1.0}][: max(0, len(inputs) - 1)]

            def not_finite(inputs):
                return [{"overall": math.nan if i == 1 else 0.0} for i, _ in enumerate(inputs)]

            def no_overall(inputs):
                return [{"score": 1.0} for _ in inputs]

            def not_dicts(inputs):
                return [1.0 for _ in inputs]

            def string_component(inputs):
                return [{"overall": 1.0, "note": "good"} for _ in inputs]

            def not_a_list(inputs):
                return {"overall": 1.0}
            """
        )
    )
    return path


def test_load_dotted_and_file_functions(reward_file):
    assert load_function("rewards.box:iou_f1") is iou_f1
    length_reward = load_function(f"{reward_file}:length_reward")
    assert length_reward([{"response": "abc"}]) == [{"overall": 3.0, "chars": 3.0}]


def test_file_reward_travels_by_value(reward_file):
    # Ray ships functions with cloudpickle; a function from a file must not be pickled by an unimportable name.
    cloudpickle = pytest.importorskip("cloudpickle")
    reward = build_reward(function=f"{reward_file}:length_reward", kwargs={"scale": 2.0})
    payload = cloudpickle.dumps(reward)
    reward_file.unlink()
    assert pickle.loads(payload)(inputs("ab")) == [{"overall": 4.0, "chars": 2.0}]


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("rewards.box", ValueError, "module:function"),
        ("rewards.box:", ValueError, "module:function"),
        ("rewards.nowhere:iou_f1", ImportError, "no module named 'rewards.nowhere'"),
        ("rewards.box:iou_f2", AttributeError, "did you mean iou_f1"),
        ("rewards.box:COCO_THRESHOLDS", TypeError, "not callable"),
        ("missing/file.py:fn", ImportError, "does not exist"),
    ],
)
def test_load_errors(spec, error, message):
    with pytest.raises(error, match=message):
        load_function(spec)


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("NOT_CALLABLE", TypeError, "not callable"),
        ("no_arguments", TypeError, "positional parameter for the inputs"),
        ("keyword_only", TypeError, "positional parameter for the inputs"),
        ("nothing_here", AttributeError, "has no attribute 'nothing_here'"),
    ],
)
def test_load_errors_from_a_file(reward_file, name, error, message):
    with pytest.raises(error, match=message):
        load_function(f"{reward_file}:{name}")


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("too_short", ValueError, "returned 1 scores for 2 inputs"),
        ("not_finite", ValueError, "row 1: 'overall' is nan"),
        ("no_overall", ValueError, "row 0: no 'overall' key"),
        ("not_dicts", TypeError, "row 0: got float"),
        ("string_component", TypeError, "'note' is str"),
        ("not_a_list", TypeError, "returned dict"),
    ],
)
def test_bad_outputs_fail_loudly(reward_file, name, error, message):
    reward = build_reward(function=f"{reward_file}:{name}")
    with pytest.raises(error, match=f"{name}.*{message}"):
        reward(inputs("a", "b"))


def test_single_function_with_kwargs():
    reward = build_reward(function="rewards.rexthinker:rexthinker_reward", kwargs={"format_weight": 0.5})
    assert reward(inputs(completion([[0, 0, 10, 10]]), "garbage")) == [
        {"overall": 1.0, "format": 1.0, "accuracy": 1.0},
        {"overall": 0.0, "format": 0.0, "accuracy": 0.0},
    ]


def test_misspelt_kwarg_is_caught_at_build_time():
    with pytest.raises(TypeError, match="did you mean 'iou_threshold'"):
        build_reward(function="rewards.box:iou_f1", kwargs={"iou_treshold": 0.7})


def test_easyr1_signature_is_rejected_at_build_time():
    # compute_score(predicts, ground_truths) is the paper's signature, not ours: use rexthinker_reward.
    with pytest.raises(TypeError, match="missing a required argument: 'ground_truths'"):
        build_reward(function="rewards.rexthinker:compute_score")


def test_default_components_weighted_sum():
    reward = build_reward(components=DEFAULT_COMPONENTS)
    # Right box plus a wrong one: precision 1/2, recall 1, F1 2/3; format valid.
    extra, perfect, rejection, garbage = reward(
        inputs(completion([[0, 0, 10, 10], [50, 50, 60, 60]]), completion([[0, 0, 10, 10]]), completion([]), "??")
    )
    assert extra["overall"] == pytest.approx(0.9 * 2 / 3 + 0.1)
    assert extra["accuracy"] == pytest.approx(2 / 3)
    assert extra["accuracy/precision"] == 0.5
    assert extra["format"] == 1.0 and extra["format/tags"] == 1.0
    assert perfect["overall"] == pytest.approx(1.0)
    assert rejection["overall"] == pytest.approx(0.1)  # format only: the object is present
    assert garbage["overall"] == 0.0
    assert set(perfect) == set(garbage)  # same keys every row, for logging
    correct_rejection = reward(inputs(completion([]), ground_truth=REJECTION_TEXT))[0]
    assert correct_rejection["overall"] == pytest.approx(1.0)


def test_component_names_default_to_the_function_name():
    reward = build_reward(
        components=[
            {"function": "rewards.box:iou_f1", "weight": 0.5, "kwargs": {"iou_threshold": 0.9}},
            {"function": "rewards.rejection:rejection_reward", "weight": 2.0},
        ]
    )
    # IoU 0.5 box: fails at 0.9; the decision (present, answered with a box) is right but earns 0.
    score = reward(inputs(completion([[0, 0, 10, 20]])))[0]
    assert score["overall"] == 0.0
    assert score["iou_f1"] == 0.0 and score["iou_f1/iou"] == pytest.approx(0.5)
    assert score["rejection_reward"] == 0.0 and score["rejection_reward/correct"] == 1.0
    hallucination = reward(inputs(completion([[0, 0, 10, 20]]), ground_truth=REJECTION_TEXT))[0]
    assert hallucination["overall"] == pytest.approx(-2.0)


def test_default_reward_survives_pickling():
    reward = build_reward(components=DEFAULT_COMPONENTS)
    restored = pickle.loads(pickle.dumps(reward))
    batch = inputs(completion([[0, 0, 10, 10]]))
    assert restored(batch) == reward(batch)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "exactly one of"),
        ({"function": "rewards.box:iou_f1", "components": DEFAULT_COMPONENTS}, "exactly one of"),
        ({"components": DEFAULT_COMPONENTS, "kwargs": {"a": 1}}, "inside each component"),
        ({"components": []}, "non-empty list"),
        ({"components": [{"function": "rewards.box:iou_f1", "wieght": 1}]}, "'wieght' \\(did you mean 'weight'\\?\\)"),
        ({"components": [{"weight": 1.0}]}, "missing 'function'"),
        ({"components": [{"function": "rewards.box:iou_f1", "weight": float("inf")}]}, "finite number"),
        ({"components": [{"function": "rewards.box:iou_f1", "name": "a/b"}]}, "without '/'"),
        ({"components": [{"function": "rewards.box:iou_f1"}, {"function": "rewards.box:iou_f1"}]}, "unique"),
    ],
)
def test_build_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        build_reward(**arguments)


def test_validate_scores_converts_to_plain_floats():
    assert validate_scores([{"overall": np.float32(0.5), "n": 2}], 1, "x") == [{"overall": 0.5, "n": 2.0}]
    with pytest.raises(TypeError, match="'overall' is bool"):
        validate_scores([{"overall": True}], 1, "x")


def test_malformed_ground_truth_stops_the_composite():
    reward = build_reward(components=DEFAULT_COMPONENTS)
    with pytest.raises(ValueError, match="row 'r0'"):
        reward(inputs(completion([]), ground_truth="[[0, 0, 10]]"))
