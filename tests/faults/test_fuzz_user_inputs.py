"""Fuzz tier for what users bring: pictures and interchange records of every shape, through convert -> validate ->
training. Each input ends as a correct row or as one line naming it: never a crash, a hang, or a silent change of
pixels.

- Pictures (hypothesis): PIL mode (RGB, RGBA, L, LA, palette with and without a transparent colour, 16-bit, 32-bit,
  float, CMYK, 1-bit), file format (PNG, TIFF, lossless WebP, BMP, GIF, JPEG), size, EXIF orientation and truncation.
  A converted row's embedded picture, decoded the way training decodes it, must equal the picture computed with numpy
  from the values written (``tests/faults/pictures.py``): upright, 16-bit scaled, alpha on white. Lossy JPEG is
  checked for shape only. Values no 8-bit picture can hold (float outside 0-1, 32-bit outside 0-65535) must be
  refused, never clipped; 32-bit values up to 255 are 8-bit values, kept.
- Corrupt headers (hypothesis): a picture in every format PIL can write here, one of its first 64 bytes changed; a row
  or one line, the file's bytes never quoted back, through convert, validate and the training scan.
- Interchange records (hypothesis): any JSON value and records with plausible and absurd fields, the tokenizer's
  special tokens and reasoning markup in their text fields among them; an accepted row holds none, its ids are unique
  and ``cot``'s target for it parses.
- Every accepted row goes into one parquet set that ``validate`` passes and one shared SFT step trains on (one step for
  the whole tier, not one per example, to keep CI cost small).
"""

from __future__ import annotations

import io
import json
import signal
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from rexthinker_rl.model.tiny import QWEN_EXTRA_TOKENS, QWEN_SPECIAL_TOKENS
from tests.faults import pictures

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),  # no shrinking: a failure is reported as found
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
BOUNDS = (3136, 12544)  # 56x56 .. 112x112: the tiny model's frames, any aspect
FORMATS = {
    "PNG": ("RGB", "RGBA", "L", "LA", "P", "P+t", "I;16", "1"),
    "TIFF": ("RGB", "RGBA", "L", "LA", "I;16", "I", "F", "CMYK", "1"),
    "WEBP": ("RGB", "RGBA"),
    "BMP": ("RGB", "L"),
    "GIF": ("P",),
    "JPEG": ("RGB", "L", "CMYK"),
}
EXIF_FORMATS = ("PNG", "TIFF", "WEBP", "JPEG")
PALETTE = [(0, 0, 0), (250, 10, 10), (10, 250, 10), (10, 10, 250)]
ACCEPTED: list[dict] = []  # rows the picture fuzzing accepted, for the shared training step at the end


@contextmanager
def time_limit(seconds: int):
    """A hang fails the example instead of stalling the suite."""

    def expire(*_):
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -------------------------------------------------------------------------------------------------------- pictures
PAIRS = [(image_format, mode) for image_format, modes in sorted(FORMATS.items()) for mode in modes]


def every_pair(test):
    """Explicit examples: every (format, mode) pair once, upright-tagged where the format carries EXIF, then the
    random ones."""
    for index, (image_format, mode) in enumerate(PAIRS):
        orientation = 6 if image_format in EXIF_FORMATS else 1
        test = example(picture=(image_format, mode, 40, 30, orientation, False, None, index))(test)
    return test


@st.composite
def user_pictures(draw):
    image_format, mode = draw(st.sampled_from(PAIRS))
    width, height = draw(st.integers(1, 160)), draw(st.integers(1, 160))
    orientation = draw(st.integers(1, 8)) if image_format in EXIF_FORMATS else 1
    wild = draw(st.booleans())  # 32-bit / float values outside what 8 bits can show
    cut = draw(st.one_of(st.none(), st.floats(0.05, 0.98)))
    return image_format, mode, width, height, orientation, wild, cut, draw(st.integers(0, 2**31))


