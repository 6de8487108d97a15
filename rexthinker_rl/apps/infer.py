"""``rexthinker-infer``: one image, one referring expression, box hints -> reasoning, boxes and a picture.

    rexthinker-infer --model PATH --image street.jpg --ref "the man in a red shirt" --hints hints.json
    rexthinker-infer --model PATH --image street.jpg --ref "..." --category person \\
        --detector data_tools.detectors:grounding_dino --detector-arg model_path=checkpoints/grounding-dino-tiny

Hints are in the image's own pixels: a JSON object ``{"person": [[x0, y0, x1, y1], ...]}`` or a bare list of boxes
(named by ``--category``), or the boxes a detector finds (the ``data_tools.detectors`` protocol, ``module:function`` or
``file.py:function``). Output boxes are in the image's own pixels too; the model works in the resized frame and
:class:`Predictor` maps both ways. Bad input prints one ``error:`` line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from data_tools.detectors import check_detections, load_detector, parse_detector_args
from rewards.parsing import parse_completion
from rexthinker_rl.apps.console import console_entry
from rexthinker_rl.apps.visualize import render as draw
from rexthinker_rl.apps.visualize import save_image
from rexthinker_rl.config import Config, ConfigError, load_config
from rexthinker_rl.data.dataset import DataError, decode_image, is_box
from rexthinker_rl.data.prompts import add_preset_argument, clean_up_spaces, preset_for, preset_overrides
from rexthinker_rl.data.rows import load_json, read_text
from rexthinker_rl.eval.prompts import make_prompt
from rexthinker_rl.eval.run import build_engine, parse_response
from rexthinker_rl.model.loading import load_processor
from rexthinker_rl.rollout.base import RolloutEngine, RolloutPrompt, SamplingSpec
from rexthinker_rl.run.outputs import check_new_file

USER_ERRORS = (ConfigError, DataError, FileNotFoundError, ValueError)
Hints = dict[str, list[list[float]]]


@dataclass
class Inference:
    """A model's answer for one image; boxes in the image's own pixels (``boxes_resized``: as the model wrote them)."""

    response: str
    reasoning: str
    kind: str  # boxes | rejection | invalid
    boxes: list[list[float]]
    boxes_resized: list[list[float]]
    hints: Hints


class Predictor:
    """A loaded model (processor + rollout engine) that answers referring requests greedily."""

    def __init__(self, config: Config, model_path: str, engine: RolloutEngine | None = None) -> None:
        self.config = config
        data, model = config.data, config.model
        self.processor = load_processor(
            model.tokenizer_path or model_path, data.min_pixels, data.max_pixels, model.trust_remote_code
        )
        self.engine = engine or build_engine(config, model_path)
        self.preset = preset_for(data)

    def predict(self, image: Image.Image, referring: str, hints: Hints) -> Inference:
        if not referring.strip():
            raise ValueError("the referring expression is empty")
        check_hints_inside(hints, image.size)
        prompt = make_prompt(self.processor, self.config.data, image, referring.strip(), hints)
        sampling = SamplingSpec(n=1, temperature=0.0, top_p=1.0, max_tokens=self.config.data.max_response_length)
        text = self.engine.generate([RolloutPrompt(prompt.prompt_text, prompt.image)], sampling)[0].text
        text = clean_up_spaces(text) if self.preset.decode_cleanup else text
        answer = parse_response(text, image.size, prompt.metadata["resized_size"], self.preset.answer_parsing)
        think = parse_completion(text).think
        # Blank lines (an untrained model emits runs of them) are dropped: the reasoning is read, not its layout.
        reasoning = re.sub(r"\s*\n\s*", "\n", think if think is not None else text).strip()
        return Inference(text, reasoning, answer.kind, answer.boxes_original, answer.boxes_resized, hints)


def parse_hints_value(value, category: str, where: str) -> Hints:
    """``{category: boxes}`` from a JSON object of that shape or a bare list of boxes (named ``category``)."""
    if isinstance(value, list):
        value = {category: value}
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{where}: hints must be {{category: [[x0, y0, x1, y1], ...]}} or a list of boxes")
    hints: Hints = {}
    for name, boxes in value.items():
        if not isinstance(boxes, list) or not all(is_box(box) for box in boxes):
            raise ValueError(f"{where}: hints[{name!r}] must be a list of [x0, y0, x1, y1] boxes, got {boxes!r:.80}")
        for box in boxes:
            if not (box[2] > box[0] and box[3] > box[1]):
                raise ValueError(f"{where}: hint box {box} has x1 <= x0 or y1 <= y0 (boxes are x0, y0, x1, y1)")
        hints[str(name)] = [[float(v) for v in box] for box in boxes]
    return hints


def parse_hints_text(text: str, category: str, where: str = "") -> Hints:
    """Hints from JSON text (see :func:`parse_hints_value`); ``where``: the file they came from."""
    return parse_hints_value(load_json(text, where, "hints are"), category, where or "hints")


def check_hints_inside(hints: Hints, size: tuple[int, int]) -> None:
    """ValueError naming the first hint box that reaches outside a ``w x h`` image (hints are in its own pixels)."""
    width, height = size
    for name, boxes in hints.items():
        for box in boxes:
            if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
                raise ValueError(
                    f"hint box {box} ({name!r}) lies outside the {width}x{height} image; hints are [x0, y0, x1, y1] "
                    "in the image's own pixels"
                )


def read_hints(path: str | Path, category: str) -> Hints:
    """Hints from a JSON file (see :func:`parse_hints_value`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--hints {path} does not exist")
    return parse_hints_text(read_text(path), category, path.name)


def detect_hints(spec: str, detector_args: list[str], image: Image.Image, category: str) -> Hints:
    """Hints from a detector function (``data_tools.detectors`` protocol) for ``category`` in ``image``."""
    detect = load_detector(spec)
    output = detect([image], [category], **parse_detector_args(detector_args))
    dropped: Counter[str] = Counter()
    detections = check_detections(output, [image.size], spec, dropped)[0]
    if dropped:  # said, not silent: a detector writing boxes in another layout shows here first
        left_out = "; ".join(f"{count} {reason}" for reason, count in sorted(dropped.items()))
        print(f"note: detector boxes left out: {left_out}", file=sys.stderr)
    return {category: [detection["bbox"] for detection in detections]}


def render(image: Image.Image, referring: str, inference: Inference) -> Image.Image:
    """The picture the CLI saves: hints numbered, predicted boxes, the reasoning beside the image."""
    hints = [box for boxes in inference.hints.values() for box in boxes]
    text = f"{inference.reasoning}\n\nanswer ({inference.kind}): {json.dumps(inference.boxes)}"
    return draw(image, hints=hints, pred=inference.boxes, text=text, title=referring)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rexthinker-infer", description="Grounded referring on one image.")
    parser.add_argument("--model", required=True, help="Hugging Face folder of the model")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--ref", required=True, help='referring expression, e.g. "the man in a red shirt"')
    hints = parser.add_mutually_exclusive_group(required=True)
    hints.add_argument("--hints", help="JSON file: {category: [[x0, y0, x1, y1], ...]} or a list of boxes")
    hints.add_argument("--detector", help="module:function or file.py:function proposing the hint boxes")
    parser.add_argument("--detector-arg", action="append", default=[], help="key=value for the detector (repeat)")
    parser.add_argument("--category", default="object", help="what the hints are (detector prompt, list hints)")
    parser.add_argument("--out", default="rexthinker_infer.png", help="where to save the visualisation (a new file)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (never the input)")
    parser.add_argument("--config", default=None, help="YAML config (pixel bounds, engine, prompts)")
    parser.add_argument("--engine", choices=("vllm", "hf"), default="hf", help="rollout engine (default hf)")
    add_preset_argument(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.max_response_length=2048")
    return parser


@console_entry("rexthinker-infer")
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides = [*preset_overrides(args.prompt_preset), *args.overrides, f"rollout.engine={args.engine}"]
        config = load_config(args.config, overrides)
        if not Path(args.image).is_file():
            raise FileNotFoundError(f"--image {args.image} does not exist")
        check_new_file(args.out, args.overwrite, inputs=[args.image, args.hints or ""])
        image = decode_image(Path(args.image), args.image, config.data.apply_exif_orientation)
        if args.hints:
            hints = read_hints(args.hints, args.category)
        else:
            hints = detect_hints(args.detector, args.detector_arg, image, args.category)
        inference = Predictor(config, args.model).predict(image, args.ref, hints)

        save_image(render(image, args.ref, inference), args.out)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"reasoning:\n{inference.reasoning or '(none: the completion has no reasoning text)'}\n")
    print(f"answer: {inference.kind}")
    print(f"boxes (image pixels): {json.dumps(inference.boxes)}")
    print(f"visualisation: {args.out}")
    return 0


def console_main() -> None:
    sys.exit(main())
