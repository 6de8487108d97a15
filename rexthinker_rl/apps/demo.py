"""``rexthinker-demo``: a Gradio page to try a model: upload an image, type a referring expression, give box hints.

    rexthinker-demo --model PATH [--host 127.0.0.1] [--port 7860] [--detector module:function --detector-arg k=v]

Hints are typed as JSON in the image's own pixels (``{"person": [[x0, y0, x1, y1], ...]}`` or a list of boxes), or,
when the field is left empty and the demo was started with ``--detector``, found by that detector. The page shows the
picture (hints numbered, answer boxes in red), the reasoning and the boxes. It binds 127.0.0.1 unless told otherwise.
Needs the ``[demo]`` extra (gradio), imported only here.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from data_tools.detectors import load_detector
from rexthinker_rl.apps.console import console_entry
from rexthinker_rl.apps.infer import USER_ERRORS, Predictor, detect_hints, parse_hints_text, render
from rexthinker_rl.config import load_config
from rexthinker_rl.data.images import decode_image
from rexthinker_rl.data.prompts import add_preset_argument, preset_overrides


def answer_request(predictor: Predictor, image, referring: str, category: str, hints_text: str, detector: str | None,
                   detector_args: list[str]):  # fmt: skip
    """``(picture, reasoning, boxes JSON)`` for one request; ValueError with a message for the page on bad input."""
    if image is None:
        raise ValueError("upload an image first")
    # The uploaded file as stored (gradio passes its path untouched), decoded the one way every path decodes.
    image = decode_image(image, "uploaded image", predictor.config.data.apply_exif_orientation)
    if not (referring or "").strip():
        raise ValueError("type a referring expression")
    category = (category or "").strip() or "object"
    if (hints_text or "").strip():
        hints = parse_hints_text(hints_text, category)
    elif detector:
        hints = detect_hints(detector, detector_args, image, category)
    else:
        raise ValueError('give box hints, e.g. {"person": [[10, 20, 110, 220]]} (no detector was configured)')
    inference = predictor.predict(image, referring, hints)
    boxes = json.dumps({"answer": inference.kind, "boxes": inference.boxes, "hints": inference.hints})
    return render(image, referring, inference), inference.reasoning, boxes


def build_app(predictor: Predictor, detector: str | None = None, detector_args: list[str] | None = None):
    """The Gradio Blocks app (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def on_run(image, referring, category, hints_text):
        try:
            return answer_request(predictor, image, referring, category, hints_text, detector, detector_args or [])
        except USER_ERRORS as err:
            raise gr.Error(str(err)) from None

    hint_help = "Box hints, JSON in image pixels" + (" (empty: run the detector)" if detector else "")
    with gr.Blocks(title="Rex-Thinker RL demo") as app:
        gr.Markdown("## Rex-Thinker RL: grounded referring with reasoning over box hints")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", image_mode=None, label="Image", elem_id="image")
                referring = gr.Textbox(label="Referring expression", elem_id="referring", lines=1)
                category = gr.Textbox(label="Category of the hints", value="person", elem_id="category", lines=1)
                hints = gr.Textbox(
                    label=hint_help, elem_id="hints", lines=3, placeholder='{"person": [[x0, y0, x1, y1], ...]}'
                )
                run = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column():
                output = gr.Image(type="pil", label="Answer", elem_id="output", interactive=False)
                reasoning = gr.Textbox(label="Reasoning", elem_id="reasoning", lines=8, interactive=False)
                boxes = gr.Textbox(label="Boxes (image pixels)", elem_id="boxes", lines=2, interactive=False)
        run.click(on_run, [image, referring, category, hints], [output, reasoning, boxes])
    return app


def check_port_free(host: str, port: int) -> None:
    """ValueError naming ``--port`` when nothing can listen on ``host:port`` (another program holds it)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gradio's server binds
            probe.bind((host, port))
    except OSError as error:
        raise ValueError(
            f"--port {port}: cannot listen on {host}:{port} ({error.strerror or error}); another program holds it: "
            "choose another --port, or stop that program"
        ) from None


@console_entry("rexthinker-demo")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rexthinker-demo", description="Gradio demo of a Rex-Thinker model.")
    parser.add_argument("--model", required=True, help="Hugging Face folder of the model")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--detector", default=None, help="module:function proposing hints when none are typed")
    parser.add_argument("--detector-arg", action="append", default=[], help="key=value for the detector (repeat)")
    parser.add_argument("--config", default=None, help="YAML config (pixel bounds, engine, prompts)")
    parser.add_argument("--engine", choices=("vllm", "hf"), default="hf", help="rollout engine (default hf)")
    add_preset_argument(parser)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data.max_response_length=2048")
    args = parser.parse_args(argv)
    try:
        check_port_free(args.host, args.port)  # before the model loads: gradio would raise deep in launch()
        if args.detector:
            load_detector(args.detector)  # a wrong spec fails now, not at the first request
        overrides = [*preset_overrides(args.prompt_preset), *args.overrides, f"rollout.engine={args.engine}"]
        config = load_config(args.config, overrides)
        predictor = Predictor(config, args.model)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    app = build_app(predictor, args.detector, args.detector_arg)
    app.queue().launch(server_name=args.host, server_port=args.port, share=False)
    return 0


def console_main() -> None:
    sys.exit(main())
