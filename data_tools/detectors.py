"""Detectors that propose candidate (hint) boxes, behind one plain-function protocol, and how to load one.

The protocol (the same one the inference CLI uses for hints)::

    def detect(images: list[PIL.Image.Image], categories: list[str], **kwargs) -> list[list[dict]]

``categories[i]`` names what to find in ``images[i]``; the result holds, per image, dicts ``{"bbox": [x0, y0, x1, y1],
"score": float}`` in that image's own (original) pixels. Keyword arguments come from the command line
(``--detector-arg key=value``). :func:`grounding_dino` is the shipped adapter, on the Grounding DINO implementation
inside ``transformers`` (a local checkpoint folder; no clone and no CUDA op build); :func:`grounding_dino_rexthinker`
runs it as Rex-Thinker's ``add_candidates_by_grounding_dino.py`` does (thresholds 0.25/0.25, every box, query order).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import math
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rexthinker_rl.data.dataset import DataError

DetectFunction = Callable[..., list[list[dict[str, Any]]]]


# ------------------------------------------------------------------------------------------------------------ loading
def load_detector(spec: str) -> DetectFunction:
    """Resolve ``"package.module:function"`` or ``"path/to/file.py:function"`` to a detector function."""
    module_part, _, name = spec.rpartition(":") if isinstance(spec, str) else ("", "", "")
    if not module_part or not name:
        raise ValueError(f"--detector must be 'module:function' or 'path/to/file.py:function', got {spec!r}")
    if module_part.endswith(".py") or "/" in module_part:
        path = Path(module_part).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"--detector {spec!r}: file {path} does not exist")
        module_name = f"_detector_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"--detector {spec!r}: cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as err:
            raise ValueError(f"--detector {spec!r}: cannot import {module_part!r} ({err})") from None
    function = getattr(module, name, None)
    if not callable(function):
        public = sorted(key for key, value in vars(module).items() if callable(value) and not key.startswith("_"))
        raise ValueError(f"--detector {spec!r}: {module_part} has no function {name!r} (it has: {', '.join(public)})")
    return function


def parse_detector_args(pairs: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` -> kwargs; a value that parses as JSON (numbers, true, null, lists) is taken as such."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"--detector-arg {pair!r} must be key=value with a Python identifier as key")
        try:
            kwargs[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            kwargs[key.strip()] = text
    return kwargs


# Why a detector's box is left out (check_detections counts each in its ``dropped`` argument).
INVERTED = "x1 < x0 or y1 < y0 (corners in another order, or [x, y, w, h] boxes?)"
EMPTY = "no area (x1 == x0 or y1 == y0)"
OUTSIDE = "outside the image"


def check_detections(
    output: Any, sizes: list[tuple[int, int]], spec: str, dropped: Counter[str] | None = None
) -> list[list[dict[str, Any]]]:
    """Validate a detector's output for images of ``sizes``; boxes clipped into the image. Boxes left out, counted in
    ``dropped`` by reason: inverted ones (x1 < x0 or y1 < y0: dropped, not swapped, since a box in another layout
    swapped would be a wrong box), empty ones, and those with nothing inside the image."""
    dropped = Counter() if dropped is None else dropped
    if not isinstance(output, list) or len(output) != len(sizes):
        got = f"a list of {len(output)}" if isinstance(output, list) else type(output).__name__
        raise DataError(f"detector {spec}: must return one list of detections per image ({len(sizes)}), got {got}")
    checked = []
    for image_index, (detections, (width, height)) in enumerate(zip(output, sizes, strict=True)):
        kept = []
        for detection in detections if isinstance(detections, list) else [None]:
            bbox = detection.get("bbox") if isinstance(detection, dict) else None
            score = detection.get("score") if isinstance(detection, dict) else None
            numbers = [*bbox, score] if isinstance(bbox, list | tuple) and len(bbox) == 4 else []
            if not numbers or not all(isinstance(v, int | float) and math.isfinite(v) for v in numbers):
                raise DataError(
                    f"detector {spec}: image {image_index} of the batch: expected a list of "
                    f"{{'bbox': [x0, y0, x1, y1], 'score': number}}, got {detection!r}"
                )
            if bbox[2] < bbox[0] or bbox[3] < bbox[1]:
                dropped[INVERTED] += 1
                continue
            if bbox[2] == bbox[0] or bbox[3] == bbox[1]:
                dropped[EMPTY] += 1
                continue
            x0, y0, x1, y1 = (
                round(min(max(float(v), 0.0), limit), 2) for v, limit in zip(bbox, (width, height) * 2, strict=True)
            )
            if not (x1 > x0 and y1 > y0):
                outside = bbox[2] <= 0 or bbox[3] <= 0 or bbox[0] >= width or bbox[1] >= height
                dropped[OUTSIDE if outside else EMPTY] += 1  # EMPTY: a sliver that rounding closed
            else:
                kept.append({"bbox": [x0, y0, x1, y1], "score": round(float(score), 4)})
        checked.append(kept)
    return checked


# ---------------------------------------------------------------------------------------------------- Grounding DINO
@functools.lru_cache(maxsize=2)  # add-candidates calls the detector batch after batch: load the checkpoint once
def _load_grounding_dino(model_path: str, device: str):
    # rexthinker_rl, imported at the top of this module, has installed the torchvision shim this import needs.
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"Grounding DINO checkpoint folder {model_path} does not exist")
    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(model_path).to(device).eval()
    return processor, model


def _device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def grounding_dino(
    images: list[Image.Image],
    categories: list[str],
    *,
    model_path: str,
    box_threshold: float = 0.35,
    text_threshold: float = 0.25,
    batch_size: int = 8,
    max_detections: int = 100,
    device: str = "auto",
) -> list[list[dict[str, Any]]]:
    """Boxes of ``categories[i]`` in ``images[i]``, in original-image pixels, best first, from the Grounding DINO
    checkpoint folder ``model_path`` (e.g. ``IDEA-Research/grounding-dino-tiny``, downloaded).

    A box is kept when its best token score beats ``box_threshold`` and some word of the category (not a special
    token or the closing ".") beats ``text_threshold``; at most ``max_detections`` per image.
    """
    results = _run_grounding_dino(images, categories, model_path, box_threshold, text_threshold, batch_size, device)
    return [select_detections(*result, ranked=True, max_detections=max_detections) for result in results]


def grounding_dino_rexthinker(
    images: list[Image.Image],
    categories: list[str],
    *,
    model_path: str,
    box_threshold: float = 0.25,
    text_threshold: float = 0.25,
    batch_size: int = 8,
    device: str = "auto",
) -> list[list[dict[str, Any]]]:
    """Grounding DINO as Rex-Thinker's ``add_candidates_by_grounding_dino.py`` runs it: box and text thresholds 0.25
    (its lines 50-61 and 161), every box whose best token score beats the box threshold, in the detector's own query
    order, none dropped for its label or for their number (the original's ``predict`` filters on the box score alone;
    the text threshold only names the phrase). Use it with ``--gt-policy append``."""
    results = _run_grounding_dino(images, categories, model_path, box_threshold, text_threshold, batch_size, device)
    return [select_detections(*result, ranked=False, max_detections=None) for result in results]


def _run_grounding_dino(
    images: list[Image.Image],
    categories: list[str],
    model_path: str,
    box_threshold: float,
    text_threshold: float,
    batch_size: int,
    device: str,
) -> list[tuple[dict[str, Any], set[str]]]:
    """The post-processed output of every image (boxes, scores, text labels) with the tokenizer's special tokens."""
    if len(images) != len(categories):
        raise ValueError(f"grounding_dino: {len(images)} images but {len(categories)} categories")
    if batch_size < 1:
        raise ValueError(f"grounding_dino: batch_size={batch_size} must be >= 1")
    processor, model = _load_grounding_dino(str(model_path), _device(device))
    special = set(processor.tokenizer.all_special_tokens)
    results: list[tuple[dict[str, Any], set[str]]] = []
    for start in range(0, len(images), batch_size):
        batch = [image.convert("RGB") for image in images[start : start + batch_size]]
        prompts = [f"{category.strip().lower().rstrip('.')}." for category in categories[start : start + batch_size]]
        inputs = processor(images=batch, text=prompts, padding=True, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            outputs = model(**inputs)
        processed = processor.post_process_grounded_object_detection(
            outputs,
            inputs["input_ids"],
            threshold=box_threshold,
            text_threshold=text_threshold,
            target_sizes=[(image.height, image.width) for image in batch],
        )
        results.extend((result, special) for result in processed)
    return results


def select_detections(
    result: dict[str, Any], special: set[str], *, ranked: bool, max_detections: int | None
) -> list[dict[str, Any]]:
    """One image's detections from Grounding DINO's post-processed ``result``. ``ranked`` (ours): only boxes whose
    label holds a word of the category, best score first, at most ``max_detections``; otherwise (Rex-Thinker's) every
    box, in query order."""
    if len(result["boxes"]) == 0:  # the post-processor then returns one (empty) label all the same
        return []
    detections = [
        {"bbox": [float(v) for v in box.tolist()], "score": float(score)}
        for box, score, label in zip(result["boxes"], result["scores"], result["text_labels"], strict=True)
        if not ranked or any(word.strip(".") and word not in special for word in label.split())
    ]
    if ranked:
        detections.sort(key=lambda detection: -detection["score"])
    return detections[:max_detections]
