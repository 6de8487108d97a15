"""Drawing for people: an image with hint (numbered), ground-truth and predicted boxes, the reasoning text beside it.

Used by the inference CLI, the demo and the HumanRef-CoT tool. Boxes are ``[x0, y0, x1, y1]`` in the pixels of the
image passed in; small images are drawn enlarged so the numbers stay readable.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from rexthinker_rl.utils import atomic_write_bytes

HINT_COLOUR = (225, 0, 225)
GT_COLOUR = (30, 160, 60)
PRED_COLOUR = (220, 30, 30)
MIN_SIDE = 448  # images are drawn with their shorter side at least this long
TEXT_WIDTH = 520
MARGIN = 12

Boxes = Sequence[Sequence[float]]


def font(size: int = 15) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` (no system font needed)."""
    return ImageFont.load_default(size=size)


def draw_boxes(
    draw: ImageDraw.ImageDraw,
    boxes: Boxes,
    colour: tuple[int, int, int],
    scale: float = 1.0,
    width: int = 3,
    labels: Sequence[str] | None = None,
) -> None:
    """Rectangles for ``boxes`` (scaled by ``scale``) with optional labels in a filled tag at their top-left."""
    label_font = font(14)
    for index, box in enumerate(boxes):
        x0, y0, x1, y1 = (float(value) * scale for value in box)
        draw.rectangle([x0, y0, max(x0, x1), max(y0, y1)], outline=colour, width=width)
        if labels is not None:
            text = labels[index]
            left, top, right, bottom = draw.textbbox((x0 + 2, y0 + 1), text, font=label_font)
            draw.rectangle([left - 2, top - 1, right + 2, bottom + 1], fill=colour)
            draw.text((x0 + 2, y0 + 1), text, fill=(255, 255, 255), font=label_font)


def wrap(text: str, width_px: int, text_font) -> list[str]:
    """Lines of ``text`` that fit ``width_px`` (paragraphs kept)."""
    average = max(1.0, text_font.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
    columns = max(10, int(width_px / average))
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(paragraph, columns, break_long_words=True) or [""])
    return lines


def legend_text(hints: Boxes = (), gt: Boxes = (), pred: Boxes = ()) -> str:
    """The legend of what a picture shows (a picture without ground truth names none)."""
    drawn = (("magenta: hints (numbered)", hints), ("green: ground truth", gt), ("red: prediction", pred))
    return "   ".join(label for label, boxes in drawn if len(boxes))


def render(
    image: Image.Image,
    hints: Boxes = (),
    pred: Boxes = (),
    gt: Boxes = (),
    text: str = "",
    title: str = "",
) -> Image.Image:
    """The image with hints (magenta, numbered from 1), ground truth (green), prediction (red), text on the right."""
    scale = max(1.0, MIN_SIDE / max(1, min(image.size)))
    shown = image.convert("RGB")
    if scale > 1.0:
        shown = shown.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(shown)
    draw_boxes(draw, hints, HINT_COLOUR, scale, 2, [str(i) for i in range(1, len(hints) + 1)])
    draw_boxes(draw, gt, GT_COLOUR, scale, 4)
    draw_boxes(draw, pred, PRED_COLOUR, scale, 2)
    body_font, title_font = font(15), font(18)
    legend = legend_text(hints, gt, pred)
    lines = wrap(text, TEXT_WIDTH - 2 * MARGIN, body_font)
    line_height = 20
    header = 2 * line_height + MARGIN
    text_height = header + line_height * len(lines) + MARGIN
    height = max(shown.height + header, text_height)
    canvas = Image.new("RGB", (shown.width + TEXT_WIDTH + MARGIN, height), (255, 255, 255))
    canvas.paste(shown, (0, header))
    canvas_draw = ImageDraw.Draw(canvas)
    canvas_draw.text((MARGIN, 4), title, fill=(0, 0, 0), font=title_font)
    canvas_draw.text((MARGIN, 4 + line_height + 4), legend, fill=(80, 80, 80), font=font(13))
    left = shown.width + MARGIN
    for number, line in enumerate(lines):
        canvas_draw.text((left, header + number * line_height), line, fill=(20, 20, 20), font=body_font)
    return canvas


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Save atomically, in the format the file suffix names (``.png``, ``.jpg``, ...)."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"{path}: unknown image suffix {path.suffix!r} (use .png or .jpg)")
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    atomic_write_bytes(path, buffer.getvalue())
    return path
