"""Rollout viewer: one static HTML page per run (``RUN_DIR/viewer.html``), built from ``RUN_DIR/rollouts.jsonl``.

    python -m rexthinker_rl.apps.viewer RUN_DIR [--data train.parquet] [--max-rollouts 2000]

Each logged rollout shows its image (the training row's, found by row id in ``data.train_files`` of the run's
``config.yaml``, or ``--data``) in the resized frame, with the hint boxes (numbered), the ground truth and the answer's
boxes drawn as inline SVG over it; the referring expression, the reward breakdown and the completion. Filters (reward
range, step, text search) run in the browser; the page needs no server and embeds every image once.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from rewards.parsing import parse_answer, parse_completion
from rexthinker_rl.config import DataConfig
from rexthinker_rl.data.dataset import (
    DataError,
    decode_image,
    hints_from_problem,
    image_payload,
    read_rows,
    resized_size,
)
from rexthinker_rl.run.outputs import check_new_file
from rexthinker_rl.utils import atomic_write_text

logger = logging.getLogger(__name__)
COLOURS = {"hint": "#e100e1", "gt": "#1ea03c", "pred": "#dc1e1e"}


@dataclass
class Rollout:
    """One line of rollouts.jsonl with its boxes parsed (resized frame)."""

    step: int
    uid: str
    prompt: str
    response: str
    ground_truth: str
    reward: dict[str, float]
    hints: list[list[float]]
    gt: list[list[float]]
    pred: list[list[float]]
    answer_kind: str


def read_rollouts(path: Path, max_rollouts: int) -> list[Rollout]:
    """The last ``max_rollouts`` lines of a rollouts.jsonl, parsed; DataError naming a bad line."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (the trainer writes it when logging.log_rollouts > 0)")
    lines = [(number, line) for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line]
    rollouts = []
    for number, line in lines[-max_rollouts:] if max_rollouts > 0 else lines:
        try:
            item = json.loads(line)
            step, uid, reward = int(item["step"]), str(item["uid"]), dict(item["reward"])
            prompt, response, truth = str(item["prompt"]), str(item["response"]), str(item["ground_truth"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path.name} line {number}: not a rollout record ({type(err).__name__}: {err})") from None
        try:
            hints = [box for boxes in (hints_from_problem(prompt) or {}).values() for box in boxes]
        except DataError:
            hints = []
        gt = parse_answer(truth)
        answer = parse_completion(response).answer
        rollouts.append(
            Rollout(
                step,
                uid,
                prompt,
                response,
                truth,
                {key: float(value) for key, value in reward.items()},
                hints,
                [list(box) for box in gt.boxes],
                [list(box) for box in answer.boxes],
                answer.kind,
            )
        )
    return rollouts


def _run_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False).get("data", {})  # type: ignore[union-attr]


def load_images(data: str | None, uids: Iterable[str], data_cfg: dict) -> dict[str, tuple[str, int, int]]:
    """``{uid: (PNG data URI, width, height)}`` in the resized frame for the rows the rollouts name."""
    wanted = set(uids)
    if not data or not wanted:
        return {}
    rows = read_rows(data)
    defaults = DataConfig()
    min_pixels = int(data_cfg.get("min_pixels", defaults.min_pixels))
    max_pixels = int(data_cfg.get("max_pixels", defaults.max_pixels))
    image_key = str(data_cfg.get("image_key", "images"))
    images = {}
    for index, row in enumerate(rows.iter_rows()):
        file, local = rows.locate(index)
        uid = str(row["id"]) if row.get("id") is not None else f"{file.name}:{local}"
        if uid not in wanted or uid in images:
            continue
        where = rows.where(index)
        apply_exif = bool(data_cfg.get("apply_exif_orientation", True))
        image = decode_image(image_payload(row, image_key, file.parent, where), where, apply_exif)
        size = resized_size(image.width, image.height, min_pixels, max_pixels)
        image = image.resize(size) if image.size != size else image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        images[uid] = (f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}", *size)
    return images


