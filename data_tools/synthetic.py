"""A synthetic referring dataset: coloured shapes on a plain (or place-coded) background, in the Rex-Thinker schema.

Each image holds 2-4 objects of one category (circle, square or triangle) and 0-2 distractors of other categories
(both ranges can be set). The box hints are exactly the boxes of every object of the referred category (what a
perfect detector would give), in random order. Referring expressions pick one object by colour ("the red circle") or position ("the leftmost square"),
several by colour ("all blue triangles"), or none ("the yellow circle" when no circle is yellow: the answer is the
rejection sentence). Answer boxes are always exactly hint boxes (same integers, resized frame).

Every row also carries a short chain-of-thought ``sft_target`` in the Rex-Thinker shape (planning, one verdict per
hint, summary, answer), short enough for a tiny model to learn on a CPU in minutes. Output is deterministic in the
arguments: the same seed gives byte-identical parquet files.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from data_tools.synth_options import SYNTH_CHOICES, check_choice
from rexthinker_rl.data.dataset import IMAGE_FACTOR, REJECTION_TEXT, boxes_to_resized, check_fixed_point, resized_size
from rexthinker_rl.utils import atomic_write_bytes

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40)}
BACKGROUND = (128, 128, 128)
POSITIONS = {"leftmost": (0, min), "rightmost": (0, max), "topmost": (1, min), "bottommost": (1, max)}
HINT_PREFIX = "Hint: Object and its coordinates in this image: "
MIN_IMAGE_SIZE = 56
_GAP = 2  # pixels kept free between objects
_POSITION_MARGIN = 3  # resized pixels by which the referred extreme object must beat the runner-up
# The cues' options, and what each taught the demo's model: SYNTH_CHOICES in data_tools/synth_options.py.
_SIDE_WORDS = {"leftmost": "left", "rightmost": "right", "topmost": "top", "bottommost": "bottom"}
_HALVES = (("left", "right"), ("top", "bottom"))  # per axis: the first half's word, the second's

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "images": datasets.List(datasets.Image()),
        "problem": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "image_size": datasets.List(datasets.Value("int32")),
        "resized_size": datasets.List(datasets.Value("int32")),
        "hints": datasets.Value("string"),
        "referring": datasets.Value("string"),
        "category": datasets.Value("string"),
        "sft_target": datasets.Value("string"),
        "answer_boxes": datasets.Value("string"),
    }
)


@dataclass
class ShapeObject:
    """One drawn object; ``box`` is ``[x0, y0, x1, y1]`` in original pixels (x1, y1 exclusive)."""

    shape: str
    colour: str
    box: list[int]


@dataclass
class Scene:
    """A generated image's objects and what the referring expression picks among the category's objects."""

    category: str
    kind: str  # colour | position | multi | rejection
    referring: str
    hinted: list[ShapeObject]  # the category's objects, in hint order
    targets: list[int]  # indices into ``hinted``
    distractors: list[ShapeObject]
    position_axis: int | None = None  # 0: x, 1: y, for position expressions
    direction: str = ""  # leftmost | rightmost | topmost | bottommost, for position expressions
    position_cue: str = "centre"  # what the chain of thought quotes for a position expression (--position-cue)
    verdict_cue: str = "plain"  # "asked": each hint's line repeats what the expression asks before its verdict
    asked: str = ""  # the colour or side the expression names
    summary_cue: str = "count"  # what the summary says (--summary-cue)


def format_answer(boxes: list[list[int]], label: str) -> str:
    """Ground-truth answer text: fenced JSON boxes, or the rejection sentence when there are none."""
    if not boxes:
        return REJECTION_TEXT
    items = [{"bbox_2d": list(box), "label": label} for box in boxes]
    return f"```json\n{json.dumps(items)}\n```"


def _pick_kind(rng: np.random.Generator, rejection_fraction: float, multi_fraction: float) -> str:
    draw = rng.random()
    if draw < rejection_fraction:
        return "rejection"
    if draw < rejection_fraction + multi_fraction:
        return "multi"
    return str(rng.choice(["colour", "position"]))


def _colours(rng: np.random.Generator, kind: str, count: int) -> tuple[list[str], str | None, int]:
    """Colours of the category's objects, the referred colour, and how many objects carry it (first in the list)."""
    names = list(COLOURS)
    if kind == "position":
        return [str(rng.choice(names)) for _ in range(count)], None, 0
    colour = str(rng.choice(names))
    others = [name for name in names if name != colour]
    several = int(rng.integers(2, count + 1)) if count > 1 else 1  # drawn for every kind: same stream as before
    matching = {"colour": 1, "rejection": 0, "multi": several}[kind]
    return [colour] * matching + [str(rng.choice(others)) for _ in range(count - matching)], colour, matching


