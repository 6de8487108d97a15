"""What a row's texts hold besides the image: box hints (a ``hints`` column, or the JSON after "coordinates in this
image:" in Rex-Thinker problem text), the referring expression, and the rejection answer."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from rexthinker_rl.data.rows import load_json
from rexthinker_rl.errors import DataError

REJECTION_TEXT = "There is no such thing in the image."
HINT_MARKER = "coordinates in this image:"
# The referring expression in a problem text: ours and Rex-Thinker's demo ("in the image."), its convert ("in this
# image.") and its HumanRef evaluation ("Locate ... in the image and answer").
_REFERRING = re.compile(r"(?:Please detect (.+?) in (?:the|this) image\.|Locate (.+?) in the image and answer)")
_EMPTY_REFERRING = re.compile(r"(?:Please detect\s+in (?:the|this) image\.|Locate\s+in the image and answer)")


def parse_hints(value: Any, where: str = "") -> dict[str, list[list[float]]]:
    """Box hints ``{category: [[x0, y0, x1, y1], ...]}`` from a dict or a JSON string (the ``hints`` column)."""
    if isinstance(value, str):
        value = load_json(value, where, "hints are")
    if not isinstance(value, dict):
        raise DataError(f"{where}: hints must be a JSON object {{category: [[x0, y0, x1, y1], ...]}}, got {value!r}")
    for category, boxes in value.items():
        if not isinstance(boxes, list) or not all(is_box(box) for box in boxes):
            raise DataError(f"{where}: hints[{category!r}] must be a list of [x0, y0, x1, y1] boxes, got {boxes!r}")
    return value


def hints_from_problem(problem: str, where: str = "") -> dict[str, list[list[float]]] | None:
    """The hint JSON that follows "coordinates in this image:" in Rex-Thinker prompt text, or None when absent."""
    start = problem.find(HINT_MARKER)
    if start < 0:
        return None
    text = problem[start + len(HINT_MARKER) :].lstrip()
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: the hint JSON after {HINT_MARKER!r} does not parse ({err})") from None
    return parse_hints(value, where)


def referring_from_problem(problem: str) -> str | None:
    """The referring expression of a problem text written by one of the prompt presets, or None."""
    match = _REFERRING.search(problem)
    return (match.group(1) or match.group(2)) if match else None


def referring_is_empty(referring: Any, problem: str) -> bool:
    """A row that names nothing to find: an empty ``referring`` column, or a preset's sentence with nothing in it."""
    return (isinstance(referring, str) and not referring.strip()) or bool(_EMPTY_REFERRING.search(problem))


def is_box(box: Any) -> bool:
    """``[x0, y0, x1, y1]``: a list of 4 finite numbers (booleans are not numbers here; JSON's NaN is not finite)."""
    return (
        isinstance(box, list)
        and len(box) == 4
        and all(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) for value in box
        )
    )