def _make(mode: str, width: int, height: int, wild: bool, rng) -> tuple[Image.Image, np.ndarray | None]:
    """The picture in ``mode`` and the 8-bit RGB it must decode to (None: it must be refused)."""
    shape = (height, width)
    if mode in ("RGB", "RGBA", "LA", "L"):
        values = rng.integers(0, 256, (*shape, {"RGB": 3, "RGBA": 4, "LA": 2, "L": 1}[mode]), dtype=np.uint8)
        image = Image.fromarray(values[..., 0] if mode == "L" else values)
        colour = pictures.grey_to_rgb(values[..., 0]) if mode in ("L", "LA") else values[..., :3]
        return image, pictures.composite_on_white(colour, values[..., -1]) if mode in ("RGBA", "LA") else colour
    if mode in ("P", "P+t"):
        indices = rng.integers(0, len(PALETTE), shape, dtype=np.uint8)
        image = Image.fromarray(indices, mode="P")
        image.putpalette([v for colour in PALETTE for v in colour])
        expected = np.array(PALETTE, np.uint8)[indices]
        if mode == "P+t":
            image.info["transparency"] = 0
            expected[indices == 0] = 255
        return image, expected
    if mode == "I;16":
        values = rng.integers(0, 65536, shape, dtype=np.uint16)
        return Image.fromarray(values), pictures.grey_to_rgb(pictures.scaled_16bit(values))
    if mode == "I":
        top = rng.choice([256, 65536])  # 8-bit values in a 32-bit picture, or 16-bit ones
        values = rng.integers(0, 70000 if wild else top, shape, dtype=np.int32)
        if values.max() > 65535:
            return Image.fromarray(values), None
        # The range decides: values up to 255 are 8-bit values kept as they are, others are scaled as 16-bit.
        grey = values.astype(np.uint8) if values.max() <= 255 else pictures.scaled_16bit(values)
        return Image.fromarray(values), pictures.grey_to_rgb(grey)
    if mode == "F":
        values = rng.uniform(-0.5 if wild else 0.0, 1.5 if wild else 1.0, shape).astype(np.float32)
        ok = values.min() >= 0 and values.max() <= 1
        return Image.fromarray(values), pictures.grey_to_rgb(
            np.rint(values.astype(np.float64) * 255).astype(np.uint8)
        ) if ok else None
    if mode == "CMYK":
        values = rng.integers(0, 256, (*shape, 4), dtype=np.uint8)
        image = Image.frombytes("CMYK", (width, height), values.tobytes())
        return image, np.rint((255.0 - values[..., :3]) * (255.0 - values[..., 3:]) / 255.0).astype(np.uint8)
    bits = rng.integers(0, 2, shape).astype(bool)  # "1"
    return Image.fromarray(bits), pictures.grey_to_rgb(np.where(bits, 255, 0).astype(np.uint8))


def _encode(image: Image.Image, image_format: str, mode: str, orientation: int) -> bytes:
    options = {"lossless": True} if image_format == "WEBP" else {}
    if mode == "P+t":
        options["transparency"] = 0
    return pictures.save(image, image_format, orientation, **options)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(user_pictures())
