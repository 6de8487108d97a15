"""A toy detector for the walk-through: finds the flat-coloured shapes of the toy images, imperfectly on purpose.

It follows the detector protocol of ``data_tools.detectors`` (``detect(images, categories, **kwargs)``). Objects are
the connected regions that differ from the grey background; a region's shape follows from how much of its box it fills
(square ~1, circle ~0.79, triangle ~0.5). Like a real detector it is a little off: each box edge moves by up to
``jitter`` pixels and each object is missed with probability ``miss_rate``, so the GT-in-hints repair has rows to snap
and to insert. Deterministic: the noise is drawn from ``seed`` and the image's pixels.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image
from scipy import ndimage

from data_tools.synthetic import BACKGROUND

_FILL = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}


def _shape_of(fill: float) -> str:
    return min(_FILL, key=lambda shape: abs(_FILL[shape] - fill))


def detect(
    images: list[Image.Image], categories: list[str], *, jitter: int = 2, miss_rate: float = 0.2, seed: int = 0
) -> list[list[dict]]:
    """Boxes ``{"bbox", "score"}`` of the objects of ``categories[i]`` in ``images[i]``, in the image's pixels."""
    results = []
    for image, category in zip(images, categories, strict=True):
        pixels = np.asarray(image.convert("RGB"))
        labels, _ = ndimage.label(np.any(pixels != BACKGROUND, axis=-1))
        digest = hashlib.sha256(pixels.tobytes() + category.encode()).digest()
        rng = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])
        wanted = category.strip().lower()
        detections = []
        for number, region in enumerate(ndimage.find_objects(labels), start=1):
            y, x = region
            box = [x.start, y.start, x.stop, y.stop]
            fill = float((labels[region] == number).mean())
            if _shape_of(fill) != wanted or rng.random() < miss_rate:
                continue
            moved = [value + int(rng.integers(-jitter, jitter + 1)) for value in box]
            detections.append({"bbox": moved, "score": round(1 - abs(_FILL[wanted] - fill), 3)})
        results.append(detections)
    return results
