"""data_tools.validate and the rexthinker-data CLI: every bad row is reported by index, with its reason."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_tools.cli import main
from data_tools.validate import parse_answer_boxes, validate_file
from rexthinker_rl.data.dataset import REJECTION_TEXT


def test_parse_answer_boxes():
    assert parse_answer_boxes(REJECTION_TEXT) == []
    assert parse_answer_boxes(f"  {REJECTION_TEXT}\n") == []
    fenced = '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6, 7.5, 8], "label": "b"}]\n```'
    assert parse_answer_boxes(fenced) == [[1, 2, 3, 4], [5, 6, 7.5, 8]]
    for bad, reason in [
        ('[{"bbox_2d": [1, 2, 3, 4]}]', "neither"),
        ("```json\n[]\n```", "non-empty list"),
        ("```json\n[{bbox_2d: 1}]\n```", "does not parse"),
        ('```json\n[{"bbox_2d": [1, 2, 3]}]\n```', "4 numbers"),
        ('```json\n[{"bbox_2d": [1, 2, 3, true]}]\n```', "4 numbers"),
        ("There is no such thing.", "neither"),
    ]:
        with pytest.raises(ValueError, match=reason):
            parse_answer_boxes(bad)


@pytest.fixture()
def broken_file(synthetic_data_dir, tmp_path):
    """The synthetic val set with row 2's image garbled, row 5's answer box moved off its hint, row 9 malformed."""
    rows = pq.read_table(synthetic_data_dir / "val.parquet").to_pylist()
    table_schema = pq.read_schema(synthetic_data_dir / "val.parquet")
    png = rows[2]["images"][0]["bytes"]
    rows[2]["images"] = [{"bytes": png[:40] + b"garbage" * 20, "path": None}]
    target = 5 if rows[5]["answer_boxes"] != "[]" else 6
    box = json.loads(rows[target]["answer_boxes"])[0]
    moved = [box[0] + 1, box[1], box[2] + 1, box[3]]
    rows[target]["answer"] = f'```json\n[{{"bbox_2d": {json.dumps(moved)}, "label": "x"}}]\n```'
    rows[target]["answer_boxes"] = json.dumps([moved])
    rows[9]["answer"] = "the box is somewhere"
    path = tmp_path / "broken.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=table_schema), path)
    return path, target


def test_validate_reports_every_bad_row_by_index(broken_file):
    path, target = broken_file
    report = validate_file(path)
    assert not report.ok and report.num_rows == 16
    lines = {problem.where: problem.line() for problem in report.problems}
    assert set(lines) == {"broken.parquet row 2", f"broken.parquet row {target}", "broken.parquet row 9"}
    assert "image does not decode" in lines["broken.parquet row 2"]
    assert "is not among the hint boxes" in lines[f"broken.parquet row {target}"]
    assert "neither a ```json fenced list" in lines["broken.parquet row 9"]
    assert report.summary().endswith("16 rows checked, 3 bad")


def test_validate_cli_exit_codes(broken_file, capsys):
    path, target = broken_file
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 5  # one line per bad row, the note that no bounds were given, then the summary
    assert out[0].startswith("broken.parquet row 2: ") and out[-1].endswith("3 bad")
    assert main(["validate", str(path.parent / "missing.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: dataset {path.parent / 'missing.parquet'} does not exist"]
    with pytest.raises(SystemExit) as exit_info:
        main(["validate"])  # argparse usage error
    assert exit_info.value.code == 2


def test_validate_checks_frame_and_consistency_columns(synthetic_data_dir, tmp_path):
    rows = pq.read_table(synthetic_data_dir / "val.parquet").to_pylist()[:4]
    schema = pq.read_schema(synthetic_data_dir / "val.parquet")
    rows[0]["hints"] = json.dumps({rows[0]["category"]: [[0, 0, 5, 5]]})  # disagrees with the problem text
    rows[1]["image_size"] = [100, 112]
    rows[2]["answer_boxes"] = "[[1, 2, 3, 4]]"
    problem = rows[3]["problem"]
    rows[3]["hints"] = None
    rows[3]["problem"] = problem.replace(problem[problem.index("[[") : problem.index("]]") + 2], "[[0, 0, 500, 9]]")
    path = tmp_path / "inconsistent.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    reasons = {problem.where: problem.line() for problem in validate_file(path).problems}
    assert "hints column differs" in reasons["inconsistent.parquet row 0"]
    assert "image_size column [100, 112]" in reasons["inconsistent.parquet row 1"]
    assert "answer_boxes column" in reasons["inconsistent.parquet row 2"]
    assert "[0, 0, 500, 9] lies outside the 112x112" in reasons["inconsistent.parquet row 3"]
    other_bounds = validate_file(synthetic_data_dir / "val.parquet", min_pixels=3136, max_pixels=3136)
    assert len(other_bounds.problems) == 16
    assert "built with other pixel bounds" in other_bounds.problems[0].line()


def test_validate_jsonl_with_image_paths(tmp_path, synthetic_data_dir):
    rows = pq.read_table(synthetic_data_dir / "val.parquet").to_pylist()[:3]
    lines = []
    for index, row in enumerate(rows):
        (tmp_path / f"img{index}.png").write_bytes(row.pop("images")[0]["bytes"])
        lines.append(json.dumps({**row, "image": f"img{index}.png"}))
    lines[1] = lines[1].replace("img1.png", "gone.png")
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = validate_file(path)
    assert [problem.line() for problem in report.problems] == ["data.jsonl row 1: image file 'gone.png' not found"]
