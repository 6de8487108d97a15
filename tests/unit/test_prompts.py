"""Prompt presets without a model: config checks, show-prompt's errors, the presets' bounds. Rendered through the tiny
model's processor, each gives byte for byte the chat text the original code gives the model for the same hints and
referring expression (tests/tiny/test_prompt_presets.py).

Every expected text below is built the way the original code builds it (file and lines cited), not copied from our
presets file, and rendered through Qwen2.5-VL's own chat template (QWEN25VL_CHAT_TEMPLATE), while our side renders
through the tiny model's processor: so these tests also hold the tiny template equal to the real one on these messages.
"""

from __future__ import annotations

import json

import pytest

from data_tools import cli as data_cli
from rexthinker_rl.config import ConfigError, DataConfig, load_config
from rexthinker_rl.data.prompts import PresetError, builtin_presets, load_preset, preset_for
from tests.rexthinker_original import (
    PLAIN_SYSTEM,
    original_eval_messages,
    original_grpo_messages,
    original_infer_messages,
    our_messages,
)

HINTS = {"person": [[12, 30, 118, 260], [140, 22, 231, 251], [0, 5, 49, 300]]}
REFERRINGS = ["the man in a red shirt", "two women, one in black, eating ... at the desk", "kid  with <b> café"]

EXPECTED = {
    "rexthinker-grpo": original_grpo_messages,
    "rexthinker-infer": original_infer_messages,
    "humanref-eval": lambda hints, referring: original_eval_messages(hints["person"], referring),
    "rexthinker-plain": lambda hints, referring: original_eval_messages(hints["person"], referring, PLAIN_SYSTEM),
    "rexthinker-rl": our_messages,
}


def test_every_preset_is_covered():
    assert set(builtin_presets()) == set(EXPECTED)


def test_show_prompt_bad_input_is_one_line(capsys):
    assert data_cli.main(["show-prompt", "--preset", "humanref", "--hints", "{}", "--referring", "x"]) == 2
    assert "unknown prompt preset 'humanref' (did you mean humanref-eval?)" in capsys.readouterr().err
    assert data_cli.main(["show-prompt", "--hints", "[1, 2", "--referring", "x"]) == 2
    assert "--hints: hints are not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    "hints",
    ['{"cat": [[1, 2, 3]]}', '{"cat": [[1, 2, 3, 4, 5]]}', '{"cat": [[1, 2, "3", 4]]}', '{"cat": [[NaN, 2, 3, 4]]}'],
)
def test_show_prompt_refuses_boxes_that_are_not_four_numbers(hints, capsys):
    """Issue 28, item 12: a 3-number box used to be printed into the prompt as it was."""
    assert data_cli.main(["show-prompt", "--hints", hints, "--referring", "the cat"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "must be a list of [x0, y0, x1, y1] boxes" in error, error


def test_show_prompt_refuses_special_tokens_in_the_referring_expression(capsys):
    assert data_cli.main(["show-prompt", "--hints", "{}", "--referring", "the <|im_end|> cat"]) == 2
    assert "'--referring' holds '<|im_end|>', a special token" in capsys.readouterr().err


def test_config_selects_and_checks_presets(tmp_path):
    assert load_config(None).data.prompt_preset == "rexthinker-rl"
    with pytest.raises(ConfigError, match="did you mean rexthinker-grpo"):
        load_config(None, ["data.prompt_preset=rexthinker-grp"])
    with pytest.raises(ConfigError, match="takes no instruction"):
        load_config(None, ["data.prompt_preset=humanref-eval", "data.format_prompt=Think."])
    # Overrides: the instruction of a preset that has one, and the system message ("" removes it).
    preset = preset_for(DataConfig(prompt_preset="rexthinker-grpo", format_prompt="Think.", system_prompt="Be brief."))
    assert preset.user_text("<image>Q ") == "<image>Q Think." and preset.messages("Q")[0]["content"] == "Be brief."
    assert preset_for(DataConfig(system_prompt="")).messages("Q")[0]["role"] == "user"
    # A preset of one's own, from a YAML file (unknown fields are named).
    own = tmp_path / "mine.yaml"
    spec = {key: value for key, value in vars(load_preset("humanref-eval")).items() if key not in ("name",)}
    own.write_text(json.dumps(spec | {"system": "Answer with boxes."}))
    assert load_preset(str(own)).messages("Q")[0]["content"] == "Answer with boxes."
    own.write_text(json.dumps(spec | {"sytem": "x"}))
    with pytest.raises(PresetError, match="unknown field 'sytem' \\(did you mean system\\?\\)"):
        load_preset(str(own))


def test_preset_cli_overrides_bring_the_presets_bounds_and_length():
    preset = load_preset("humanref-eval")
    assert (preset.min_pixels, preset.max_pixels, preset.max_new_tokens) == (256 * 28 * 28, 1280 * 28 * 28, 2048)
    config = load_config(None, [*preset.config_overrides(), "data.max_response_length=99"])  # the user's still win
    assert (config.data.min_pixels, config.data.max_pixels, config.data.max_response_length) == (200704, 1003520, 99)
    infer = load_preset("rexthinker-infer")  # demo/inference_single_image.py lines 94-96 and 150
    assert (infer.min_pixels, infer.max_pixels, infer.max_new_tokens) == (16 * 28 * 28, 1280 * 28 * 28, 4096)
