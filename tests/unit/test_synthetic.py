"""data_tools.synthetic: the coloured-shapes referring set is deterministic, valid and means what it says."""

from __future__ import annotations

import inspect
import io
import json
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest
from PIL import Image

from data_tools import synthetic
from data_tools.cli import SYNTH_CHOICES, main
from data_tools.synthetic import COLOURS, HINT_PREFIX, background_image, make_synthetic_dataset
from data_tools.validate import parse_answer_boxes, validate_file
from rexthinker_rl.data.dataset import REJECTION_TEXT, boxes_to_original, hints_from_problem

COLUMNS = [
    "id",
    "images",
    "problem",
    "answer",
    "image_size",
    "resized_size",
    "hints",
    "referring",
    "category",
    "sft_target",
    "answer_boxes",
]


@pytest.fixture(scope="module")
def rows(synthetic_data_dir):
    return pq.read_table(synthetic_data_dir / "train.parquet").to_pylist()


def _image(row) -> Image.Image:
    return Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB")


def _colour_at_centre(image: Image.Image, box) -> str | None:
    pixel = image.getpixel((int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2 + 2)))  # +2: inside a triangle
    return next((name for name, rgb in COLOURS.items() if rgb == pixel), None)


def test_same_arguments_give_same_bytes(tmp_path):
    first = make_synthetic_dataset(tmp_path / "a", num_train=20, num_val=5, seed=7)
    second = make_synthetic_dataset(tmp_path / "b", num_train=20, num_val=5, seed=7)
    other = make_synthetic_dataset(tmp_path / "c", num_train=20, num_val=5, seed=8)
    for split in ("train", "val"):
        assert first[split].read_bytes() == second[split].read_bytes()
        assert first[split].read_bytes() != other[split].read_bytes()
    assert not list((tmp_path / "a").glob(".*tmp"))  # no temp files left behind


def test_layout_and_schema(rows, synthetic_data_dir):
    table = pq.read_table(synthetic_data_dir / "train.parquet")
    assert table.column_names == COLUMNS
    assert b"huggingface" in table.schema.metadata  # `datasets` loads `images` as Image features
    assert len(rows) == 64 and len({row["id"] for row in rows}) == 64
    for row in rows:
        assert len(row["images"]) == 1 and _image(row).size == (112, 112)
        assert row["image_size"] == [112, 112] and row["resized_size"] == [112, 112]
        assert row["problem"].startswith(HINT_PREFIX)
        assert row["problem"].endswith(f"\nPlease detect {row['referring']} in the image.")
        assert hints_from_problem(row["problem"]) == json.loads(row["hints"])
        assert list(json.loads(row["hints"])) == [row["category"]]


def test_answers_are_exactly_hint_boxes_and_match_the_picture(rows):
    kinds = set()
    for row in rows:
        hints = json.loads(row["hints"])[row["category"]]
        boxes = json.loads(row["answer_boxes"])
        assert parse_answer_boxes(row["answer"]) == boxes
        assert all(box in hints for box in boxes)
        assert 2 <= len(hints) <= 4
        image, referring = _image(row), row["referring"]
        colours = [_colour_at_centre(image, box) for box in hints]
        assert None not in colours, row["id"]
        words = referring.split()
        if words[1] in ("leftmost", "rightmost", "topmost", "bottommost"):
            kinds.add("position")
            axis = 0 if words[1] in ("leftmost", "rightmost") else 1
            centres = [box[axis] + box[axis + 2] for box in hints]
            pick = min if words[1] in ("leftmost", "topmost") else max
            assert boxes == [hints[centres.index(pick(centres))]]
        else:
            colour = words[1]
            named = [box for box, found in zip(hints, colours, strict=True) if found == colour]
            if words[0] == "all":
                kinds.add("multi")
                assert len(named) >= 2 and referring.endswith("s")
            else:
                kinds.add("rejection" if not named else "colour")
                assert len(named) <= 1
            assert boxes == named
            assert (row["answer"] == REJECTION_TEXT) == (not named)
    assert kinds == {"position", "colour", "multi", "rejection"}