def _rects(boxes: list[list[float]], kind: str, numbered: bool = False) -> str:
    parts = []
    for number, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        width, height = max(0.0, x1 - x0), max(0.0, y1 - y0)
        parts.append(f'<rect class="{kind}" x="{x0:g}" y="{y0:g}" width="{width:g}" height="{height:g}"/>')
        if numbered:
            parts.append(f'<text class="{kind}" x="{x0 + 1:g}" y="{y0 + 7:g}">{number}</text>')
    return "".join(parts)


def _card(index: int, rollout: Rollout, image: tuple[str, int, int] | None, image_id: str) -> str:
    boxes = rollout.hints + rollout.gt + rollout.pred
    width, height = (image[1], image[2]) if image else (max([112.0] + [box[2] + 4 for box in boxes]),) * 2
    background = (
        f'<use href="#{image_id}"/>'
        if image
        else f'<rect width="{width:g}" height="{height:g}" fill="#888"/><text x="4" y="12">no image</text>'
    )
    svg = (
        f'<svg viewBox="0 0 {width:g} {height:g}" style="stroke-width:{max(width, height) / 200:.2f};'
        f'font-size:{max(width, height) / 16:.1f}px">{background}{_rects(rollout.hints, "hint", True)}'
        f"{_rects(rollout.gt, 'gt')}{_rects(rollout.pred, 'pred')}</svg>"
    )
    overall = rollout.reward.get("overall", 0.0)
    rewards = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" for k, v in rollout.reward.items())
    referring = rollout.prompt.rsplit("Please detect ", 1)[-1].split(" in the image.")[0]
    search = html.escape(f"{rollout.uid} {referring} {rollout.answer_kind}".lower())
    return (
        f'<article class="card" id="r{index}" data-reward="{overall}" data-step="{rollout.step}" data-text="{search}">'
        f'<div class="head">step {rollout.step} &middot; {html.escape(rollout.uid)} &middot; '
        f"<b>reward {overall:.3f}</b> &middot; answer: {rollout.answer_kind}</div>"
        f'<div class="body">{svg}<div class="text"><p class="ref">{html.escape(referring)}</p>'
        f'<table class="reward">{rewards}</table><pre class="response">{html.escape(rollout.response)}</pre>'
        f"<details><summary>ground truth</summary><pre>{html.escape(rollout.ground_truth)}</pre></details>"
        "</div></div></article>"
    )


