"""The reward contract: what every reward function receives and returns.

A reward function is a plain function::

    def my_reward(inputs: list[RewardInput], **kwargs) -> list[RewardScore]: ...

It returns one score per input, never raises on a malformed completion (it scores it low), and raises
``ValueError`` naming ``metadata["row_id"]`` on a malformed ground truth (except ``rewards.rexthinker``, which
reproduces Rex-Thinker's reward and so scores it 0).

Metadata keys the data pipeline provides (every one is optional for a reward; use ``.get``):

- ``image_size``: ``[width, height]`` of the original image, in pixels.
- ``resized_size``: ``[width, height]`` of the image as the processor resized it (``smart_resize``).
  Every box in ``ground_truth``, in ``hints`` and in the response is in this resized frame.
- ``hints``: ``{category: [[x0, y0, x1, y1], ...]}``, the detector's candidate boxes shown in the prompt
  (resized frame).
- ``referring``: the referring expression, e.g. ``"the man in a red shirt"``.
- ``category``: the object category the hints were drawn for, e.g. ``"person"``.
- ``row_id``: the dataset row's id; rewards put it in error messages.
- ``box_rounding``: how the set's boxes were rounded into the resized frame (``round`` or ``original``), when the
  parquet file records it.
"""

from __future__ import annotations

from typing import TypedDict


class RewardInput(TypedDict):
    """One completion to score, with the dataset answer and the row's metadata."""

    response: str  # decoded completion, special tokens removed
    ground_truth: str  # dataset answer: fenced JSON list of {"bbox_2d", "label"} or the rejection sentence
    metadata: dict  # see the module docstring for the keys


class RewardScore(TypedDict, total=False):
    """``overall`` (the scalar the trainer optimises) plus named float components, logged as ``reward/<name>``."""

    overall: float


def row_label(metadata: dict | None) -> str:
    """Describe a row for error messages: ``"row 'abc'"`` when metadata names it, else ``"a row"``."""
    row_id = (metadata or {}).get("row_id")
    return f"row {row_id!r}" if row_id is not None else "a row (no row_id in metadata)"