def test_sft_target_follows_the_rex_thinker_shape(rows):
    pattern = re.compile(
        r"<think>Planning: check each of the (?P<count>\d) (?P<category>\w+) hints\. "
        r"Action: (?P<action>.+?) Summary: (?P<summary>none match|1 match|\d matches)\.</think>"
        r"<answer>(?P<answer>.+)</answer>\Z",
        re.DOTALL,
    )
    for row in rows:
        match = pattern.match(row["sft_target"])
        assert match, row["sft_target"]
        hints = json.loads(row["hints"])[row["category"]]
        assert match["category"] == row["category"]
        assert int(match["count"]) == len(hints)
        verdicts = re.findall(r"Box (\d) (\[[\d, ]+\]) \w+ \w+(?: at [xy] \d+)?: (yes|no)\.", match["action"])
        assert [int(number) for number, _, _ in verdicts] == list(range(1, len(hints) + 1))
        assert [json.loads(quoted) for _, quoted, _ in verdicts] == hints
        chosen = [hints[int(number) - 1] for number, _, verdict in verdicts if verdict == "yes"]
        assert chosen == json.loads(row["answer_boxes"])
        assert match["answer"] == row["answer"]


def test_fractions_roughly_respected(tmp_path):
    paths = make_synthetic_dataset(
        tmp_path, num_train=400, num_val=0, seed=1, rejection_fraction=0.5, multi_fraction=0.3
    )
    rows = pq.read_table(paths["train"], columns=["answer", "referring"]).to_pylist()
    rejections = sum(row["answer"] == REJECTION_TEXT for row in rows)
    multis = sum(row["referring"].startswith("all ") for row in rows)
    assert 160 <= rejections <= 240 and 80 <= multis <= 160
    assert pq.read_table(paths["val"]).num_rows == 0


def test_larger_images_get_hints_in_the_resized_frame(tmp_path):
    paths = make_synthetic_dataset(tmp_path, num_train=12, num_val=0, seed=2, image_size=200)
    report = validate_file(paths["train"], min_pixels=112 * 112, max_pixels=112 * 112)
    assert report.ok, [problem.line() for problem in report.problems]
    for row in pq.read_table(paths["train"]).to_pylist():
        assert row["image_size"] == [200, 200] and row["resized_size"] == [112, 112]
        image = _image(row)
        hints = json.loads(row["hints"])[row["category"]]
        # Back in the original frame, each hint still sits on a painted object.
        assert all(_colour_at_centre(image, box) for box in boxes_to_original(hints, (200, 200), (112, 112)))


def test_synthetic_set_passes_validate(synthetic_data_dir, capsys):
    for split in ("train", "val"):
        assert main(["validate", str(synthetic_data_dir / f"{split}.parquet")]) == 0
    assert "16 rows checked, all good" in capsys.readouterr().out


