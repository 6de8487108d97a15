"""The resized frame: every box the model sees (hints) or writes (answers) is in absolute pixels of the image *as
Qwen2.5-VL's processor resizes it* (``smart_resize``: both sides multiples of 28, area within ``[min_pixels,
max_pixels]``). :func:`boxes_to_resized` and :func:`boxes_to_original` are the one place boxes move between that frame
and the original image.
"""

from __future__ import annotations

from collections.abc import Sequence

from rexthinker_rl.data.prompts import BOX_ROUNDINGS
from rexthinker_rl.errors import DataError

IMAGE_FACTOR = 28  # Qwen2.5-VL: 14-pixel patches merged 2x2, so one image token per 28x28 cell


def resized_size(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """``(w, h)`` of an image of ``width x height`` after the processor's smart_resize with these pixel bounds."""
    # transformers' own function; importing it loads torchvision and the image processors (~5 s): only when used.
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    resized_h, resized_w = smart_resize(
        height, width, factor=IMAGE_FACTOR, min_pixels=min_pixels, max_pixels=max_pixels
    )
    return resized_w, resized_h


def image_tokens(resized_w: int, resized_h: int) -> int:
    """Image tokens one image of this resized size expands to (one per 28x28 cell, after the 2x2 merge)."""
    if resized_w % IMAGE_FACTOR or resized_h % IMAGE_FACTOR or resized_w <= 0 or resized_h <= 0:
        raise ValueError(f"resized size {resized_w}x{resized_h} is not a positive multiple of {IMAGE_FACTOR}")
    return (resized_w // IMAGE_FACTOR) * (resized_h // IMAGE_FACTOR)


def _scale_boxes(boxes, source: Sequence[int], target: Sequence[int]) -> list[list[float]]:
    scale_x, scale_y = target[0] / source[0], target[1] / source[1]
    scaled = []
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"box {list(box)} must have 4 numbers [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (float(value) for value in box)
        scaled.append([x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y])
    return scaled


def _clip(box: list[float], width: float, height: float) -> list[float]:
    return [min(max(value, 0), limit) for value, limit in zip(box, (width, height, width, height), strict=True)]


def boxes_to_resized(
    boxes, original_size: Sequence[int], resized_size: Sequence[int], rounding: str = "round"
) -> list[list[int]]:
    """Original-image boxes ``[x0, y0, x1, y1]`` -> integer boxes in the resized frame.

    ``rounding``: ``round`` (ours: nearest integer, clipped to [0, size]) or ``original`` (Rex-Thinker's tools:
    ``int()`` of ``x / width * resized_width``, truncation, then clamped to [0, size - 1])."""
    if rounding == "original":
        return [_truncated(box, original_size, resized_size) for box in boxes]
    if rounding != "round":
        raise ValueError(f"box rounding {rounding!r}: expected one of {', '.join(BOX_ROUNDINGS)}")
    width, height = resized_size
    return [
        [round(value) for value in _clip(box, width, height)]
        for box in _scale_boxes(boxes, original_size, resized_size)
    ]


def _truncated(box, original: Sequence[int], resized: Sequence[int]) -> list[int]:
    if len(box) != 4:
        raise ValueError(f"box {list(box)} must have 4 numbers [x0, y0, x1, y1]")
    # Same operations in the same order as the original (divide, then multiply), so float results truncate alike.
    values = [int(float(value) / original[i % 2] * resized[i % 2]) for i, value in enumerate(box)]
    return [max(0, min(value, resized[i % 2] - 1)) for i, value in enumerate(values)]


def boxes_to_original(boxes, original_size: Sequence[int], resized_size: Sequence[int]) -> list[list[float]]:
    """Resized-frame boxes -> float boxes in original-image pixels, clipped into the original image."""
    width, height = original_size
    return [_clip(box, width, height) for box in _scale_boxes(boxes, resized_size, original_size)]


def check_fixed_point(size: Sequence[int], min_pixels: int, max_pixels: int) -> None:
    """Raise unless a processor with these bounds leaves an image of ``size`` (already resized) unchanged.

    smart_resize is not idempotent for every pair of bounds (with tight bounds it can round down, then back up), and a
    second resize would move the boxes out of the frame they were written in.
    """
    again = resized_size(size[0], size[1], min_pixels, max_pixels)
    if tuple(again) != tuple(size):
        raise DataError(
            f"with min_pixels={min_pixels}, max_pixels={max_pixels} the processor would resize an image already "
            f"resized to {size[0]}x{size[1]} again to {again[0]}x{again[1]}: widen the bounds so that min_pixels <= "
            f"{size[0] * size[1]} <= max_pixels"
        )
