"""Parse completions and ground truths: the one place that knows the answer grammar.

A completion looks like::

    <think>planning ... action ... summary</think><answer>```json
    [{"bbox_2d": [x0, y0, x1, y1], "label": "..."}]
    ```</answer>

or ends in ``<answer>There is no such thing in the image.</answer>``. The parser is tolerant where models
drift harmlessly (whitespace inside tags such as ``< think >``, a missing ``json`` after the fence, bare
``[x0, y0, x1, y1]`` lists) and records what it found so that ``rewards.format`` can be as strict as it is
configured to be. :func:`parse_completion` and :func:`parse_answer` never raise; a failure is a result with
``kind == "invalid"`` and an ``error`` that says why. :func:`parse_ground_truth` raises on a malformed
ground truth, because a bad dataset row must stop training rather than silently score zero.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Literal

from rewards.types import row_label

REJECTION_TEXT = "There is no such thing in the image."

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1), absolute pixels in the resized frame
AnswerKind = Literal["boxes", "rejection", "invalid"]
AnswerStyle = Literal["sentence", "json", "bare", ""]

# Ground-truth boxes may overshoot the resized frame by rounding; anything further means a wrong frame.
GROUND_TRUTH_FRAME_TOLERANCE = 1.0

_TAG = re.compile(r"<\s*(/?)\s*(think|answer)\s*>")
_FENCE = re.compile(r"```(?:json)?(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_SPACES = re.compile(r"\s+")
_REJECTION_KEY = REJECTION_TEXT.lower().rstrip(".")


@dataclass(frozen=True)
class ParsedAnswer:
    """What an answer (the text inside ``<answer>``, or a ground truth) says.

    ``kind`` is ``"boxes"`` (at least one box), ``"rejection"`` (the rejection sentence or an empty list) or
    ``"invalid"`` (then ``error`` says why). ``style`` records how it was written: ``"sentence"``,
    ``"json"`` (``{"bbox_2d": ...}`` objects, the trained format), ``"bare"`` (plain coordinate lists).
    """

    kind: AnswerKind
    boxes: tuple[Box, ...] = ()
    labels: tuple[str | None, ...] = ()
    style: AnswerStyle = ""
    fenced: bool = False  # the content sat inside a ``` fence
    extra_text: bool = False  # non-whitespace text outside the fence
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.kind != "invalid"


@dataclass(frozen=True)
class ParsedCompletion:
    """The structure of a completion and its parsed answer.

    ``structure_error`` is None when each of ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` appears
    exactly once and in that order. ``outside_text`` is True when non-whitespace text sits before
    ``<think>``, between ``</think>`` and ``<answer>``, or after ``</answer>``. ``answer`` is parsed from the
    last closed ``<answer>...</answer>`` block even when the structure is wrong, so box accuracy and format
    validity stay separate signals.
    """

    think: str | None
    answer_text: str | None
    answer: ParsedAnswer
    structure_error: str | None
    outside_text: bool

    @property
    def error(self) -> str | None:
        """The first reason this completion is not a clean, parseable answer; None if it is."""
        if self.structure_error is not None:
            return self.structure_error
        if self.outside_text:
            return "text outside the <think> and <answer> blocks"
        return self.answer.error


def normalize_tags(text: str) -> str:
    """Remove whitespace inside ``<think>``/``<answer>`` tags: ``< / answer >`` becomes ``</answer>``."""
    return _TAG.sub(r"<\1\2>", text)


def is_rejection_sentence(text: str) -> bool:
    """True for the rejection sentence, ignoring case, repeated whitespace and the final period."""
    return _SPACES.sub(" ", text.strip()).lower().rstrip(".").rstrip() == _REJECTION_KEY


def parse_completion(response: str) -> ParsedCompletion:
    """Parse a model completion. Never raises."""
    if not isinstance(response, str):
        invalid = ParsedAnswer("invalid", error=f"response is a {type(response).__name__}, not a string")
        return ParsedCompletion(None, None, invalid, invalid.error, False)
    text = normalize_tags(response)
    structure_error, outside_text = _check_structure(text)

    think = None
    think_start = text.find("<think>")
    think_end = text.find("</think>", think_start + 1) if think_start >= 0 else -1
    if think_end >= 0:
        think = text[think_start + len("<think>") : think_end]

    # The last closed block is the model's final answer; earlier ones are drafts.
    answer_end = text.rfind("</answer>")
    answer_start = text.rfind("<answer>", 0, answer_end) if answer_end >= 0 else -1
    if answer_start < 0:
        answer_text = None
        answer = ParsedAnswer("invalid", error="no <answer>...</answer> block")
    else:
        answer_text = text[answer_start + len("<answer>") : answer_end]
        answer = parse_answer(answer_text)
    return ParsedCompletion(think, answer_text, answer, structure_error, outside_text)


def _check_structure(text: str) -> tuple[str | None, bool]:
    """Return (error about tag counts/order or None, whether text sits outside the blocks)."""
    names = ("<think>", "</think>", "<answer>", "</answer>")
    counts = {name: text.count(name) for name in names}
    wrong = [f"{counts[name]}x {name}" for name in names if counts[name] != 1]
    if wrong:
        return f"expected each tag exactly once, found {', '.join(wrong)}", False
    positions = [text.index(name) for name in names]
    if positions != sorted(positions):
        return "tags out of order; expected <think>...</think><answer>...</answer>", False
    outside = (
        text[: positions[0]]
        + text[positions[1] + len("</think>") : positions[2]]
        + text[positions[3] + len("</answer>") :]
    )
    return None, bool(outside.strip())


def parse_answer(text: str) -> ParsedAnswer:
    """Parse answer text: the rejection sentence, or a (fenced) JSON list of boxes. Never raises."""
    if not isinstance(text, str):
        return ParsedAnswer("invalid", error=f"answer is a {type(text).__name__}, not a string")
    body = text.strip()
    fence = _FENCE.search(body)
    fenced = fence is not None
    extra_text = False
    if fence is not None:
        extra_text = bool(body[: fence.start()].strip() or body[fence.end() :].strip())
        body = fence.group(1).strip()
    if is_rejection_sentence(body):
        return ParsedAnswer("rejection", style="sentence", fenced=fenced, extra_text=extra_text)
    value, error = _load_json(body)
    if error is not None:
        return ParsedAnswer("invalid", fenced=fenced, extra_text=extra_text, error=error)
    boxes, labels, style, error = _boxes_from_json(value)
    if error is not None:
        return ParsedAnswer("invalid", fenced=fenced, extra_text=extra_text, error=error)
    kind: AnswerKind = "boxes" if boxes else "rejection"
    return ParsedAnswer(kind, tuple(boxes), tuple(labels), style, fenced, extra_text)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a coordinate")


def _load_json(body: str) -> tuple[object, str | None]:
    """json.loads, retrying as a list for comma-separated items such as ``[1, 2, 3, 4], [5, 6, 7, 8]``."""
    if not body:
        return None, "empty answer"
    try:
        return json.loads(body, parse_constant=_reject_constant), None
    except (ValueError, RecursionError) as first_error:
        try:
            return json.loads(f"[{body}]", parse_constant=_reject_constant), None
        except (ValueError, RecursionError):
            return None, f"answer is neither {REJECTION_TEXT!r} nor a JSON list of boxes ({first_error})"


def _boxes_from_json(value: object) -> tuple[list[Box], list[str | None], AnswerStyle, str | None]:
    """Turn decoded JSON into boxes. Accepts a list of {"bbox_2d": [...]} objects or of 4-number lists."""
    if isinstance(value, dict) or _is_coordinate_list(value):
        value = [value]  # a single box written without the surrounding list
    if not isinstance(value, list):
        return [], [], "", f"expected a JSON list of boxes, got {type(value).__name__}"
    boxes: list[Box] = []
    labels: list[str | None] = []
    all_dicts = True
    for index, item in enumerate(value):
        if isinstance(item, dict):
            coordinates = item.get("bbox_2d")
            label = item.get("label")
            labels.append(label if isinstance(label, str) else None)
        else:
            all_dicts = False
            coordinates = item
            labels.append(None)
        if not _is_coordinate_list(coordinates):
            return [], [], "", f'item {index} is not a box: expected {{"bbox_2d": [x0, y0, x1, y1]}}, got {item!r:.80}'
        boxes.append(tuple(float(c) for c in coordinates))  # type: ignore[arg-type]
    return boxes, labels, ("json" if all_dicts else "bare"), None


def _is_coordinate_list(value: object) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_is_finite_number(c) for c in value)


def _is_finite_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # a JSON integer too large for a float
        return False


@functools.lru_cache(maxsize=8192)
def _parse_ground_truth_text(text: str) -> ParsedAnswer:
    # GRPO scores each ground truth once per sampled completion, so parsing it once pays off.
    return parse_answer(text)


def parse_ground_truth(text: str, metadata: dict | None = None) -> ParsedAnswer:
    """Parse a dataset answer; raise ValueError naming the row when it is malformed.

    Besides the grammar, checks that every box has ``x0 <= x1`` and ``y0 <= y1`` and, when
    ``metadata["resized_size"]`` is given, lies inside the resized frame: a box outside it almost always
    means the dataset kept original-image coordinates.
    """
    if not isinstance(text, str):
        raise ValueError(f"{row_label(metadata)}: ground truth must be a string, got {type(text).__name__}")
    parsed = _parse_ground_truth_text(text)
    if not parsed.ok:
        raise ValueError(
            f"{row_label(metadata)}: malformed ground truth ({parsed.error}): {text[:200]!r}; expected a ```json "
            f'list of {{"bbox_2d": [x0, y0, x1, y1], "label": ...}} or {REJECTION_TEXT!r}'
        )
    frame = (metadata or {}).get("resized_size")
    for box in parsed.boxes:
        x0, y0, x1, y1 = box
        if x0 > x1 or y0 > y1:
            raise ValueError(f"{row_label(metadata)}: ground-truth box {list(box)} has x0 > x1 or y0 > y1")
        if frame is not None and not box_in_frame(box, frame, GROUND_TRUTH_FRAME_TOLERANCE):
            raise ValueError(
                f"{row_label(metadata)}: ground-truth box {list(box)} lies outside the resized frame {list(frame)}; "
                "boxes must be in the processor's resized (smart_resize) frame, not the original image"
            )
    return parsed


def box_in_frame(box: Box, frame: tuple[float, float] | list[float], tolerance: float = 0.0) -> bool:
    """True if the box lies within ``[0, width] x [0, height]`` (plus ``tolerance`` pixels)."""
    width, height = frame
    x0, y0, x1, y1 = box
    low = -tolerance
    return (
        min(x0, x1) >= low
        and min(y0, y1) >= low
        and max(x0, x1) <= width + tolerance
        and max(y0, y1) <= height + tolerance
    )
