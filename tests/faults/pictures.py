"""Picture files as users bring them, for the fault and fuzz tests, and the pixels they must decode to.

Each builder returns encoded bytes and the expected upright 8-bit RGB picture as a numpy array, computed here with plain
numpy from the values written, independently of ``rexthinker_rl.data.images`` (so a test compares two different routes):
16-bit values scaled by 255/65535 and rounded, transparency composited on white, EXIF orientation applied as the EXIF
specification defines it.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

WHITE = 255.0

# EXIF orientation -> the numpy operation that turns the stored array upright (EXIF 2.32, tag 274).
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: np.swapaxes(a, 0, 1),  # transposed
    6: lambda a: np.rot90(a, k=-1),  # stored turned 90 degrees counter-clockwise: turn it clockwise
    7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),  # transverse (row 0 is the right side, column 0 the bottom)
    8: lambda a: np.rot90(a, k=1),  # stored turned clockwise: turn it counter-clockwise
}


def upright(array: np.ndarray, orientation: int) -> np.ndarray:
    return np.ascontiguousarray(UPRIGHT[orientation](array))


def quadrants(width: int, height: int) -> np.ndarray:
    """An RGB picture whose four quadrants have four different colours: any turn or mirror changes it."""
    picture = np.zeros((height, width, 3), np.uint8)
    colours = [(220, 30, 30), (30, 200, 40), (30, 60, 220), (240, 220, 30)]
    half_h, half_w = height // 2, width // 2
    picture[:half_h, :half_w], picture[:half_h, half_w:] = colours[0], colours[1]
    picture[half_h:, :half_w], picture[half_h:, half_w:] = colours[2], colours[3]
    return picture


def save(image: Image.Image, image_format: str, orientation: int = 1, **options) -> bytes:
    """Encoded bytes, with an EXIF orientation tag when ``orientation`` != 1."""
    buffer = io.BytesIO()
    if orientation != 1:
        exif = Image.Exif()
        exif[274] = orientation
        options["exif"] = exif
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _png(width: int, height: int, colour_type: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_16bit(array: np.ndarray) -> bytes:
    """A 16-bit PNG (grey for 2-D, RGB for 3-D ``uint16`` arrays), written by hand: PIL cannot write 16-bit RGB."""
    height, width = array.shape[:2]
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))
    return _png(width, height, 2 if array.ndim == 3 else 0, rows)


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG header claiming ``width x height`` 16-bit grey pixels, with one row of data: cheap to make
    however large it claims to be."""
    return _png(width, height, 0, b"\x00" + bytes(2 * min(width, 64)))


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)


def composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Straight alpha over a white background, rounded like PIL's alpha_composite (within 1 level)."""
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb.astype(np.float64) * a + WHITE * (1 - a)).astype(np.uint8)


def scaled_16bit(values: np.ndarray) -> np.ndarray:
    """0-65535 -> 0-255, rounded: what a 16-bit picture must look like in 8 bits (not clipped to 255)."""
    return np.rint(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)


@functools.cache
def writable_formats(width: int = 32, height: int = 24) -> dict[str, bytes]:
    """A ``width x height`` picture in every format PIL can write here (``Image.SAVE``), each in the first mode the
    format takes (RGB, else grey, 1-bit, palette, float): the files a user may bring, whatever PIL can read back."""
    Image.init()
    rgb = Image.fromarray(quadrants(width, height))
    files = {}
    for image_format in sorted(Image.SAVE):
        for mode in ("RGB", "L", "1", "P", "F"):
            buffer = io.BytesIO()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # formats PIL deprecates still write (IM)
                    (rgb if mode == "RGB" else rgb.convert(mode)).save(buffer, format=image_format)
            except Exception:  # noqa: BLE001 - a format that cannot write this mode (or needs a missing library)
                continue
            files[image_format] = buffer.getvalue()
            break
    return files
