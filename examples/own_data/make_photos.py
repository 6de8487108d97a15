"""Stand-in "own photos" for the own-data walk-through (docs/data.md): files as a phone, a scanner or an editor
leave them.

Coloured shapes on a plain background, saved the ways real photos come: JPEG, PNG, transparent PNG (RGBA), greyscale,
16-bit greyscale PNG, palette PNG, and JPEGs stored sideways or upside down with an EXIF orientation tag (what a phone
writes when held in portrait), in landscape, portrait and square sizes. ``photos.json`` annotates them as an annotation
tool would: boxes in the upright picture a viewer shows, every shape of the category as a candidate box (what a
detector would give), ground truth among them, some expressions with nothing to find. Deterministic in ``--seed``.

Usage: ``python examples/own_data/make_photos.py --out runs/own [--num 12] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40)}
BACKGROUND = (128, 128, 128)
SIZES = ((160, 120), (120, 160), (140, 140))  # upright (w, h): landscape, portrait, square
# How each photo is stored: (file suffix, PIL mode written, EXIF orientation); the picture is always drawn upright.
STORAGE = (
    (".jpg", "RGB", 1),
    (".png", "RGB", 1),
    (".png", "RGBA", 1),
    (".png", "L", 1),
    (".png", "I;16", 1),
    (".jpg", "RGB", 6),  # stored sideways; viewers turn it 90 degrees clockwise
    (".png", "P", 1),
    (".jpg", "RGB", 3),  # stored upside down
    (".jpg", "RGB", 8),  # stored sideways the other way
)
# The transpose that takes the upright picture to the stored one (the inverse of what EXIF orientation asks for).
TO_STORED = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def _apart(box: list[int], other: list[int], gap: int = 2) -> bool:
    return box[2] + gap <= other[0] or other[2] + gap <= box[0] or box[3] + gap <= other[1] or other[3] + gap <= box[1]


def draw_photo(rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, list[dict]]:
    """An upright RGB picture with 2-3 squares of distinct colours, and their boxes ``[x0, y0, x1, y1]``."""
    width, height = size
    picture = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(picture)
    colours = list(rng.permutation(list(COLOURS))[: int(rng.integers(2, 4))])
    shapes: list[dict] = []
    for colour in colours:
        for _ in range(50):  # a place that overlaps no earlier square
            side = int(rng.integers(24, 40))
            x0, y0 = int(rng.integers(2, width - side - 2)), int(rng.integers(2, height - side - 2))
            box = [x0, y0, x0 + side, y0 + side]
            if all(_apart(box, shape["box"]) for shape in shapes):
                break
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=COLOURS[colour])
        shapes.append({"colour": str(colour), "box": box})
    return picture, shapes


def store(picture: Image.Image, mode: str, orientation: int, path: Path) -> None:
    """Save the upright ``picture`` in ``mode`` (stored turned, with the EXIF tag, when ``orientation`` != 1)."""
    stored = picture.transpose(TO_STORED[orientation]) if orientation != 1 else picture
    if mode == "RGBA":  # the background transparent, as a cut-out would be
        alpha = Image.fromarray(np.where(np.all(np.asarray(stored) == BACKGROUND, axis=-1), 0, 255).astype(np.uint8))
        stored = stored.convert("RGBA")
        stored.putalpha(alpha)
    elif mode == "I;16":  # 16-bit grey: 0-255 spread over 0-65535, as a 16-bit scan would hold it
        stored = Image.fromarray(np.asarray(stored.convert("L"), dtype=np.uint16) * 257)
    elif mode in ("L", "P"):
        stored = stored.convert(mode)
    if orientation == 1:
        stored.save(path)
        return
    exif = Image.Exif()
    exif[274] = orientation  # the EXIF orientation tag
    stored.save(path, exif=exif)


def make_photos(out: str | Path, num: int = 12, seed: int = 0) -> Path:
    """Write ``out/photos/*`` and ``out/photos.json`` (interchange records); returns the JSON path."""
    out = Path(out)
    (out / "photos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for index in range(num):
        suffix, mode, orientation = STORAGE[index % len(STORAGE)]
        size = SIZES[index % len(SIZES)]
        picture, shapes = draw_photo(rng, size)
        name = f"photo_{index:03d}{suffix}"
        store(picture, mode, orientation, out / "photos" / name)
        absent = [colour for colour in COLOURS if colour not in {s["colour"] for s in shapes}]
        if index % 4 == 3 and absent:  # nothing to find: the answer is the rejection sentence
            colour, answers = absent[0], []
        else:
            target = shapes[int(rng.integers(len(shapes)))]
            colour, answers = target["colour"], [target["box"]]
        records.append(
            {
                "id": f"photo-{index:03d}",
                "image_name": name,
                "referring": f"the {colour} square",
                "category": "square",
                "answer_boxes": answers,
                "candidate_boxes": [shape["box"] for shape in shapes],
            }
        )
    path = out / "photos.json"
    path.write_text("[\n" + ",\n".join(json.dumps(record) for record in records) + "\n]\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write photos/ and photos.json into (a new folder)")
    parser.add_argument("--num", type=int, default=12, help="number of photos (one record each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if (Path(args.out) / "photos.json").exists():
        parser.error(f"{args.out}/photos.json exists; choose a new --out")
    print(f"wrote {make_photos(args.out, args.num, args.seed)} and {args.num} photos")


if __name__ == "__main__":
    main()
