"""Write the toy referring set of the data-preparation walk-through: coloured-shape images and an interchange JSON.

The records carry ground-truth boxes only (no candidate boxes): ``rexthinker-data add-candidates`` adds those with the
toy detector in ``toy_detector.py``. Images are 224x224 PNGs, so a conversion with ``--min-pixels 12544 --max-pixels
12544`` (the tiny model's 112x112 frame) halves every box. Deterministic in ``--seed``.

Usage: ``python examples/toy/make_toy.py --out runs/toy [--num 24] [--seed 0]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from data_tools.interchange import Record, write_records
from data_tools.synthetic import draw_scene, make_scene

IMAGE_SIZE = 224


def make_toy(out: str | Path, num: int = 24, seed: int = 0) -> Path:
    """Write ``out/images/*.png`` and ``out/toy.json``; returns the JSON path."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for index in range(num):
        # Position expressions must stay clear-cut after halving: 6 original pixels are 3 resized ones.
        scene = make_scene(rng, IMAGE_SIZE, rejection_fraction=0.15, multi_fraction=0.2, position_margin=6)
        name = f"toy_{index:03d}.png"
        draw_scene(scene, IMAGE_SIZE).save(out / "images" / name)
        answers = [list(scene.hinted[target].box) for target in scene.targets]
        records.append(Record(index, name, scene.referring, scene.category, answers, id=f"toy-{index:03d}"))
    write_records(out / "toy.json", records)
    return out / "toy.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write images/ and toy.json into")
    parser.add_argument("--num", type=int, default=24, help="number of records (one image each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if (Path(args.out) / "toy.json").exists():
        parser.error(f"{args.out}/toy.json exists; choose a new --out")
    print(f"wrote {make_toy(args.out, args.num, args.seed)} and {args.num} images")


if __name__ == "__main__":
    main()
