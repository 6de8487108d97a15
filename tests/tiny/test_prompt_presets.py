"""Prompt presets through the tiny model's processor: each renders, byte for byte, the chat text the original code
gives the model (rendered through Qwen2.5-VL's own chat template), and show-prompt prints exactly that. The presets
without a model (config checks, CLI errors, bounds): tests/unit/test_prompts.py."""

from __future__ import annotations

import json

import pytest

from data_tools import cli as data_cli
from rexthinker_rl.data.prompts import chat_prompt, load_preset
from rexthinker_rl.model.loading import load_processor
from tests.rexthinker_original import QWEN25VL_CHAT_TEMPLATE
from tests.unit.test_prompts import EXPECTED, HINTS, REFERRINGS


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(str(tiny_model_dir), 12544, 12544)


def real_chat_text(processor, messages: list[dict]) -> str:
    return processor.tokenizer.apply_chat_template(
        messages, chat_template=QWEN25VL_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True
    )


def test_the_tiny_template_is_not_the_reference_itself(tiny_model_dir):
    # The comparison below is between two templates: the tiny model's own and Qwen2.5-VL's.
    assert load_processor(str(tiny_model_dir), 12544, 12544).chat_template != QWEN25VL_CHAT_TEMPLATE


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("referring", REFERRINGS)
def test_preset_renders_the_originals_text_byte_for_byte(name, referring, processor):
    preset = load_preset(name)
    _, ours = chat_prompt(processor, preset, preset.problem_text(HINTS, referring))
    expected = real_chat_text(processor, EXPECTED[name](HINTS, referring))
    assert ours == expected
    assert ours.count("<|image_pad|>") == 1 and ours.endswith("<|im_start|>assistant\n")


def test_grpo_preset_has_no_system_message_so_qwen_adds_its_default(processor):
    preset = load_preset("rexthinker-grpo")
    messages, text = chat_prompt(processor, preset, preset.problem_text(HINTS, "the man"))
    assert [message["role"] for message in messages] == ["user"]
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    # Rex-Thinker's own parquet rows hold the problem with its "<image>" prefix: the same text comes out.
    assert preset.problem_text(HINTS, "the man").startswith("<image>Hint:")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_show_prompt_prints_exactly_the_chat_text(name, processor, tiny_model_dir, capsys):
    referring = REFERRINGS[1]
    expected = real_chat_text(processor, EXPECTED[name](HINTS, referring))
    args = ["show-prompt", "--preset", name, "--hints", json.dumps(HINTS), "--referring", referring]
    assert data_cli.main(args) == 0
    assert capsys.readouterr().out == expected  # nothing else: no header, no trailing newline
    assert data_cli.main([*args, "--model", str(tiny_model_dir)]) == 0  # the model folder's own template
    assert capsys.readouterr().out == expected
