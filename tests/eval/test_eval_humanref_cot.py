"""HumanRef-CoT TSV tools on TSV files made here: reading, conversion to valid training parquet, pictures, errors."""

import base64
import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from data_tools.cli import main
from data_tools.humanref_cot import HumanRefCoT, convert
from data_tools.synthetic import FEATURES
from data_tools.validate import validate_file
from rexthinker_rl.config import DataConfig
from rexthinker_rl.data.dataset import REJECTION_TEXT, boxes_to_original

PEOPLE = [[10, 20, 40, 100], [70, 30, 35, 90], [130, 25, 45, 110]]  # [x0, y0, w, h]
SAMPLES = [
    (0, {"the man in red": [1]}, "Person 1 wears blue ❌. Person 2 wears red ✅. Person 3 wears green ❌."),
    (0, {"the two people on the sides": [0, 2]}, "<think>Person 1 is left ✅, Person 3 is right ✅.</think>"),
    (1, {"the woman with a hat": []}, "Nobody wears a hat."),
    (1, {"the left one": [0], "the middle one": [1]}, "shared reasoning"),
]


def _image_bytes(colour) -> bytes:
    image = Image.new("RGB", (200, 150), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    for x, y, w, h in PEOPLE:
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_tsvs(folder, samples=SAMPLES, people=PEOPLE):
    """images TSV (second image as a b'...' literal), annotations TSV and its line index, as the release lays out."""
    image_lines = [
        f"img-0\t{base64.b64encode(_image_bytes((200, 40, 40))).decode()}\n",
        f"img-1\tb'{base64.b64encode(_image_bytes((40, 40, 200))).decode()}'\n",
    ]
    image_offsets = [0, len(image_lines[0].encode())]
    (folder / "images.tsv").write_text("".join(image_lines))
    lines, offsets, position = [], [], 0
    for image, region_map, think in samples:
        annotation = {"gt_boxes": people, "region_map": region_map, "think": think}
        line = f"{image_offsets[image]}\t{json.dumps(annotation, ensure_ascii=False)}\n"
        lines.append(line)
        offsets.append(position)
        position += len(line.encode())
    (folder / "annotations.tsv").write_text("".join(lines), encoding="utf-8")
    (folder / "annotations.tsv.lineidx").write_text("".join(f"{o}\n" for o in offsets))
    return folder / "images.tsv", folder / "annotations.tsv", folder / "annotations.tsv.lineidx"


def test_reader_decodes_samples(tmp_path):
    images, annotations, lineidx = write_tsvs(tmp_path)
    with HumanRefCoT(images, annotations, lineidx) as indexed, HumanRefCoT(images, annotations) as scanned:
        assert len(indexed) == len(scanned) == 4
        first, again = indexed[0], scanned[0]
        assert first == again
        assert first.boxes[1] == [70.0, 30.0, 105.0, 120.0]  # xywh -> xyxy
        assert Image.open(io.BytesIO(indexed[3].image_bytes)).getpixel((75, 40)) == (40, 40, 200)
        assert indexed[1].think == "Person 1 is left ✅, Person 3 is right ✅."  # tags removed once


def test_convert_writes_rows_validate_accepts(tmp_path):
    images, annotations, lineidx = write_tsvs(tmp_path)
    out = tmp_path / "cot.parquet"
    defaults = DataConfig()
    with HumanRefCoT(images, annotations, lineidx) as reader:
        report = convert(reader, out, defaults.min_pixels, defaults.max_pixels)
    assert report.rows == 5 and report.with_reasoning == 3 and not report.errors
    table = pq.read_table(out)
    assert table.column_names == list(FEATURES)
    validation = validate_file(out)
    assert validation.ok, [problem.line() for problem in validation.problems]
    rows = table.to_pylist()
    first = rows[0]
    assert first["resized_size"] == [196, 140] and first["image_size"] == [200, 150]
    hints = json.loads(first["hints"])["person"]
    assert json.loads(first["answer_boxes"]) == [hints[1]]  # the second person, exactly a hint box
    back = boxes_to_original([hints[1]], (200, 150), (196, 140))[0]
    assert back == pytest.approx([70, 30, 105, 120], abs=1.1)
    assert first["sft_target"] == f"<think>{SAMPLES[0][2]}</think><answer>{first['answer']}</answer>"
    assert json.loads(rows[1]["answer_boxes"]) == [hints[0], hints[2]]
    assert rows[2]["answer"] == REJECTION_TEXT and rows[2]["sft_target"].endswith(f"{REJECTION_TEXT}</answer>")
    assert [row["sft_target"] for row in rows[3:]] == [None, None]  # one reasoning, two expressions
    assert [row["id"] for row in rows] == [
        f"humanref_cot-{s:06d}-{n}" for s, n in ((0, 0), (1, 0), (2, 0), (3, 0), (3, 1))
    ]
    assert json.loads((tmp_path / "cot.parquet.report.json").read_text())["rows"] == 5


def test_cli_converts_and_draws(tmp_path, capsys):
    images, annotations, lineidx = write_tsvs(tmp_path)
    args = ["humanref-cot", "--images-tsv", str(images), "--annotations-tsv", str(annotations)]
    args += ["--lineidx", str(lineidx), "--out", str(tmp_path / "cot.parquet"), "--vis-dir", str(tmp_path / "vis")]
    assert main([*args, "--num-vis", "2"]) == 0
    printed = capsys.readouterr().out
    assert "drew 2 samples" in printed and "wrote 5 rows" in printed
    pictures = sorted((tmp_path / "vis").glob("*.png"))
    assert len(pictures) == 2 and Image.open(pictures[0]).width > 200


def test_bad_samples_are_named(tmp_path, capsys):
    samples = [*SAMPLES, (0, {"the fourth person": [3]}, "there is no fourth")]
    images, annotations, lineidx = write_tsvs(tmp_path, samples)
    args = ["humanref-cot", "--images-tsv", str(images), "--annotations-tsv", str(annotations)]
    args += ["--lineidx", str(lineidx), "--out", str(tmp_path / "cot.parquet")]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "annotations.tsv sample 4:" in printed and "region_map['the fourth person'] = [3]" in printed
    assert not (tmp_path / "cot.parquet").exists()
    assert main([*args, "--on-error", "skip"]) == 0
    assert pq.read_table(tmp_path / "cot.parquet").num_rows == 5
    capsys.readouterr()
    (tmp_path / "annotations.tsv.lineidx").write_text("7\n")  # not the start of a line
    assert main([*args, "--overwrite"]) == 1  # cot.parquet exists now: replacing it needs the flag
    printed = capsys.readouterr().out
    assert "annotations.tsv sample 0: expected '<image line offset>" in printed and "wrote nothing" in printed
    assert main(["humanref-cot", "--images-tsv", str(images), "--annotations-tsv", str(annotations)]) == 2
    assert "give --out" in capsys.readouterr().err