@every_pair
def test_every_picture_ends_as_a_correct_row_or_one_line(fuzz_root, picture):
    from data_tools.convert import ConvertOptions, convert_record
    from data_tools.validate import check_row
    from rexthinker_rl.config import DataConfig
    from rexthinker_rl.data.dataset import decode_image

    image_format, mode, width, height, orientation, wild, cut, seed = picture
    image, expected = _make(mode, width, height, wild, np.random.default_rng(seed))
    data = _encode(image, image_format, mode, orientation)
    written = Image.open(io.BytesIO(data))  # the tag as the file holds it, read without decoding pixels
    tag = written.getexif().get(274, 1) if image_format in EXIF_FORMATS else 1
    if cut is not None:
        data = data[: max(1, int(len(data) * cut))]
    folder = fuzz_root / f"{len(list(fuzz_root.iterdir())):05d}"
    folder.mkdir()
    name = f"photo.{image_format.lower()}"
    (folder / name).write_bytes(data)
    up = pictures.upright(expected, tag) if expected is not None else None
    shape = up.shape[:2] if up is not None else pictures.upright(np.zeros((height, width)), tag).shape
    box = [0, 0, max(1, shape[1] // 2), max(1, shape[0] // 2)]
    raw = {
        "image_name": name,
        "referring": "the top-left part",
        "category": "part",
        "answer_boxes": [box],
        "candidate_boxes": [box],
    }
    options = ConvertOptions(image_root=str(folder), min_pixels=BOUNDS[0], max_pixels=BOUNDS[1])
    with time_limit(30), warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing raw from PIL reaches the user either
        row = convert_record(raw, 0, options)
    error = row["error"]
    event(f"picture: {'refused' if error else 'row'}")  # pytest --hypothesis-show-statistics shows the mix
    if error is not None:
        assert isinstance(error, str) and error.strip() and "\n" not in error and "Traceback" not in error, error
        clean = (
            cut is None
            and expected is not None
            and min(width, height) >= 8
            and max(width, height) <= 8 * min(width, height)
        )
        assert not clean, f"a good picture was refused: {error}"  # the tier would be vacuous otherwise
        return
    assert expected is not None, f"{mode} values no 8-bit picture can hold were converted, not refused"
    decoded = np.asarray(decode_image(row["images"][0]["bytes"], "row"))  # training's decode of the embedded bytes
    assert decoded.shape == up.shape, (decoded.shape, up.shape)
    if image_format != "JPEG":
        tolerance = 1 if mode in ("RGBA", "LA", "CMYK") else 0
        assert np.abs(decoded.astype(int) - up.astype(int)).max() <= tolerance, "the pixels changed silently"
    cfg = DataConfig(min_pixels=BOUNDS[0], max_pixels=BOUNDS[1])
    assert check_row(row, "row", folder, cfg) == []
    ACCEPTED.append(row)


# ------------------------------------------------------------------------------------- corrupted headers, any format
HEADER_BYTES = 64  # where a format keeps its size, mode, depth and layout


def every_format_corrupted(test):
    """Explicit examples: every format PIL can write here, with a byte of its header set to 0, 0xfc and a digit."""
    files = pictures.writable_formats()
    for image_format in sorted(files):
        size = min(HEADER_BYTES, len(files[image_format]))
        for position, value in ((3, 0xFC), (size // 2, 0), (size - 1, ord("9"))):
            test = example(image_format=image_format, position=position, value=value)(test)
    return test


@settings(FUZZ, max_examples=60)
@given(
    image_format=st.sampled_from(sorted(pictures.writable_formats())),
    position=st.integers(0, HEADER_BYTES - 1),
    value=st.integers(0, 255),
)
@every_format_corrupted
def test_a_corrupt_header_in_any_format_ends_as_a_row_or_one_line(fuzz_root, image_format, position, value):
    """PIL's readers raise what they like on a bad header (ValueError from int(), struct.error, NotImplementedError,
    ...): convert, validate's decode and the training scan each end in a correct row or one line naming the file,
    never a traceback, a hang or the file's bytes quoted back."""
    from data_tools.convert import ConvertOptions, convert_record
    from data_tools.validate import check_row
    from rexthinker_rl.config import DataConfig
    from rexthinker_rl.data.dataset import DataError, image_header_size

    data = bytearray(pictures.writable_formats()[image_format])
    data[min(position, len(data) - 1)] = value
    folder = fuzz_root / "headers"
    folder.mkdir(exist_ok=True)
    name = f"corrupt.{image_format.lower()}"
    (folder / name).write_bytes(bytes(data))
    raw = {"image_name": name, "referring": "the part", "category": "part", "answer_boxes": [[0, 0, 4, 4]]}
    options = ConvertOptions(image_root=str(folder), min_pixels=BOUNDS[0], max_pixels=BOUNDS[1])
    with time_limit(30), warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing raw from PIL reaches the user either
        row = convert_record(raw | {"candidate_boxes": [[0, 0, 4, 4]]}, 0, options)
        try:
            image_header_size(bytes(data), name)
        except DataError as error:
            assert str(error).startswith(f"{name}: ") and "\n" not in str(error), error
    event(f"corrupt {image_format}: {'refused' if row['error'] else 'row'}")
    if row["error"] is not None:
        assert "\n" not in row["error"] and "Traceback" not in row["error"], row["error"]
        assert "\\x" not in row["error"] and "b'" not in row["error"], row["error"]  # no file bytes quoted
        return
    assert check_row(row, "row", folder, DataConfig(min_pixels=BOUNDS[0], max_pixels=BOUNDS[1])) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stored file may be in a format PIL deprecates (IM)
        with Image.open(io.BytesIO(row["images"][0]["bytes"])) as stored:  # any reader sees the frame of the boxes
            assert stored.size == tuple(row["image_size"]), (stored.size, row["image_size"])


# ------------------------------------------------------------------------------------------------ interchange records
def _boxes():
    number = st.one_of(
        st.integers(-50, 300), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=3)
    )
    return st.one_of(st.lists(number, min_size=0, max_size=6), st.just([5, 5, 40, 30]), st.just([10, 8, 60, 50]))


# What a text field must never carry into a prompt or an answer: the tokenizer's special and added tokens, the markup
# answers are parsed by (in the spellings the parser accepts) and the image mark.
RESERVED = [*QWEN_SPECIAL_TOKENS, *QWEN_EXTRA_TOKENS, "<think>", "</think>", "< answer >", "</ answer>", "<image>"]
with_reserved = st.tuples(st.text(max_size=5), st.sampled_from(RESERVED), st.text(max_size=5)).map("".join)


def holds_reserved(text: str) -> bool:
    """Independent of rexthinker_rl.data.reserved: the answer parser's own tag grammar and the tokenizer's token list."""
    from rewards.parsing import _TAG

    return any(token in text for token in RESERVED) or _TAG.search(text) is not None


def _records():
    value = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=8,
    )
    candidate = st.one_of(
        _boxes(),
        st.fixed_dictionaries(
            {"bbox": _boxes()},
            optional={"category": st.sampled_from(["part", "", 3]) | with_reserved, "score": value, "sorce": value},
        ),
    )
    record = st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.none(), st.lists(st.integers())),
            "image_name": st.sampled_from(["p.png", "missing.png", "", "../p.png", "p.png/x", 7]),
            "referring": st.one_of(
                st.text(max_size=12), st.just("the part"), st.just("   "), st.none(), with_reserved
            ),
            "category": st.one_of(st.just("part"), st.text(max_size=5), st.integers(), with_reserved),
            "answer_boxes": st.one_of(st.lists(_boxes(), max_size=3), value),
            "ans": st.one_of(_boxes(), value),
            "candidate_boxes": st.one_of(st.lists(candidate, max_size=4), value),
            "catgory": value,
        },
    )
    good = {"image_name": "p.png", "referring": "the part", "category": "part", "answer_boxes": [[5, 5, 40, 30]]}
    good |= {"candidate_boxes": [[5, 5, 40, 30], {"bbox": [10, 8, 60, 50], "score": 0.5}]}
    # A good record with one field replaced, removed or added: most of the bad records users write are nearly right.
    mutated = st.tuples(
        st.sampled_from([*good, "id", "ans", "catgory"]), st.one_of(st.just(None), value, _boxes(), with_reserved)
    ).map(lambda change: {k: v for k, v in ({**good, change[0]: change[1]}).items() if v is not None or k == "id"})
    # The whole record moved: boxes consistent with each other, some reaching out of the 80x60 picture.
    moved = st.tuples(st.integers(-40, 60), st.integers(-40, 60)).map(lambda shift: _moved(good, *shift))
    return st.one_of(st.just(good), mutated, moved, record, value)