_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f4;color:#222}
header{position:sticky;top:0;background:#fff;padding:8px 16px;border-bottom:1px solid #ccc;z-index:1}
h1{font-size:18px;margin:0 0 6px}
#controls label{margin-right:14px}
.legend span{margin-right:14px;font-size:13px}
.card{background:#fff;margin:10px 16px;padding:8px 12px;border-radius:6px;box-shadow:0 1px 2px #0002}
.card.hidden{display:none}
.head{font-size:13px;color:#444;margin-bottom:6px}
.body{display:flex;gap:16px;align-items:flex-start}
svg{width:320px;flex:none;background:#888}
rect{fill:none}
rect.hint{stroke:#e100e1;stroke-dasharray:2 1}
rect.gt{stroke:#1ea03c;stroke-width:2px}
rect.pred{stroke:#dc1e1e}
text.hint{fill:#e100e1}
.text{flex:1;min-width:0}
.ref{font-weight:600;margin:0 0 6px}
pre{white-space:pre-wrap;word-break:break-word;background:#fafafa;padding:6px;margin:6px 0;font-size:12px}
table.reward td{padding:0 10px 0 0;font-size:12px}
"""

_SCRIPT = """
const cards = Array.from(document.querySelectorAll('.card'));
const low = document.getElementById('min'), high = document.getElementById('max');
const step = document.getElementById('step'), query = document.getElementById('q');
function apply() {
  const lo = parseFloat(low.value), hi = parseFloat(high.value), s = step.value, q = query.value.toLowerCase();
  document.getElementById('minv').textContent = lo.toFixed(2);
  document.getElementById('maxv').textContent = hi.toFixed(2);
  let shown = 0;
  for (const card of cards) {
    const r = parseFloat(card.dataset.reward);
    const ok = r >= lo - 1e-9 && r <= hi + 1e-9 && (!s || card.dataset.step === s) && card.dataset.text.includes(q);
    card.classList.toggle('hidden', !ok);
    shown += ok;
  }
  document.getElementById('count').textContent = shown + ' of ' + cards.length + ' rollouts';
}
for (const el of [low, high, step, query]) el.addEventListener('input', apply);
apply();
"""


def render_page(title: str, rollouts: list[Rollout], images: dict[str, tuple[str, int, int]]) -> str:
    """The whole HTML page."""
    rewards = [rollout.reward.get("overall", 0.0) for rollout in rollouts] or [0.0]
    low, high = min(0.0, min(rewards)), max(1.0, max(rewards))
    steps = sorted({rollout.step for rollout in rollouts})
    options = "".join(f'<option value="{step}">{step}</option>' for step in steps)
    image_ids = {uid: f"img{number}" for number, uid in enumerate(images)}
    defs = "".join(
        f'<image id="{image_ids[uid]}" href="{uri}" width="{w}" height="{h}"/>' for uid, (uri, w, h) in images.items()
    )
    slider = f'type="range" min="{low:g}" max="{high:g}" step="{(high - low) / 100:g}"'
    names = {"hint": "hints (numbered)", "gt": "ground truth", "pred": "answer"}
    legend = "".join(f'<span style="color:{COLOURS[kind]}">&#9632; {name}</span>' for kind, name in names.items())
    cards = "".join(
        _card(index, rollout, images.get(rollout.uid), image_ids.get(rollout.uid, ""))
        for index, rollout in enumerate(rollouts)
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<style>{_STYLE}</style></head><body><header><h1>{html.escape(title)}</h1><div id="controls">'
        f'<label>reward &ge; <input id="min" {slider} value="{low:g}"> <span id="minv"></span></label>'
        f'<label>reward &le; <input id="max" {slider} value="{high:g}"> <span id="maxv"></span></label>'
        f'<label>step <select id="step"><option value="">all</option>{options}</select></label>'
        f'<label>search <input id="q" type="search" placeholder="id, expression, answer kind"></label>'
        f'<b id="count"></b></div><div class="legend">{legend}</div></header>'
        f'<svg width="0" height="0" style="position:absolute"><defs>{defs}</defs></svg>'
        f'<main id="cards">{cards}</main><script>{_SCRIPT}</script></body></html>'
    )


def build_viewer(
    run_dir: str | Path,
    data: str | None = None,
    max_rollouts: int = 2000,
    out: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``viewer.html`` for a run folder (its own page there is rewritten each time; another existing ``out`` only
    with ``overwrite``, and never an input); returns its path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} does not exist")
    inputs = [run / "rollouts.jsonl", run / "config.yaml", data or ""]
    check_new_file(out or run / "viewer.html", overwrite or not out, inputs)
    rollouts = read_rollouts(run / "rollouts.jsonl", max_rollouts)
    data_cfg = _run_config(run)
    data = data or data_cfg.get("train_files") or None
    if data and not Path(data).exists():
        logger.warning("training set %s not found: rollouts are drawn without images (pass --data)", data)
        data = None
    images = load_images(data, (rollout.uid for rollout in rollouts), data_cfg)
    path = Path(out) if out else run / "viewer.html"
    atomic_write_text(path, render_page(f"Rollouts: {run.resolve().name}", rollouts, images))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rexthinker_rl.apps.viewer", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run folder holding rollouts.jsonl (and config.yaml)")
    parser.add_argument("--data", default=None, help="training set with the rollouts' images (default: config's)")
    parser.add_argument("--max-rollouts", type=int, default=2000, help="the last N logged rollouts (0: all)")
    parser.add_argument("--out", default=None, help="HTML file to write (default RUN_DIR/viewer.html)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out (never an input)")
    args = parser.parse_args(argv)
    try:
        path = build_viewer(args.run_dir, args.data, args.max_rollouts, args.out, args.overwrite)
    except (DataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"viewer: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
