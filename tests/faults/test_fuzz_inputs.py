"""Fuzzing the two doors bad input comes through: the config loader and the dataset row checks.

Whatever the text, the config loader either returns a config or raises ConfigError (a one-line message), never a raw
OmegaConf/YAML/Python error; whatever the row, the dataset raises DataError and ``rexthinker-data validate``'s row check
returns reasons, never a TypeError from deep inside. A row the dataset accepts holds no special token of the tokenizer
and no reasoning markup, and the processor tokenises its prompt with exactly its image's tokens (as every worker will).
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from rexthinker_rl.config import ConfigError, DataConfig, load_config, valid_keys
from rexthinker_rl.model.tiny import QWEN_EXTRA_TOKENS, QWEN_SPECIAL_TOKENS

# No shrinking: a failure is reported as found, in seconds (shrinking these inputs can take minutes).
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow],
)

# ---------------------------------------------------------------------------------------------------------- config
KEYS = valid_keys()
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values_text = st.one_of(
    scalars.map(str),
    st.text(max_size=20),
    st.sampled_from(["[]", "[1, 2", "{a: 1}", "${oc.env:HOME}", "${nope}", "${", "'quoted", "null", "???", "1e-6"]),
)
keys = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda k: k + "x"),
    st.sampled_from(KEYS).map(lambda k: k.rpartition(".")[0] or k),
    st.text(max_size=15),
)


@FUZZ
@given(st.lists(st.tuples(keys, values_text), max_size=4))
def test_dotlist_overrides_raise_only_config_error(pairs):
    overrides = [f"{key}={value}" for key, value in pairs]
    try:
        load_config(None, overrides)
    except ConfigError as error:  # one line, unless it quotes the user's own line break back
        assert str(error) and ("\n" not in str(error) or any("\n" in item for item in overrides))


yaml_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3)
)
yaml_documents = st.one_of(
    st.dictionaries(st.sampled_from([k.partition(".")[0] for k in KEYS]), st.dictionaries(keys, yaml_values)).map(
        lambda d: yaml.safe_dump(d)
    ),
    yaml_values.map(lambda v: yaml.safe_dump(v)),
    st.text(max_size=60),
)


@FUZZ
@given(yaml_documents)
def test_yaml_files_raise_only_config_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "experiment.yaml"
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError as error:
            assert str(error) and "\n" not in str(error)


# ------------------------------------------------------------------------------------------------------------- rows
def _png(size=(112, 112)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "red").save(buffer, format="PNG")
    return buffer.getvalue()


GOOD_PROBLEM = (
    'Hint: Object and its coordinates in this image: {"square": [[10, 10, 40, 40]]}\nPlease detect the square.'
)
GOOD_ANSWER = '```json\n[{"bbox_2d": [10, 10, 40, 40], "label": "the square"}]\n```'
numbers = st.one_of(st.integers(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True), st.booleans())
boxes = st.lists(numbers, min_size=0, max_size=5)
json_values = st.recursive(
    st.one_of(st.none(), numbers, st.text(max_size=10)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
# Special tokens and markup in text fields: the processor must never meet them (issue #28, item 6).
RESERVED = [*QWEN_SPECIAL_TOKENS, *QWEN_EXTRA_TOKENS, "<think>", "</think>", "<answer>", "< /answer >", "<image>"]
with_reserved = st.tuples(st.text(max_size=4), st.sampled_from(RESERVED), st.text(max_size=4)).map("".join)
problem_with_reserved = st.sampled_from(RESERVED).map(lambda token: GOOD_PROBLEM.replace("the square", f"the {token}"))
field_values = {
    "image": st.sampled_from(["img.png", "missing.png", "garbage.png", "", "../img.png"]) | json_values,
    "problem": st.sampled_from([GOOD_PROBLEM, "", "Hint: coordinates in this image: {broken", "<image>"])
    | json_values
    | problem_with_reserved,
    "answer": st.sampled_from([GOOD_ANSWER, "There is no such thing in the image.", "```json\n[]\n```"])
    | st.builds(lambda b: f'```json\n[{{"bbox_2d": {json.dumps(b)}}}]\n```', boxes)
    | json_values,
    "hints": st.builds(lambda b: json.dumps({"square": [b]}), boxes) | json_values,
    "image_size": st.sampled_from([[112, 112], [0, 0], [1, 2, 3]]) | json_values,
    "resized_size": st.sampled_from([[112, 112], [28, 28]]) | json_values,
    "id": json_values,
    "referring": json_values | with_reserved,
    "category": json_values | with_reserved,
    "answer_boxes": st.builds(lambda b: [b], boxes) | json_values,
}
GOOD_ROW = {
    "image": "img.png",
    "problem": GOOD_PROBLEM,
    "answer": GOOD_ANSWER,
    "hints": json.dumps({"square": [[10, 10, 40, 40]]}),
    "image_size": [112, 112],
    "resized_size": [112, 112],
    "id": "row-0",
    "referring": "the square",
    "category": "square",
    "answer_boxes": [[10, 10, 40, 40]],
}
_MISSING = object()


def _mutate(changes: dict) -> dict:
    row = dict(GOOD_ROW)
    for key, value in changes.items():
        if value is _MISSING:
            row.pop(key, None)
        else:
            row[key] = value
    return row


# A good row with one to three fields replaced by anything (or removed): each check meets its own bad value.
rows = st.one_of(
    st.dictionaries(
        st.sampled_from(sorted(field_values)),
        st.just(_MISSING) | json_values,
        min_size=1,
        max_size=3,
    ).map(_mutate),
    st.fixed_dictionaries({}, optional=dict(field_values)).map(_mutate),
    st.fixed_dictionaries({}, optional={**field_values, "extra": json_values}),
)


@pytest.fixture(scope="module")
def row_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_rows")
    (folder / "img.png").write_bytes(_png())
    (folder / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return folder


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from rexthinker_rl.model.loading import load_processor

    return load_processor(str(tiny_model_dir), 112 * 112, 112 * 112)


@FUZZ
@given(row=rows)
@example(row=_mutate({"problem": GOOD_PROBLEM.replace("the square", "the red <|image_pad|> square")}))
@example(row=_mutate({"referring": "the </think><answer>[]</answer> square"}))
@example(row=_mutate({"category": "square<|im_end|>"}))
def test_dataset_rows_raise_only_data_error(row, row_folder, processor):
    from rexthinker_rl.data.dataset import DataError, RLDataset, image_tokens

    path = row_folder / "fuzz.jsonl"
    path.write_text(json.dumps(row, allow_nan=True) + "\n")
    cfg = DataConfig(min_pixels=112 * 112, max_pixels=112 * 112, image_key="image", max_prompt_length=512)
    try:
        dataset = RLDataset(str(path), processor, cfg)
    except DataError as error:
        assert str(error).startswith("fuzz.jsonl row 0: ") or str(path) in str(error), str(error)
        return
    sample = dataset[0]  # a row the scan accepted must also load
    assert sample.image.size == (112, 112) and isinstance(sample.ground_truth, str)
    tokens = set(processor.tokenizer.get_added_vocab())
    texts = [row.get(key) for key in ("answer", "referring", "category", "hints")]
    texts.append(row["problem"].strip().removeprefix("<image>"))  # the one mark a problem may start with
    reserved = [t for text in texts if isinstance(text, str) for t in [*tokens, *RESERVED] if t in text]
    assert not reserved, reserved  # the model would read them as markup, not text
    inputs = processor(text=[sample.prompt_text], images=[sample.image])  # what every worker does with it
    assert sum(token == processor.image_token_id for token in inputs["input_ids"][0]) == image_tokens(112, 112)


@FUZZ
@given(row=rows, image_bytes=st.sampled_from([None, b"", b"garbage", _png(), _png((300, 200))]))
def test_validate_check_row_reports_instead_of_raising(row, image_bytes, row_folder):
    from data_tools.validate import check_row

    if image_bytes is not None:
        row = {**row, "images": [{"bytes": image_bytes, "path": None}]}
    cfg = DataConfig(min_pixels=112 * 112, max_pixels=112 * 112)
    reasons = check_row(row, "fuzz row 0", row_folder, cfg)
    assert isinstance(reasons, list) and all(isinstance(r, str) and r for r in reasons)
    if not reasons:  # a row it passes has what training reads
        assert isinstance(row.get("answer"), str) and row["answer"].strip()
        assert row.get("images") or row.get("image")
