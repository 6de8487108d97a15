"""What does one image token of the frozen vision tower say about its own square? Linear probes.

    python benchmarks/vision_token_probe.py MODEL_DIR [--background plain] [--layout grid] [--scenes 600]

Draws two-object scenes of the synthetic set (112 px, 16 image tokens of 28 px), runs the model's vision tower (patch
embedding, blocks, merger: what the language model receives), and takes, for each object, the output token of the
square its centre lies in. Two linear probes (softmax regression, trained on three quarters of the tokens, measured on
the rest) then ask what that token alone tells: the object's colour, and which of the 16 squares it is. The first
says whether an object's colour stays local to its token; the second whether a background gives the language model an
address it can find by content (``cells`` shades the square's background, which the object mostly covers; ``frames``
draws a coded frame over it). docs/tiny-demo.md, "A place the model can find", has the figures.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from data_tools.synthetic import BACKGROUNDS, COLOURS, background_image, draw_scene, make_scene
from rexthinker_rl.data.dataset import IMAGE_FACTOR
from rexthinker_rl.model.loading import load_model, load_processor, vision_tower

SIZE = 112


def token_features(model_dir: str, background: str, grid: bool, scenes: int, seed: int):
    """(features, colour index, square index) of the token under each object's centre."""
    processor = load_processor(model_dir, SIZE * SIZE, SIZE * SIZE)
    tower = vision_tower(load_model(model_dir, "float32", "sdpa", "cpu"))
    empty, side = background_image(background, SIZE, IMAGE_FACTOR), SIZE // IMAGE_FACTOR
    rng, names = np.random.default_rng(seed), list(COLOURS)
    features, colours, squares = [], [], []
    for _ in range(scenes):
        scene = make_scene(rng, SIZE, 0.0, 0.0, hints=(2, 2), distractors=(0, 0), cell=IMAGE_FACTOR if grid else 0)
        inputs = processor.image_processor(images=[draw_scene(scene, SIZE, empty)], return_tensors="pt")
        with torch.no_grad():
            out = tower(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"])
        tokens = getattr(out, "pooler_output", out).reshape(side, side, -1)  # merged tokens, row by row
        for obj in scene.hinted:
            column, row = (int((obj.box[axis] + obj.box[axis + 2]) / 2 // IMAGE_FACTOR) for axis in (0, 1))
            features.append(tokens[row, column].numpy())
            colours.append(names.index(obj.colour))
            squares.append(row * side + column)
    return np.array(features), np.array(colours), np.array(squares)


def probe(features: np.ndarray, labels: np.ndarray, classes: int, steps: int = 2000) -> float:
    """Held-out accuracy of a softmax regression on standardised features (the first three quarters train)."""
    split = len(features) * 3 // 4
    x = torch.tensor(features, dtype=torch.float32)
    x = (x - x[:split].mean(0)) / (x[:split].std(0) + 1e-6)
    y = torch.tensor(labels)
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x[:split] @ weight + bias, y[:split]) + 1e-3 * weight.square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return round(float(((x[split:] @ weight + bias).argmax(1) == y[split:]).float().mean()), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--background", default="plain", choices=BACKGROUNDS)
    parser.add_argument("--layout", default="grid", choices=("free", "grid"))
    parser.add_argument("--scenes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    features, colours, squares = token_features(
        args.model_dir, args.background, args.layout == "grid", args.scenes, args.seed
    )
    held_out = len(features) - len(features) * 3 // 4
    result = {
        "background": args.background,
        "layout": args.layout,
        "tokens": len(features),
        "colour": probe(features, colours, len(COLOURS)),
        "colour_chance": round(float(np.bincount(colours[-held_out:]).max() / held_out), 3),
        "square": probe(features, squares, (SIZE // IMAGE_FACTOR) ** 2),
        "square_chance": round(float(np.bincount(squares[-held_out:]).max() / held_out), 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