def _moved(record: dict, dx: int, dy: int) -> dict:
    def move(box):
        return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]

    candidates = [
        {**c, "bbox": move(c["bbox"])} if isinstance(c, dict) else move(c) for c in record["candidate_boxes"]
    ]
    return {**record, "answer_boxes": [move(box) for box in record["answer_boxes"]], "candidate_boxes": candidates}


GOOD_RECORD = {"image_name": "p.png", "referring": "the part", "category": "part", "answer_boxes": [[5, 5, 40, 30]]}
GOOD_RECORD |= {"candidate_boxes": [[5, 5, 40, 30]]}


@settings(FUZZ, max_examples=150)
@given(st.lists(_records(), min_size=1, max_size=3))
@example([GOOD_RECORD | {"id": "fuzz-000001"}, GOOD_RECORD])  # an automatic id that is a user's
@example([GOOD_RECORD | {"referring": "the red <|image_pad|> part"}, GOOD_RECORD | {"category": "<|im_end|>"}])
@example([GOOD_RECORD | {"referring": "</think><answer>[]</answer>"}, GOOD_RECORD | {"referring": "the <image>"}])
def test_every_record_ends_as_a_correct_row_or_one_line(fuzz_root, raws):
    from data_tools.convert import ConvertOptions, convert_record
    from data_tools.cot import _row_target
    from data_tools.interchange import assign_ids, duplicate_ids
    from data_tools.validate import check_row
    from rewards.parsing import parse_completion
    from rexthinker_rl.config import DataConfig
    from rexthinker_rl.data.dataset import boxes_to_resized

    folder = fuzz_root / "records"
    if not (folder / "p.png").is_file():
        folder.mkdir(exist_ok=True)
        Image.fromarray(pictures.quadrants(80, 60)).save(folder / "p.png")
    options = ConvertOptions(image_root=str(folder), min_pixels=BOUNDS[0], max_pixels=BOUNDS[1])
    with time_limit(30):
        duplicates = duplicate_ids(raws)
        ids, _ = assign_ids(raws, "fuzz")
        rows = [convert_record(raw, index, options, ids[index]) for index, raw in enumerate(raws)]
    assert all(isinstance(reason, str) and "\n" not in reason for _, reason in duplicates)
    repeated = {index for index, _ in duplicates}
    kept_ids = [row["id"] for index, row in enumerate(rows) if row["error"] is None and index not in repeated]
    assert len(set(kept_ids)) == len(kept_ids), kept_ids  # every file we write has unique ids
    for raw, row in zip(raws, rows, strict=True):
        event(f"record: {'refused' if row['error'] else 'row'}")
        if row["error"] is not None:
            assert row["error"].strip() and "\n" not in row["error"], row["error"]
            continue
        assert check_row(row, "row", folder, DataConfig(min_pixels=BOUNDS[0], max_pixels=BOUNDS[1])) == []
        texts = [row[key] for key in ("problem", "answer", "referring", "category", "hints")]
        assert not any(holds_reserved(text) for text in texts), texts  # nothing the model would read as markup
        assert parse_completion(_row_target(row, "row")).structure_error is None  # cot's target parses
        # The answer is the record's, in the resized frame: no box was clipped, dropped or made up on the way.
        answers = raw["answer_boxes"] if "answer_boxes" in raw else raw["ans"]
        answers = [answers] if answers and not isinstance(answers[0], list) else answers
        assert all(0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60 for x0, y0, x1, y1 in answers), answers
        converted = boxes_to_resized(answers, (80, 60), row["resized_size"])
        assert sorted(json.loads(row["answer_boxes"])) == sorted({tuple(box): box for box in converted}.values())