def _place(rng: np.random.Generator, count: int, image_size: int) -> list[list[int]] | None:
    """``count`` square boxes that keep ``_GAP`` pixels apart, or None when random placement got stuck."""
    low, high = max(8, image_size // 8), max(9, image_size // 4)
    boxes: list[list[int]] = []
    for _ in range(count):
        for _attempt in range(100):
            side = int(rng.integers(low, high + 1))
            x0, y0 = (int(value) for value in rng.integers(0, image_size - side + 1, size=2))
            box = [x0, y0, x0 + side, y0 + side]
            if all(_apart(box, other) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    return boxes


def _place_on_grid(rng: np.random.Generator, count: int, image_size: int, cell: int) -> list[list[int]]:
    """``count`` square boxes, each inside its own ``cell`` x ``cell`` square of a grid over the image (one box per
    square, a pixel of margin), so that every object lies under exactly one of the model's image tokens."""
    per_side = image_size // cell
    squares = rng.choice(per_side * per_side, size=count, replace=False)
    boxes = []
    for square in squares:
        side = int(rng.integers(cell // 2, cell - 1))  # cell//2 .. cell-2
        x_offset, y_offset = (int(value) for value in rng.integers(1, cell - side, size=2))
        x0, y0 = int(square % per_side) * cell + x_offset, int(square // per_side) * cell + y_offset
        boxes.append([x0, y0, x0 + side, y0 + side])
    return boxes


def _apart(box: list[int], other: list[int]) -> bool:
    return (
        box[2] + _GAP <= other[0]
        or other[2] + _GAP <= box[0]
        or box[3] + _GAP <= other[1]
        or other[3] + _GAP <= box[1]
    )


def _centre(box: list[int], axis: int) -> float:
    return (box[axis] + box[axis + 2]) / 2


def make_scene(
    rng: np.random.Generator,
    image_size: int,
    rejection_fraction: float,
    multi_fraction: float,
    position_margin: float = _POSITION_MARGIN,
    hints: tuple[int, int] = (2, 4),
    distractors: tuple[int, int] = (0, 2),
    cell: int = 0,
    position_cue: str = "centre",
    verdict_cue: str = "plain",
    summary_cue: str = "count",
) -> Scene:
    """Draw the objects and the referring expression of one image (random, but reproducible from ``rng``).

    ``position_margin``: original pixels by which the referred extreme object must beat the runner-up.
    ``hints``/``distractors``: inclusive ranges of the category's objects and of the other categories' objects.
    ``cell`` > 0: objects on a grid of squares of that side (``_place_on_grid``); 0: anywhere, kept apart.
    ``position_cue``, ``verdict_cue``, ``summary_cue``: what the chain of thought quotes (their flags'
    values in ``SYNTH_CHOICES``).
    With a single object of the category, "multi" and "position" rows become "colour" rows.
    """
    kind = _pick_kind(rng, rejection_fraction, multi_fraction)
    category = str(rng.choice(SHAPES))
    count, num_distractors = (
        int(rng.integers(hints[0], hints[1] + 1)),
        int(rng.integers(distractors[0], distractors[1] + 1)),
    )
    if count == 1 and kind in ("multi", "position"):
        kind = "colour"
    colours, colour, matching = _colours(rng, kind, count)
    direction = str(rng.choice(list(POSITIONS))) if kind == "position" else ""
    for _attempt in range(200):
        if cell:
            boxes = _place_on_grid(rng, count + num_distractors, image_size, cell)
        else:
            boxes = _place(rng, count + num_distractors, image_size)
        if boxes is None:
            continue
        objects = [ShapeObject(category, name, box) for name, box in zip(colours, boxes[:count], strict=True)]
        targets = list(range(matching))  # _colours puts the matching objects first
        if kind == "position":
            best = _position_target(objects, direction, position_margin, position_cue, image_size)
            if best is None:
                continue
            targets = [best]
        break
    else:
        raise RuntimeError(f"could not place {count + num_distractors} objects apart in a {image_size}px image")
    others = [shape for shape in SHAPES if shape != category]
    distractors = [ShapeObject(str(rng.choice(others)), str(rng.choice(list(COLOURS))), box) for box in boxes[count:]]
    order = [int(i) for i in rng.permutation(count)]
    hinted = [objects[i] for i in order]
    targets = sorted(order.index(target) for target in targets)
    referring = _referring(kind, category, colour, direction)
    axis = POSITIONS[direction][0] if kind == "position" else None
    asked = direction if kind == "position" else str(colour)
    cues = (position_cue, verdict_cue, asked, summary_cue)
    return Scene(category, kind, referring, hinted, targets, distractors, axis, direction, *cues)


def _referring(kind: str, category: str, colour: str | None, direction: str) -> str:
    if kind == "multi":
        return f"all {colour} {category}s"
    if kind == "position":
        return f"the {direction} {category}"
    return f"the {colour} {category}"


def _position_target(
    objects: list[ShapeObject], direction: str, margin: float, position_cue: str, image_size: int
) -> int | None:
    """The object a position expression picks, or None when it is not clear-cut: its centre must beat the runner-up's
    by ``margin``, with the ``edges`` cue its edge on that side too (the chain of thought then quotes edges), and with
    the ``side`` cue it must be the only object in its half of the image (``_half``)."""
    axis, extreme = POSITIONS[direction]
    measures = [[_centre(obj.box, axis) for obj in objects]]
    if position_cue == "edges":
        measures.append([_edge(obj.box, direction) for obj in objects])
    if position_cue == "side":
        halves = [_half(obj.box, axis, image_size) for obj in objects]
        if halves.count(extreme(halves)) != 1 or len(set(halves)) == 1:
            return None
    best = measures[0].index(extreme(measures[0]))
    for values in measures:
        runner_up = extreme(value for i, value in enumerate(values) if i != best)
        if extreme(values) != values[best] or abs(values[best] - runner_up) < margin:
            return None
    return best


def _half(box: list[int], axis: int, size: int) -> int:
    """0 when the box's centre lies in the image's first half on the axis (left or top), 1 in the second."""
    return int(_centre(box, axis) >= size / 2)


def _edge(box: list[int], direction: str) -> int:
    """The box's edge on the side a position expression names (the left edge for "leftmost", ...)."""
    axis, extreme = POSITIONS[direction]
    return box[axis] if extreme is min else box[axis + 2]


BACKGROUNDS = SYNTH_CHOICES["--background"][0]


def background_image(background: str, image_size: int, cell: int) -> Image.Image:
    """The empty picture objects are drawn on. ``plain``: one grey. ``cells`` and ``ramp`` give every place its own
    shade, so that an image token's content says where it is (a frozen vision tower with relative 2-D RoPE, and
    M-RoPE's slow row and column frequencies, give a small model no other absolute place; docs/tiny-demo.md):
    ``cells`` tints each ``cell``-pixel square of the image-token grid by its column (red) and row (blue),
    ``ramp`` shades every pixel the same way, smoothly. All shades stay greyish (channels 96-160), far from the objects'
    colours."""
    check_choice("--background", background)
    if background == "plain":
        return Image.new("RGB", (image_size, image_size), BACKGROUND)
    if background == "frames":
        return _frames(image_size, cell)
    coords = np.arange(image_size, dtype=np.float64)
    if background == "cells":
        squares = -(-image_size // cell)
        coords = (coords // cell) / max(1, squares - 1)
    else:
        coords = coords / max(1, image_size - 1)
    shade = np.rint(96 + 64 * coords).astype(np.uint8)
    pixels = np.empty((image_size, image_size, 3), dtype=np.uint8)
    pixels[..., 0] = shade[None, :]  # column
    pixels[..., 1] = BACKGROUND[1]
    pixels[..., 2] = shade[:, None]  # row
    return Image.fromarray(pixels, "RGB")


def _frames(image_size: int, cell: int) -> Image.Image:
    """Grey, with a frame around each ``cell``-pixel square of the image-token grid in a strong code of its place: red
    by column, blue by row, 0/85/170/255 for the first four squares (two squares a side: 0/85), spread over 0-255 when
    there are more. RGBA: the frames are opaque, so ``draw_scene`` paints them over the objects as well and every image
    token shows its code (the ``cells`` shades, under an object, mostly do not)."""
    width = max(2, cell // 7)
    pixels = np.zeros((image_size, image_size, 4), dtype=np.uint8)
    pixels[..., :3] = BACKGROUND
    places = np.arange(image_size)
    edge = (places % cell < width) | (places % cell >= cell - width)
    squares = -(-image_size // cell)
    level = np.rint(255 * (places // cell) / max(3, squares - 1)).astype(np.uint8)
    on_frame = edge[:, None] | edge[None, :]
    pixels[..., 0] = np.where(on_frame, level[None, :], BACKGROUND[0])  # column
    pixels[..., 2] = np.where(on_frame, level[:, None], BACKGROUND[2])  # row
    pixels[..., 3] = np.where(on_frame, 255, 0)
    return Image.fromarray(pixels, "RGBA")


def draw_scene(scene: Scene, image_size: int, background: Image.Image | None = None) -> Image.Image:
    """The RGB image of a scene, on ``background`` (``background_image``; plain grey when None). An RGBA background's
    opaque pixels (the ``frames``) are painted again over the objects."""
    if background is not None and background.mode == "RGBA":
        opaque = background.convert("RGB")
        image = draw_scene(scene, image_size, opaque)
        image.paste(opaque, mask=background.getchannel("A"))
        return image
    image = background.copy() if background is not None else Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in scene.hinted + scene.distractors:
        x0, y0, x1, y1 = obj.box
        corners = [x0, y0, x1 - 1, y1 - 1]  # PIL includes the end pixel; our boxes exclude it
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse(corners, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(corners, fill=fill)
        else:
            draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)], fill=fill)
    return image


def sft_target(scene: Scene, hint_boxes: list[list[int]], answer: str, columns: int = 0) -> str:
    """A short Rex-Thinker-shaped completion: planning, one verdict per hint, summary, then the answer.

    ``columns``: image-token squares per row of the resized image (the ``square`` cues number the squares with it)."""
    verdicts = []
    for number, (obj, box) in enumerate(zip(scene.hinted, hint_boxes, strict=True), start=1):
        # Quoting each hint box in order (as Rex-Thinker's action step does) gives the answer a nearby copy source.
        # The box comes first: its colour is then read right after its coordinates, and the verdict follows the colour
        # word it compares (docs/tiny-demo.md, "Why the box choice did not move").
        asked = f", asked {scene.asked}" if "asked" in scene.verdict_cue else ""
        seen = f"{obj.colour} {scene.asked}" if "pair" in scene.verdict_cue else f"{obj.colour} {obj.shape}{asked}"
        if scene.position_axis is None:
            where = ""
        elif scene.position_cue == "edges":
            others = [_edge(other, scene.direction) for i, other in enumerate(hint_boxes, 1) if i != number]
            extreme = POSITIONS[scene.direction][1]
            where = f", {_SIDE_WORDS[scene.direction]} {_edge(box, scene.direction)} vs {extreme(others)}"
        elif scene.position_cue == "centre":
            where = f" at {'xy'[scene.position_axis]} {round(_centre(box, scene.position_axis))}"
        else:  # side: the half the box is in, then the side asked, as a colour line's colour read, then asked
            where, axis = "", scene.position_axis
            seen = f"{_HALVES[axis][_half(box, axis, columns * IMAGE_FACTOR)]} {_SIDE_WORDS[scene.direction]}"
        verdict = "yes" if number - 1 in scene.targets else "no"
        column, row = (int(_centre(box, axis) // IMAGE_FACTOR) for axis in (0, 1))
        if "square" in scene.verdict_cue:
            cell = f" cell {row * columns + column}"
        else:
            cell = f" cell {column} {row}" if "cell" in scene.verdict_cue else ""
        colon = "" if "pair" in scene.verdict_cue and not where else ":"
        echo = f" {json.dumps(box)}" if "echo" in scene.verdict_cue and verdict == "yes" else ""
        verdicts.append(f"Box {number} {json.dumps(box)}{cell} {seen}{where}{colon} {verdict}{echo}.")
    matches = len(scene.targets)
    summary = "none match" if not matches else "1 match" if matches == 1 else f"{matches} matches"
    if scene.summary_cue == "boxes" and matches:
        summary += ", " + ", ".join(f"Box {target + 1}" for target in scene.targets)
    # The planning names no colour or side: restating the expression here, right before each box's colour word, let
    # SFT copy the colour from it instead of reading the picture (docs/tiny-demo.md, "Why the box choice did not move").
    planning = f"Planning: check each of the {len(scene.hinted)} {scene.category} hints."
    think = f"{planning} Action: {' '.join(verdicts)} Summary: {summary}."
    return f"<think>{think}</think><answer>{answer}</answer>"


def make_row(
    scene: Scene, row_id: str, image_size: int, resized: tuple[int, int], background: Image.Image | None = None
) -> dict:
    """One dataset row (Rex-Thinker columns plus our metadata) for a scene."""
    original = (image_size, image_size)
    hint_boxes = boxes_to_resized([obj.box for obj in scene.hinted], original, resized)
    answer_boxes = [hint_boxes[i] for i in scene.targets]
    hints = {scene.category: hint_boxes}
    answer = format_answer(answer_boxes, scene.referring)
    buffer = io.BytesIO()
    draw_scene(scene, image_size, background).save(buffer, format="PNG")
    return {
        "id": row_id,
        "images": [{"bytes": buffer.getvalue(), "path": None}],
        "problem": f"{HINT_PREFIX}{json.dumps(hints)}\nPlease detect {scene.referring} in the image.",
        "answer": answer,
        "image_size": list(original),
        "resized_size": list(resized),
        "hints": json.dumps(hints),
        "referring": scene.referring,
        "category": scene.category,
        "sft_target": sft_target(scene, hint_boxes, answer, columns=-(-resized[0] // IMAGE_FACTOR)),
        "answer_boxes": json.dumps(answer_boxes),
    }


def _grid_cell(layout: str, image_size: int, square: int, most_objects: int) -> int:
    """The side of the grid's cells in original pixels: ``square``, one image token's, for the grid layout; 0 for the
    free layout."""
    if layout == "free":
        return 0
    check_choice("--layout", layout)
    if (image_size // square) ** 2 < most_objects:
        raise ValueError(f"--layout grid: a {image_size}px image has fewer than {most_objects} squares of {square}px")
    return square


def write_parquet(rows: list[dict], path: Path) -> None:
    """Write rows with the Hugging Face feature metadata (``datasets`` loads ``images`` as images), atomically."""
    table = pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def _check_numbers(
    image_size: int, num_train: int, num_val: int, rejection_fraction: float, multi_fraction: float,
    pixels: tuple[int, int], hints: tuple[int, int], distractors: tuple[int, int],
) -> None:  # fmt: skip
    """``make_synthetic_dataset``'s numeric arguments, each refused by its flag's name."""
    min_pixels, max_pixels = pixels
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"--image-size {image_size} is too small to hold 6 objects apart (at least {MIN_IMAGE_SIZE})")
    if num_train < 0 or num_val < 0:
        raise ValueError(f"--num-train {num_train} and --num-val {num_val} must be >= 0")
    if not (rejection_fraction >= 0 and multi_fraction >= 0 and rejection_fraction + multi_fraction <= 1):
        raise ValueError(
            f"--rejection-fraction {rejection_fraction} and --multi-fraction {multi_fraction} must be >= 0 "
            "and sum to at most 1"
        )
    if not 0 < min_pixels <= max_pixels:
        raise ValueError(f"--min-pixels {min_pixels} and --max-pixels {max_pixels} need 0 < min <= max")
    for name, (low, high), floor in (("--hints", hints, 1), ("--distractors", distractors, 0)):
        if not floor <= low <= high:
            raise ValueError(f"{name} {low} {high}: need {floor} <= MIN <= MAX")
    if hints[1] + distractors[1] > 6:
        raise ValueError(f"--hints max {hints[1]} + --distractors max {distractors[1]} is over 6 objects per image")


def make_synthetic_dataset(
    out_dir: str | Path,
    num_train: int = 512,
    num_val: int = 64,
    seed: int = 0,
    image_size: int = 112,
    min_pixels: int = 112 * 112,
    max_pixels: int = 112 * 112,
    rejection_fraction: float = 0.15,
    multi_fraction: float = 0.2,
    hints: tuple[int, int] = (2, 4),
    distractors: tuple[int, int] = (0, 2),
    layout: str = "free",
    background: str = "plain",
    position_cue: str = "centre",
    verdict_cue: str = "plain",
    summary_cue: str = "count",
    teach_train: Callable[[list[dict]], object] | None = None,
) -> dict[str, Path]:
    """Write ``train.parquet`` and ``val.parquet`` under ``out_dir``; returns ``{"train": path, "val": path}``.

    ``hints``: inclusive range of objects of the referred category (the box hints) per image; ``distractors``: of
    objects of other categories. At most 6 objects in all. ``layout``: ``free`` (objects anywhere, kept apart) or
    ``grid`` (each object inside its own square of the model's image-token grid: 28 resized pixels a side).
    ``teach_train``: called on the train rows before they are written (``data_tools.teacher``; it edits them in place).
    """
    pixels = (min_pixels, max_pixels)
    _check_numbers(image_size, num_train, num_val, rejection_fraction, multi_fraction, pixels, hints, distractors)
    resized = resized_size(image_size, image_size, min_pixels, max_pixels)
    check_fixed_point(resized, min_pixels, max_pixels)
    margin = _POSITION_MARGIN * image_size / resized[0]  # so "leftmost" stays clear-cut after resizing
    square = IMAGE_FACTOR * image_size // resized[0]  # original pixels a side of one image token's square
    cell = _grid_cell(layout, image_size, square, hints[1] + distractors[1])
    cues = {"--position-cue": position_cue, "--verdict-cue": verdict_cue, "--summary-cue": summary_cue}
    for flag, value in cues.items():
        check_choice(flag, value)
    empty = background_image(background, image_size, square)
    scene_options = (margin, hints, distractors, cell, position_cue, verdict_cue, summary_cue)  # after the fractions
    out = Path(out_dir)
    paths = {}
    for split_index, (split, count) in enumerate((("train", num_train), ("val", num_val))):
        rng = np.random.default_rng([seed, split_index])  # separate streams: val does not shift when train grows
        rows = []
        for index in range(count):
            scene = make_scene(rng, image_size, rejection_fraction, multi_fraction, *scene_options)
            rows.append(make_row(scene, f"synth-{split}-{index:06d}", image_size, resized, empty))
        if split == "train" and teach_train is not None:
            teach_train(rows)
        paths[split] = out / f"{split}.parquet"
        write_parquet(rows, paths[split])
    return paths