def test_synth_cli(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["synth", "--out", str(out), "--num-train", "6", "--num-val", "2", "--seed", "3"]) == 0
    assert pq.read_table(out / "train.parquet").num_rows == 6
    assert str(out / "val.parquet") in capsys.readouterr().out
    assert main(["synth", "--out", str(out), "--image-size", "20"]) == 2
    assert main(["synth", "--out", str(out), "--rejection-fraction", "0.9", "--multi-fraction", "0.5"]) == 2
    # min = max = 9000 shrinks 100x100 images to 84x84, which a processor with those bounds would enlarge again.
    assert (
        main(["synth", "--out", str(out), "--image-size", "100", "--min-pixels", "9000", "--max-pixels", "9000"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)


def test_hint_and_distractor_ranges(tmp_path):
    paths = make_synthetic_dataset(tmp_path / "one", num_train=60, num_val=0, seed=4, hints=(1, 1), distractors=(0, 0))
    rows = pq.read_table(paths["train"]).to_pylist()
    kinds = set()
    for row in rows:
        hints = json.loads(row["hints"])[row["category"]]
        assert len(hints) == 1
        # With one object of the category there is no "leftmost" or "all": colour or rejection rows only.
        words = set(row["referring"].split())
        kinds.add(
            "rejection"
            if row["answer"] == REJECTION_TEXT
            else "all"
            if "all" in words
            else "position"
            if words & {"leftmost", "rightmost", "topmost", "bottommost"}
            else "colour"
        )
        assert row["sft_target"].count("Box ") == 1
        # No distractors: every painted pixel lies inside the single hint box.
        image, box = _image(row), hints[0]
        painted = [
            (x, y)
            for x in range(0, image.width, 2)
            for y in range(0, image.height, 2)
            if image.getpixel((x, y)) != (128, 128, 128)
        ]
        assert painted and all(box[0] <= x < box[2] and box[1] <= y < box[3] for x, y in painted)
    assert kinds == {"colour", "rejection"}
    mixed = make_synthetic_dataset(tmp_path / "mixed", num_train=80, num_val=0, seed=4, hints=(1, 3))
    counts = {len(json.loads(r["hints"])[r["category"]]) for r in pq.read_table(mixed["train"]).to_pylist()}
    assert counts == {1, 2, 3}


@pytest.mark.parametrize(
    ("flag", "values"),
    [("--hints", ["0", "2"]), ("--hints", ["3", "2"]), ("--distractors", ["-1", "1"]), ("--hints", ["4", "5"])],
)
def test_synth_cli_rejects_bad_ranges(tmp_path, capsys, flag, values):
    assert main(["synth", "--out", str(tmp_path / "x"), flag, *values]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0 and ("--hints" in err or "--distractors" in err)
    assert not (tmp_path / "x").exists()


def test_cells_and_ramp_backgrounds_say_where_a_place_is(tmp_path):
    """``--background cells``: every image token's 28-pixel square has its own shade, red by column and blue by row,
    one shade per square; ``ramp`` the same shading pixel by pixel. The objects are drawn unchanged on top, and the
    plain background stays the one grey (the default's bytes do not change: test_same_arguments_give_same_bytes)."""
    cells = background_image("cells", 112, 28)
    shades = {}
    for x in range(112):
        for y in range(112):
            shades.setdefault((x // 28, y // 28), set()).add(cells.getpixel((x, y)))
    assert all(len(found) == 1 for found in shades.values())
    square = {place: found.pop() for place, found in shades.items()}
    assert len(set(square.values())) == 16
    assert [square[(c, 0)][0] for c in range(4)] == [96, 117, 139, 160]  # red rises with the column
    assert [square[(0, r)][2] for r in range(4)] == [96, 117, 139, 160]  # blue with the row
    assert {rgb[1] for rgb in square.values()} == {128}
    ramp = background_image("ramp", 112, 28)
    assert ramp.getpixel((0, 0)) == (96, 128, 96) and ramp.getpixel((111, 111)) == (160, 128, 160)
    assert len({ramp.getpixel((x, 0))[0] for x in range(112)}) == 65  # 96..160, every shade used
    assert background_image("plain", 112, 28).getcolors() == [(112 * 112, (128, 128, 128))]
    with pytest.raises(ValueError, match="--background 'dots': use one of plain, cells, ramp, frames"):
        background_image("dots", 112, 28)

    paths = make_synthetic_dataset(tmp_path / "cells", num_train=12, num_val=0, seed=5, background="cells")
    for row in pq.read_table(paths["train"]).to_pylist():
        image = _image(row)
        for box in json.loads(row["hints"])[row["category"]]:
            assert _colour_at_centre(image, box) is not None  # the objects keep their colours
        background = {colour for _, colour in image.getcolors(4096)} - {rgb for rgb in COLOURS.values()}
        assert background <= set(square.values())  # no other colour: no grey, and shapes are not blended


def test_frames_background_codes_every_square_over_the_objects(tmp_path):
    """``--background frames``: a frame around each image token's 28-pixel square in its own code, red 0/85/170/255 by
    column and blue by row, painted over the objects too (every token shows its code), the square's inside grey or the
    object; with ``--verdict-cue cell+asked`` each hint's line names the box's square and what the expression asks."""
    frames = background_image("frames", 112, 28)
    assert frames.mode == "RGBA"
    for column in range(4):
        for row in range(4):
            x, y = 28 * column, 28 * row
            assert frames.getpixel((x + 1, y + 14)) == (85 * column, 128, 85 * row, 255)  # the frame's left side
            assert frames.getpixel((x + 14, y + 26)) == (85 * column, 128, 85 * row, 255)  # its bottom
            assert frames.getpixel((x + 14, y + 14)) == (128, 128, 128, 0)  # inside: grey, transparent
    two = background_image("frames", 56, 28)  # two squares a side keep the first two codes (the 56 px sets measured)
    assert [two.getpixel((28 * column + 1, 14))[0] for column in range(2)] == [0, 85]
    assert sorted({background_image("frames", 224, 28).getpixel((28 * c + 1, 14))[0] for c in range(8)})[-1] == 255
    paths = make_synthetic_dataset(
        tmp_path / "frames",
        num_train=30,
        num_val=0,
        seed=7,
        hints=(2, 2),
        distractors=(0, 0),
        layout="grid",
        background="frames",
        verdict_cue="cell+asked",
    )
    line = re.compile(r"Box (\d) (\[[^\]]*\]) cell (\d) (\d) (\w+) \w+, asked (\w+)[^:]*: (yes|no)\.")
    for row in pq.read_table(paths["train"]).to_pylist():
        image, hints = _image(row), json.loads(row["hints"])[row["category"]]
        lines = line.findall(row["sft_target"])
        assert len(lines) == 2, row["sft_target"]
        for number, box, column, down, colour, asked, _ in lines:
            box = json.loads(box)
            assert box == hints[int(number) - 1] and asked == row["referring"].split()[1]
            assert (int(column), int(down)) == ((box[0] + box[2]) // 56, (box[1] + box[3]) // 56)
            assert _colour_at_centre(image, box) == colour  # the object shows inside its frame
            assert (
                image.getpixel((28 * int(column), 28 * int(down) + 14))
                == frames.getpixel((28 * int(column), 28 * int(down) + 14))[:3]
            )  # the frame is painted over whatever lies under it


def test_pair_verdict_cue_puts_the_colour_read_next_to_the_colour_asked(tmp_path):
    """``--verdict-cue cell+pair``: each hint's line is "Box N [..] cell C R <colour seen> <asked> <verdict>.", the
    verdict right after the two words it compares (a position row keeps its cue and colon: "leftmost at x 45: no.");
    the colour is the object's in the picture, the asked word the expression's colour or side, and on colour rows the
    verdict is yes exactly where the two are equal."""
    paths = make_synthetic_dataset(
        tmp_path / "pair", num_train=60, num_val=0, seed=5, hints=(1, 2), distractors=(0, 0), verdict_cue="cell+pair"
    )
    line = re.compile(r"Box (\d) (\[[^\]]*\]) cell \d \d (\w+) (\w+)( at [xy] \d+:)? (yes|no)\.")
    compared = 0
    for row in pq.read_table(paths["train"]).to_pylist():
        image, lines = _image(row), line.findall(row["sft_target"])
        assert lines and len(lines) == len(json.loads(row["hints"])[row["category"]]), row["sft_target"]
        for _, box, colour, asked, where, verdict in lines:
            assert asked == row["referring"].split()[1] and bool(where) == (asked not in COLOURS)
            assert _colour_at_centre(image, json.loads(box)) == colour
            if asked in COLOURS:
                compared += 1
                assert (verdict == "yes") == (colour == asked), row["sft_target"]
    assert compared >= 40


def test_square_verdict_cue_numbers_the_square_row_by_row(tmp_path):
    """``--verdict-cue square+pair``: the image-token square the box's centre lies in, as one number (row x columns +
    column, in the resized frame: 112 pixels here, 4 x 4 squares of 28), where ``cell+pair`` writes column and row;
    the rest of the line is ``cell+pair``'s, word for word."""
    options = {"num_train": 40, "num_val": 0, "seed": 7, "hints": (1, 2), "distractors": (0, 0), "layout": "grid"}
    square = make_synthetic_dataset(tmp_path / "square", verdict_cue="square+pair", **options)["train"]
    cell = make_synthetic_dataset(tmp_path / "cell", verdict_cue="cell+pair", **options)["train"]
    line = re.compile(r"Box \d (\[[^\]]*\]) cell (\d+) ")
    numbers = set()
    for row, twin in zip(pq.read_table(square).to_pylist(), pq.read_table(cell).to_pylist(), strict=True):
        lines = line.findall(row["sft_target"])
        assert lines and len(lines) == len(json.loads(row["hints"])[row["category"]]), row["sft_target"]
        for box, number in lines:
            x0, y0, x1, y1 = json.loads(box)
            column, place_row = int((x0 + x1) / 2 // 28), int((y0 + y1) / 2 // 28)
            assert int(number) == place_row * 4 + column, row["sft_target"]
            numbers.add(int(number))
            twin["sft_target"] = twin["sft_target"].replace(
                f"{box} cell {column} {place_row} ", f"{box} cell {number} "
            )
        assert row["sft_target"] == twin["sft_target"]
    assert len(numbers) >= 8 and max(numbers) >= 8  # squares of the lower rows, whose number is not the column


def test_echo_verdict_cue_quotes_the_box_again_after_yes_only(tmp_path):
    """``--verdict-cue square+pair+echo``: a line that says yes ends with its own box again ("... green green yes
    [..]."), a line that says no does not, the answer's boxes are exactly the echoed ones, and without the echo the
    line is ``square+pair``'s, word for word."""
    options = {"num_train": 60, "num_val": 0, "seed": 9, "hints": (1, 3), "multi_fraction": 0.3, "layout": "grid"}
    echo = make_synthetic_dataset(tmp_path / "echo", verdict_cue="square+pair+echo", **options)["train"]
    square = make_synthetic_dataset(tmp_path / "square", verdict_cue="square+pair", **options)["train"]
    line = re.compile(r"Box \d (\[[^\]]*\]) [^.]*? (yes|no)(?: (\[[^\]]*\]))?\.")
    verdicts = Counter()
    for row, twin in zip(pq.read_table(echo).to_pylist(), pq.read_table(square).to_pylist(), strict=True):
        echoed = []
        for box, verdict, again in line.findall(row["sft_target"]):
            verdicts[verdict] += 1
            assert (again == box) if verdict == "yes" else not again, row["sft_target"]
            echoed += [json.loads(again)] if again else []
        assert sorted(echoed) == sorted(json.loads(row["answer_boxes"])), row["sft_target"]
        assert re.sub(r"(yes) \[[^\]]*\]\.", r"\1.", row["sft_target"]) == twin["sft_target"]
    assert verdicts["yes"] >= 30 and verdicts["no"] >= 30


def test_boxes_summary_cue_names_the_lines_that_say_yes_and_the_answer_copies_their_boxes(tmp_path):
    """``--summary-cue boxes``: "Summary: 2 matches, Box 1, Box 3." names, in order, exactly the hints whose line says
    yes, and the answer's boxes are those lines' boxes; with no match the summary is ``count``'s ("none match.")."""
    options = {"num_train": 80, "num_val": 0, "seed": 8, "hints": (1, 3), "multi_fraction": 0.3}
    rows = pq.read_table(make_synthetic_dataset(tmp_path / "b", summary_cue="boxes", **options)["train"]).to_pylist()
    counted = pq.read_table(make_synthetic_dataset(tmp_path / "c", **options)["train"]).to_pylist()
    kinds = Counter()
    for row, twin in zip(rows, counted, strict=True):
        lines = re.findall(r"Box (\d) (\[[^\]]*\])[^.]*: (yes|no)\.", row["sft_target"])
        said = [number for number, _, verdict in lines if verdict == "yes"]
        summary = re.search(r"Summary: (none match|1 match|\d matches)((?:, Box \d)*)\.<", row["sft_target"])
        assert summary and summary.group(2) == "".join(f", Box {number}" for number in said), row["sft_target"]
        assert json.loads(row["answer_boxes"]) == [json.loads(box) for number, box, _ in lines if number in said]
        assert row["sft_target"].replace(summary.group(2), "") == twin["sft_target"]
        kinds[len(said)] += 1
    assert kinds[0] and kinds[1] and kinds[2]


def test_edges_position_cue_quotes_the_two_numbers_that_decide(tmp_path):
    """``--position-cue edges``: on a position row each hint's line quotes its edge on the named side and the most
    extreme such edge of the other hints ("left 34 vs 60"), the verdict is yes exactly where its edge wins, and the
    referred object is the extreme one by its centre too (the answer does not change meaning)."""
    paths = make_synthetic_dataset(
        tmp_path / "edges", num_train=120, num_val=0, seed=6, hints=(2, 3), position_cue="edges"
    )
    line = re.compile(r"Box (\d) (\[[^\]]*\]) \w+ \w+, (left|right|top|bottom) (\d+) vs (\d+): (yes|no)\.")
    side = {"left": (0, min), "right": (2, max), "top": (1, min), "bottom": (3, max)}
    checked = 0
    for row in pq.read_table(paths["train"]).to_pylist():
        words = row["referring"].split()
        if not words[1].endswith("most"):
            assert ", left " not in row["sft_target"] and " vs " not in row["sft_target"]
            continue
        hints = json.loads(row["hints"])[row["category"]]
        lines = line.findall(row["sft_target"])
        assert len(lines) == len(hints), row["sft_target"]
        for number, box, word, mine, other, verdict in lines:
            assert words[1] == f"{word}most"
            index, extreme = side[word]
            box = json.loads(box)
            assert box == hints[int(number) - 1] and int(mine) == box[index]
            assert int(other) == extreme(b[index] for i, b in enumerate(hints) if i != int(number) - 1)
            assert (verdict == "yes") == (extreme(int(mine), int(other)) == int(mine))
            assert (verdict == "yes") == (box in json.loads(row["answer_boxes"]))
        axis = index % 2
        centres = [b[axis] + b[axis + 2] for b in hints]
        assert json.loads(row["answer_boxes"]) == [hints[centres.index(extreme(centres))]]
        checked += 1
    assert checked >= 10


def test_side_position_cue_names_each_boxs_half_beside_the_side_asked(tmp_path):
    """``--position-cue side``: on a position row each hint's line names the half of the image its box's centre is in,
    then the side asked ("right left no."), the verdict is yes exactly where the two words agree, and the referred
    object is the only one on its side and the extreme one by its centre (the answer does not change meaning)."""
    options = {"hints": (2, 2), "layout": "grid", "position_cue": "side", "verdict_cue": "square+pair"}
    paths = make_synthetic_dataset(tmp_path / "side", num_train=160, num_val=0, seed=3, image_size=112, **options)
    line = re.compile(r"Box (\d) (\[[^\]]*\]) cell \d+ (\w+) (\w+) (yes|no)\.")
    halves = {"left": (0, 0), "right": (0, 1), "top": (1, 0), "bottom": (1, 1)}
    checked = 0
    for row in pq.read_table(paths["train"]).to_pylist():
        words = row["referring"].split()
        if not words[1].endswith("most"):
            continue
        size = row["resized_size"][0]
        hints = json.loads(row["hints"])[row["category"]]
        lines = line.findall(row["sft_target"])
        assert len(lines) == len(hints), row["sft_target"]
        for number, box, read, asked, verdict in lines:
            assert words[1] == f"{asked}most"
            axis, half = halves[read]
            assert axis == halves[asked][0]
            box = json.loads(box)
            assert box == hints[int(number) - 1] and (box[axis] + box[axis + 2] >= size) == bool(half)
            assert (verdict == "yes") == (read == asked) == (box in json.loads(row["answer_boxes"]))
        axis, extreme = halves[asked][0], (min if halves[asked][1] == 0 else max)
        centres = [b[axis] + b[axis + 2] for b in hints]
        assert json.loads(row["answer_boxes"]) == [hints[centres.index(extreme(centres))]]
        assert [verdict for *_, verdict in lines].count("yes") == 1
        checked += 1
    assert checked >= 10


def test_asked_verdict_cue_repeats_what_the_expression_asks(tmp_path, capsys):
    """``--verdict-cue asked``: every hint's line says, after the colour read from the picture, the colour or side the
    expression names ("Box 1 [..] blue circle, asked red: no."); through the CLI as well."""
    out = tmp_path / "asked"
    flags = ["--num-train", "40", "--num-val", "0", "--seed", "2", "--verdict-cue", "asked", "--position-cue", "edges"]
    assert main(["synth", "--out", str(out), *flags]) == 0
    capsys.readouterr()
    for row in pq.read_table(out / "train.parquet").to_pylist():
        words = row["referring"].split()
        asked = words[1]  # "the red circle", "all red circles", "the leftmost circle"
        lines = re.findall(r"Box \d \[[^\]]*\] (\w+) \w+, asked (\w+)[^:]*: (yes|no)\.", row["sft_target"])
        assert len(lines) == len(json.loads(row["hints"])[row["category"]]), row["sft_target"]
        for colour, said, verdict in lines:
            assert said == asked
            if not asked.endswith("most"):
                assert (verdict == "yes") == (colour == asked)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"position_cue": "middle"}, "--position-cue 'middle': use one of centre, edges, side"),
        (
            {"verdict_cue": "loud"},
            "--verdict-cue 'loud': use one of plain, asked, cell, cell+asked, pair, cell+pair, square",
        ),
        ({"background": "dots"}, "--background 'dots': use one of plain, cells, ramp, frames"),
    ],
)
def test_unknown_cue_or_background_is_refused_before_anything_is_written(tmp_path, option, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_synthetic_dataset(tmp_path / "x", num_train=2, num_val=0, **option)
    assert not (tmp_path / "x").exists()


def test_the_first_choice_the_cli_offers_is_the_generators_default():
    """synth_options says its first value of each option is the default: the generator's own default agrees."""
    defaults = inspect.signature(synthetic.make_synthetic_dataset).parameters
    for flag, (choices, _) in SYNTH_CHOICES.items():
        assert defaults[flag[2:].replace("-", "_")].default == choices[0], flag
