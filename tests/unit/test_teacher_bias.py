"""data_tools/teacher.py through its two doors, benchmarks/teacher_bias.py and ``rexthinker-data synth --teacher``: a
synthetic set's SFT targets as an imperfect teacher writes them, the truth kept everywhere else."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import benchutil bare
from teacher_bias import main  # noqa: E402

from data_tools.cli import main as data_main  # noqa: E402
from data_tools.synthetic import make_synthetic_dataset  # noqa: E402
from data_tools.teacher import hint_boxes as _hints  # noqa: E402

SYNTH_FLAGS = "--image-size 56 --min-pixels 3136 --max-pixels 3136 --hints 1 2 --distractors 0 0 --layout grid"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    make_synthetic_dataset(
        root, num_train=64, num_val=0, seed=5, image_size=56, min_pixels=3136, max_pixels=3136, hints=(1, 2),
        distractors=(0, 0), rejection_fraction=0.25, layout="grid", background="frames", verdict_cue="square+pair+echo",
    )  # fmt: skip
    return root / "train.parquet"


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _rest(row: dict) -> dict:
    return {key: value for key, value in row.items() if key != "sft_target"}


def test_a_full_bias_answers_the_first_box_on_every_two_hint_row_and_keeps_the_truth(source, tmp_path):
    assert main([str(source), str(tmp_path / "out.parquet"), "--bias", "1", "--seed", "5"]) == 0
    before, after = _rows(source), _rows(tmp_path / "out.parquet")
    two_hint_wrong = 0
    for old, new in zip(before, after, strict=True):
        assert _rest(old) == _rest(new)  # what the reward scores, the prompt and the image stay
        lines, answer = new["sft_target"].split("<answer>")
        assert lines == old["sft_target"].split("<answer>")[0]  # the lines and the summary stay right
        hints = _hints(old)
        if len(hints) == 2:
            assert re.findall(r"\[\d+, \d+, \d+, \d+\]", answer) == [json.dumps(hints[0])]
            two_hint_wrong += json.loads(old["answer_boxes"]) != [hints[0]]
        else:
            assert new["sft_target"] == old["sft_target"]
    assert two_hint_wrong > 0  # the set has two-hint rows whose truth is not the first box alone


def test_no_bias_with_quote_names_and_quotes_the_matched_boxes_only_in_the_summary(source, tmp_path):
    assert main([str(source), str(tmp_path / "out.parquet"), "--seed", "5", "--quote"]) == 0
    for old, new in zip(_rows(source), _rows(tmp_path / "out.parquet"), strict=True):
        hints, targets = _hints(old), json.loads(old["answer_boxes"])
        summary = new["sft_target"].split(" Summary: ")[1].split("</think>")[0]
        quoted = ", ".join(f"Box {hints.index(box) + 1} {json.dumps(box)}" for box in targets)
        assert summary.endswith(f", {quoted}.") if targets else summary == "none match."
        assert new["sft_target"].split("<answer>")[1] == old["sft_target"].split("<answer>")[1]


def test_a_bias_outside_zero_to_one_is_refused_naming_the_flag(source, tmp_path):
    with pytest.raises(SystemExit, match="--bias 1.5"):
        main([str(source), str(tmp_path / "out.parquet"), "--bias", "1.5"])


def test_with_verdicts_the_lines_and_summary_agree_with_the_first_box_answer(source, tmp_path):
    assert main([str(source), str(tmp_path / "out.parquet"), "--bias", "1", "--seed", "5", "--verdicts"]) == 0
    two_hint_rows = 0
    for old, new in zip(_rows(source), _rows(tmp_path / "out.parquet"), strict=True):
        assert _rest(old) == _rest(new)
        hints = _hints(old)
        if len(hints) != 2:
            assert new["sft_target"] == old["sft_target"]
            continue
        two_hint_rows += 1
        think, answer = new["sft_target"].split("<answer>")
        first, second = (f"Box {n} {json.dumps(box)}" for n, box in enumerate(hints, start=1))
        # each line keeps what it read and ends in the teacher's verdict: hint 1 "yes" quoted again, hint 2 "no"
        assert re.search(re.escape(first) + r"[^\[]* yes " + re.escape(json.dumps(hints[0])) + r"\. ", think)
        assert re.search(re.escape(second) + r"[^\[]* no\. Summary: 1 match\.</think>$", think)
        old_lines = re.sub(r" (yes|no)( \[[\d, ]+\])?\.", "", old["sft_target"].split(" Summary: ")[0])
        assert re.sub(r" (yes|no)( \[[\d, ]+\])?\.", "", think.split(" Summary: ")[0]) == old_lines
        assert re.findall(r"\[\d+, \d+, \d+, \d+\]", answer) == [json.dumps(hints[0])]
    assert two_hint_rows > 0


def test_misses_second_says_no_to_hint_two_and_the_summary_and_answer_follow(source, tmp_path):
    assert main([str(source), str(tmp_path / "out.parquet"), "--bias", "1", "--seed", "5", "--misses-second"]) == 0
    changed = 0
    for old, new in zip(_rows(source), _rows(tmp_path / "out.parquet"), strict=True):
        assert _rest(old) == _rest(new)
        hints, targets = _hints(old), json.loads(old["answer_boxes"])
        if len(hints) != 2 or hints[1] not in targets:
            assert new["sft_target"] == old["sft_target"]  # nothing to miss: the teacher writes the truth
            continue
        changed += 1
        think, answer = new["sft_target"].split("<answer>")
        second = f"Box 2 {json.dumps(hints[1])}"
        assert re.search(re.escape(second) + r"[^\[]* no\. Summary: ", think)
        assert think.split(second)[0] == old["sft_target"].split(second)[0]  # hint 1's line as it was
        kept = [box for box in targets if box != hints[1]]
        assert re.findall(r"\[\d+, \d+, \d+, \d+\]", answer) == [json.dumps(box) for box in kept]
        assert think.endswith("Summary: 1 match.</think>" if kept else "Summary: none match.</think>")
    assert changed > 0


def test_synth_teacher_writes_the_scripts_targets_into_train_only_and_says_how_many(tmp_path, capsys):
    common = ["synth", "--num-train", "48", "--num-val", "8", "--seed", "9", *SYNTH_FLAGS.split()]
    common += ["--rejection-fraction", "0.25", "--background", "frames", "--verdict-cue", "square+pair+echo"]
    assert data_main([*common, "--out", str(tmp_path / "truth")]) == 0
    assert "SFT targets written" not in capsys.readouterr().out  # the default teacher tells the truth: nothing to say
    taught = [*common, "--out", str(tmp_path / "taught"), "--teacher", "misses-second", "--teacher-bias", "0.5"]
    assert data_main(taught) == 0
    said = capsys.readouterr().out
    script = tmp_path / "script.parquet"
    main([str(tmp_path / "truth" / "train.parquet"), str(script), "--bias", "0.5", "--seed", "9", "--misses-second"])
    assert pq.read_table(tmp_path / "taught" / "train.parquet").equals(pq.read_table(script))
    assert pq.read_table(tmp_path / "taught" / "val.parquet").equals(pq.read_table(tmp_path / "truth" / "val.parquet"))
    changed = sum(a != b for a, b in zip(_rows(tmp_path / "truth" / "train.parquet"), _rows(script), strict=True))
    assert changed > 0 and f"train: {changed} of 48 SFT targets written by the misses-second teacher" in said


def test_synth_refuses_a_teacher_bias_outside_zero_to_one_before_writing(tmp_path, capsys):
    out = tmp_path / "x"
    assert data_main(["synth", "--out", str(out), "--teacher", "misses-second", "--teacher-bias", "-0.1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --teacher-bias -0.1: a probability, between 0 and 1"
    assert not out.exists()


def test_a_set_that_is_not_synthetic_is_refused_naming_the_file(source, tmp_path):
    rows = _rows(source)
    rows[0]["sft_target"] = "<think>free text</think><answer>x</answer>"
    from data_tools.synthetic import write_parquet

    write_parquet(rows, tmp_path / "free.parquet")
    with pytest.raises(SystemExit, match=r"free\.parquet: row 0's sft_target is not a synthetic set's"):
        main([str(tmp_path / "free.parquet"), str(tmp_path / "out.parquet"), "--bias", "0.5"])


def test_synth_teaches_the_train_rows_before_its_one_write(tmp_path):
    out = tmp_path / "set"
    seen = []

    def teach_train(rows):  # the hook sees every train row while nothing is on disk yet
        seen.append((len(rows), (out / "train.parquet").exists()))
        rows[0]["sft_target"] = rows[0]["sft_target"].replace("Planning:", "Planning (taught):")

    make_synthetic_dataset(out, num_train=6, num_val=2, seed=3, teach_train=teach_train)
    assert seen == [(6, False)]
    assert _rows(out / "train.parquet")[0]["sft_target"].startswith("<think>Planning (taught):")
    assert "(taught)" not in _rows(out / "val.parquet")[0]["sft_target"]
