"""Image decoding, the one way every path reads a picture: training rows, convert, validate, inference, demo, eval.

Every PIL mode becomes correct 8-bit RGB, or fails with one line naming the image:

- 16-bit grey (``I;16*``: a 16-bit PNG or TIFF) is scaled from 0-65535 to 0-255, not clipped (PIL's own conversion
  clips it, which turns a 16-bit photo white);
- 32-bit integer grey (``I``: a 32-bit TIFF, a 16-bit PGM) says nothing about its range, so the values decide: at most
  255, they are 8-bit values kept as they are (scaling them as 16-bit would make the picture nearly black); at most
  65535, scaled like 16-bit; negative or larger, refused;
- floating-point grey (``F``) is read as 0-1 and scaled to 0-255; values outside 0-1 are refused;
- transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour, ...) is composited on white, as Qwen's
  processor does; ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``1``, ``L``, ``P`` go through PIL's conversion;
- EXIF orientation (tag 274) is applied by default, so pixels, sizes and boxes are in the frame photo viewers and
  annotation tools show; ``apply_exif=False`` keeps the stored frame (``data.apply_exif_orientation=false``).

:class:`Decoded` says what was changed (the source mode, the scaling, the orientation applied), so callers can count it
and store the decoded picture where anything changed (:func:`stored_bytes`). Pictures over PIL's decompression-bomb
limit are refused with one line instead of PIL's warning or error, and so is a file whose header or data PIL cannot
parse, whatever the exception its format's reader raises; the file's bytes are never quoted back.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from rexthinker_rl.errors import DataError

ORIENTATION_TAG = 274
# EXIF orientation -> the transpose that shows the stored pixels upright (as ImageOps.exif_transpose does).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
STORED = UPRIGHT | {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}  # the inverse turns
# PIL's TIFF reader reports a TIFF's size upright and turns its pixels while loading them (Pillow 13); the others
# leave both as stored.
READERS_THAT_TURN = ("TIFF",)
BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white (as transformers' convert_to_rgb does)
# Pictures up to twice PIL's warning threshold (~179 megapixels) decode silently; larger ones are refused.
MAX_PIXELS = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_NATIVE = ("RGB", "L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")


class ImageDecodeError(DataError):
    """An image that cannot become 8-bit RGB; the message starts with where it came from."""


@dataclass
class Decoded:
    """A decoded picture: 8-bit RGB in the display frame, and what was changed to get there."""

    image: Image.Image
    source_mode: str  # the file's PIL mode ("RGB" when nothing was converted)
    orientation: int  # the EXIF orientation tag (1: none or upright)
    rotated: bool  # the orientation was applied (the pixels were turned or mirrored)
    scaling: str | None = None  # how grey values were mapped to 8 bits (None: no scaling decision was made)

    @property
    def changed(self) -> bool:
        """The pixels differ from what a plain reader shows for the file: a mode converted (which includes any
        scaling), or an orientation tag applied or dropped."""
        return self.source_mode != "RGB" or self.orientation != 1


# A reader's message may quote the file: a bytes literal (``invalid literal for int() with base 10: b'\\xfc4'``), or a
# text one holding escapes (``could not convert string to float: '\\x0064'``). Neither is shown back.
_FILE_QUOTE = re.compile(r"(?<!\w)b'(?:[^'\\]|\\.)*'" + r'|(?<!\w)b"(?:[^"\\]|\\.)*"' + r"|'[^'\\]*\\(?:[^'\\]|\\.)*'")


def describe_error(err: BaseException) -> str:
    """A reader's exception as one short line, its type named, without quoting the file's bytes."""
    text = " ".join(_FILE_QUOTE.sub("<bytes of the file>", str(err)).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """PIL's own warnings (decompression bomb, corrupt EXIF, ...) never reach the user raw: the outcome, a correct
    picture or one line naming it, is decided here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def open_image(payload: bytes | Path, where: str) -> Image.Image:
    """The image, header read, pixels not yet decoded."""
    source = io.BytesIO(payload) if isinstance(payload, bytes | bytearray) else payload
    try:
        with _quiet():
            image = Image.open(source)
    except Image.DecompressionBombError:
        raise ImageDecodeError(f"{where}: image is over {MAX_PIXELS:,} pixels; resize it first") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{where}: image does not decode (not an image file PIL can read)") from None
    except Exception as err:  # noqa: BLE001 - each format's reader raises its own types on a corrupt header
        raise ImageDecodeError(f"{where}: image does not decode ({describe_error(err)})") from None
    if image.width * image.height > MAX_PIXELS:
        raise ImageDecodeError(
            f"{where}: image is {image.width}x{image.height}, over {MAX_PIXELS:,} pixels; resize it"
        )
    return image


