"""Prompt presets: each renders, byte for byte, the chat text the original code gives the model for the same hints and
referring expression, through Qwen2.5-VL's real chat template; show-prompt prints exactly that; config checks.

Every expected text below is built the way the original code builds it (file and lines cited), not copied from our
presets file, and rendered through Qwen2.5-VL's own chat template (QWEN25VL_CHAT_TEMPLATE), while our side renders
through the tiny model's processor: so these tests also hold the tiny template equal to the real one on these messages.
"""

from __future__ import annotations

import json

import jinja2
import pytest

from data_tools import cli as data_cli
from rexthinker_rl.config import ConfigError, DataConfig, load_config
from rexthinker_rl.modeling import load_processor
from rexthinker_rl.prompts import PresetError, builtin_presets, chat_prompt, load_preset, preset_for

# chat_template.json of the Hugging Face model Qwen/Qwen2.5-VL-7B-Instruct (the template Rex-Thinker-GRPO-7B ships
# with): a fact to reproduce, kept here to hold our rendering to it.
QWEN25VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

# The reasoning instruction as the original's files hold it.
# rexthinker/scripts/r1v_format.jinja, the whole file (one line and a newline):
R1V_FORMAT_FILE = (
    "{{ content | trim }} A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>\n"
)
# demo/inference_single_image.py line 17 (SYSTEM_PROMPT), evaluation/eval.py line 12 (THINK_PROMPT) and the system
# prompt box of demo/gradio_demo.py line 389 are this same string: the format file's sentence plus a final period.
THINK_PROMPT = R1V_FORMAT_FILE.removeprefix("{{ content | trim }} ").rstrip("\n") + "."
# The Plain model's system prompt, as its authors give it (IDEA-Research/Rex-Thinker issue 21).
PLAIN_SYSTEM = "You are a helpful assistant. Directly answer the question without thinking."

HINTS = {"person": [[12, 30, 118, 260], [140, 22, 231, 251], [0, 5, 49, 300]]}
REFERRINGS = ["the man in a red shirt", "two women, one in black, eating ... at the desk", "kid  with <b> café"]


def original_grpo_messages(hints: dict, referring: str) -> list[dict]:
    # rexthinker/tools/dataset_tools/convert_dataset.py lines 209-217: the hint JSON (json.dumps) and the problem;
    # line 53: process_line prefixes "<image>".
    problem = "<image>" + (
        f"Hint: Object and its coordinates in this image: {json.dumps(hints)}\nPlease detect {referring} in this image."
    )
    # EasyR1 as vendored in rexthinker/verl/utils/dataset.py lines 120-123 and 131-146: the format file, stripped, is a
    # jinja Template rendered with content=problem; the text is split at "<image>" into an image part and non-empty
    # text parts; one user message, no system message.
    prompt = jinja2.Template(R1V_FORMAT_FILE.strip()).render(content=problem)
    content = []
    for index, piece in enumerate(prompt.split("<image>")):
        if index != 0:
            content.append({"type": "image"})
        if piece:
            content.append({"type": "text", "text": piece})
    return [{"role": "user", "content": content}]


def original_infer_messages(hints: dict, referring: str) -> list[dict]:
    # demo/inference_single_image.py lines 110-133 (and demo/gradio_demo.py lines 106-127, the same text).
    question = (
        f"Hint: Object and its coordinates in this image: {json.dumps(hints)}\nPlease detect {referring} in the image."
    )
    return [
        {"role": "system", "content": THINK_PROMPT},
        {"role": "user", "content": [{"type": "image", "image": None}, {"type": "text", "text": question}]},
    ]


def original_eval_messages(hints: dict, referring: str, system: str = THINK_PROMPT) -> list[dict]:
    # evaluation/eval.py lines 148-149 (the template), 169 (json.dumps({"person": boxes})), 175-176 (the two
    # replacements, in that order) and 50-60 (the messages; THINK_PROMPT replaces whatever system prompt is passed).
    prompt_w_candidate = "<CANDIDATES>\nLocate <REFERRING> in the image and answer the question in json format."
    prompt = prompt_w_candidate.replace("<REFERRING>", referring)
    prompt = prompt.replace("<CANDIDATES>", f"Hint: {json.dumps({'person': hints['person']})}")
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": [{"type": "image", "image": None}, {"type": "text", "text": prompt}]},
    ]


def our_messages(hints: dict, referring: str) -> list[dict]:
    # Ours, unchanged by the presets: the problem our converters write, the instruction after a newline, the system
    # prompt "You are a helpful assistant." (the behaviour before presets existed).
    problem = (
        f"Hint: Object and its coordinates in this image: {json.dumps(hints)}\nPlease detect {referring} in the image."
    )
    instruction = (
        "First think about the reasoning process in the mind and then provide the answer. The reasoning process and "
        "answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
        "<think> reasoning process here </think><answer> answer here </answer>."
    )
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{problem}\n{instruction}"}]},
    ]


EXPECTED = {
    "rexthinker-grpo": original_grpo_messages,
    "rexthinker-infer": original_infer_messages,
    "humanref-eval": original_eval_messages,
    "rexthinker-plain": lambda hints, referring: original_eval_messages(hints, referring, PLAIN_SYSTEM),
    "rexthinker-rl": our_messages,
}


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(str(tiny_model_dir), 12544, 12544)


def real_chat_text(processor, messages: list[dict]) -> str:
    return processor.tokenizer.apply_chat_template(
        messages, chat_template=QWEN25VL_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True
    )


def test_every_preset_is_covered():
    assert set(builtin_presets()) == set(EXPECTED)


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


def test_show_prompt_bad_input_is_one_line(capsys):
    assert data_cli.main(["show-prompt", "--preset", "humanref", "--hints", "{}", "--referring", "x"]) == 2
    assert "unknown prompt preset 'humanref' (did you mean humanref-eval?)" in capsys.readouterr().err
    assert data_cli.main(["show-prompt", "--hints", "[1, 2", "--referring", "x"]) == 2
    assert "--hints is not valid JSON" in capsys.readouterr().err


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