# ------------------------------------------------------------------------------------- one shared training step
def test_the_accepted_rows_validate_and_train(fuzz_root, tiny_model_dir):
    """Everything the picture fuzzing accepted, as one set: ``validate`` passes it, ``cot`` writes its targets, and
    one SFT step (the whole set in one batch) trains on it."""
    from safetensors.torch import load_file

    from data_tools.cli import main as data_main
    from data_tools.synthetic import FEATURES, write_parquet
    from rexthinker_rl.config import load_config
    from rexthinker_rl.train.sft import run_sft
    from tests.conftest import TINY_OVERRIDES

    if not ACCEPTED:
        pytest.skip("needs test_every_picture_ends_as_a_correct_row_or_one_line (this module) to run first")
    rows = [{key: row[key] for key in FEATURES} | {"id": f"fuzz-{i}"} for i, row in enumerate(ACCEPTED)]
    path = fuzz_root / "accepted.parquet"
    write_parquet(rows, path)
    low, high = (str(bound) for bound in BOUNDS)
    assert data_main(["validate", str(path), "--min-pixels", low, "--max-pixels", high]) == 0
    assert data_main(["cot", str(path), "--out", str(fuzz_root / "accepted_cot.parquet")]) == 0
    overrides = [
        *TINY_OVERRIDES,
        f"model.path={tiny_model_dir}",
        f"data.train_files={fuzz_root / 'accepted_cot.parquet'}",
        f"data.min_pixels={low}",
        f"data.max_pixels={high}",
        "sft.epochs=1",
        f"sft.batch_size={len(rows)}",
        "sft.lr=1e-3",
        f"sft.output_dir={fuzz_root / 'sft'}",
    ]
    trained = load_file(run_sft(load_config(None, overrides)) / "model.safetensors")
    before = load_file(tiny_model_dir / "model.safetensors")
    assert any(not np.array_equal(trained[k].numpy(), before[k].numpy()) for k in before if k in trained)