def orientation_of(image: Image.Image) -> int:
    """The EXIF orientation tag (1-8), 1 when absent or malformed."""
    try:
        with _quiet():
            value = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block is treated as "no orientation", as viewers do
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def header_size(payload: bytes | Path, where: str, apply_exif: bool = True) -> tuple[int, int]:
    """``(w, h)`` from the header without decoding pixels; in the display frame when ``apply_exif``."""
    with open_image(payload, where) as image:
        width, height = image.size
        quarter_turn = orientation_of(image) in (5, 6, 7, 8)  # a quarter turn (or transpose) swaps the sides
        if quarter_turn and apply_exif != (image.format in READERS_THAT_TURN):
            return height, width
        return width, height


def _grey_scale(mode: str, values: np.ndarray, where: str) -> tuple[float, str]:
    """``(highest value, how it was scaled)`` of a grey picture of 16/32-bit integers or floats (see the module
    docstring); ImageDecodeError for values no 8-bit picture can show."""
    low, high = float(values.min()), float(values.max())
    if mode == "F":
        top, how = 1.0, "F 0-1 scaled to 0-255"
    elif mode == "I" and low >= 0 and high <= 255:
        top, how = 255.0, "I values 0-255 kept as 8-bit"
    elif mode == "I":
        top, how = 65535.0, "I values 0-65535 scaled to 0-255"
    else:
        top, how = 65535.0, f"{mode} 0-65535 scaled to 0-255"
    if low < 0 or high > top:
        raise ImageDecodeError(
            f"{where}: {mode} image with values {low:g}..{high:g}, outside 0..{top:g}; convert it to 8-bit first"
        )
    return top, how


def to_rgb8(image: Image.Image, where: str) -> tuple[Image.Image, str | None]:
    """Any PIL mode -> ``(8-bit RGB, how grey values were scaled or None)``: scaled (never clipped), transparency on
    white; ImageDecodeError otherwise."""
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top, how = _grey_scale(mode, values, where) if values.size else (255.0, None)
        grey = np.rint(values * (255.0 / top)).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB"), how
    try:
        if mode in _NATIVE and "transparency" not in image.info:
            return image.convert("RGB"), None
        rgba = image.convert("RGBA")
    except ValueError as err:
        raise ImageDecodeError(f"{where}: image mode {mode} cannot be converted to RGB ({err})") from None
    background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB"), None


def decode(payload: bytes | Path | Image.Image, where: str, apply_exif: bool = True) -> Decoded:
    """The fully decoded picture (see the module docstring); ImageDecodeError with ``where`` when it cannot be."""
    image = payload if isinstance(payload, Image.Image) else open_image(payload, where)
    orientation = orientation_of(image)  # read before the pixels (see below)
    try:
        with _quiet():
            image.load()
            turned_by_pil = orientation != 1 and image.format in READERS_THAT_TURN
            source_mode = image.mode
            if apply_exif and orientation != 1 and not turned_by_pil:
                image = image.transpose(UPRIGHT[orientation])
            elif not apply_exif and turned_by_pil:
                image = image.transpose(STORED[orientation])  # back to the frame the pixels are stored in
            rgb, scaling = to_rgb8(image, where)
    except ImageDecodeError:
        raise
    except Exception as err:  # noqa: BLE001 - each format's decoder raises its own types on corrupt data
        raise ImageDecodeError(f"{where}: image does not decode ({describe_error(err)})") from None
    return Decoded(rgb, source_mode, orientation, apply_exif and orientation != 1, scaling)


def stored_bytes(original: bytes, decoded: Decoded) -> tuple[bytes, bool]:
    """``(bytes to store in a dataset, re-encoded)``: the original bytes when decoding changed nothing, else the
    decoded picture as PNG (lossless, no orientation tag), so that any reader sees the frame our boxes are in."""
    if not decoded.changed:
        return original, False
    buffer = io.BytesIO()
    decoded.image.save(buffer, format="PNG")
    return buffer.getvalue(), True


def decode_image(payload: bytes | Path | Image.Image, where: str, apply_exif: bool = True) -> Image.Image:
    """:func:`decode`'s 8-bit RGB picture alone."""
    return decode(payload, where, apply_exif).image
