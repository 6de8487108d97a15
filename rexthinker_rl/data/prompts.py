"""Named prompt presets: the exact chat text a model is trained, served or evaluated with, kept as data.

The presets live in ``rexthinker_rl/data/assets/prompt_presets.yaml`` (its header documents the fields): ours
(``rexthinker-rl``, the default) and Rex-Thinker's own texts byte for byte (``rexthinker-grpo``, ``rexthinker-infer``,
``humanref-eval``, ``rexthinker-plain``). A preset turns box hints and a referring expression into the ``problem`` text
a dataset row holds, and a problem into chat messages; every path that builds a prompt (convert, the RL dataset, SFT,
``rexthinker-infer``, ``rexthinker-eval``, the demo) goes through :func:`preset_for` and :meth:`PromptPreset.messages`.
``data.prompt_preset`` may also name a YAML file holding one preset of the same shape.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

PRESETS_FILE = Path(__file__).with_name("assets") / "prompt_presets.yaml"
DEFAULT_PRESET = "rexthinker-rl"
IMAGE_MARK = "<image>"  # where the image goes in a rendered user text (EasyR1's convention)
BOX_ROUNDINGS = ("original", "round")
ANSWER_PARSINGS = ("answer-block", "all-lists")

# Template variables: EasyR1 renders its format template with jinja's default settings; so do we.
_TEMPLATES = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
# How transformers renders chat templates (trim_blocks, lstrip_blocks): show-prompt renders the same way.
_CHAT = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)


class PresetError(ValueError):
    """An unknown preset name or a malformed preset; the message names the preset, the key and what would be right."""


@dataclass(frozen=True)
class PromptPreset:
    """One preset (see the YAML file's header for the meaning of each field)."""

    name: str
    system: str | None
    problem: str
    user: str
    instruction: str | None
    min_pixels: int
    max_pixels: int
    max_new_tokens: int
    box_rounding: str
    answer_parsing: str
    decode_cleanup: bool
    source: str = ""
    description: str = ""

    def problem_text(self, hints: dict[str, list], referring: str, category: str | None = None) -> str:
        """The ``problem`` text for hints already in the resized frame (``{category: [[x0, y0, x1, y1], ...]}``)."""
        category = category if category is not None else next(iter(hints), "")
        boxes = json.dumps([box for category_boxes in hints.values() for box in category_boxes])
        return self._render("problem", hints=json.dumps(hints), boxes=boxes, referring=referring, category=category)

    def user_text(self, problem: str) -> str:
        """The user message's text, ``<image>`` marking the image."""
        return self._render("user", problem=problem, instruction=self.instruction or "")

    def messages(self, problem: str) -> list[dict[str, Any]]:
        """Chat messages for a problem: the system message (when the preset has one), then the user turn whose content
        is split at ``<image>`` into an image part and text parts, as EasyR1 does (the image goes first when the text
        has no mark; one image per prompt)."""
        pieces = self.user_text(problem).split(IMAGE_MARK)
        if len(pieces) > 2:
            raise PresetError(
                f"preset {self.name!r}: the user text holds {len(pieces) - 1} {IMAGE_MARK!r} marks, one image per prompt "
                f"is supported (does the problem already start with {IMAGE_MARK!r}? that is rexthinker-grpo's format)"
            )
        before, after = pieces if len(pieces) == 2 else ("", pieces[0])
        content = [{"type": "text", "text": before}] if before else []
        content.append({"type": "image"})
        if after:
            content.append({"type": "text", "text": after})
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": content}]

    def config_overrides(self) -> list[str]:
        """Dotlist overrides that select this preset with its pixel bounds and generation length (CLIs put them
        before the user's own overrides, which win)."""
        return [
            f"data.prompt_preset={self.name}",
            f"data.min_pixels={self.min_pixels}",
            f"data.max_pixels={self.max_pixels}",
            f"data.max_response_length={self.max_new_tokens}",
        ]

    def _render(self, field: str, **values: Any) -> str:
        try:
            return _TEMPLATES.from_string(getattr(self, field)).render(**values)
        except TemplateError as err:
            raise PresetError(f"preset {self.name!r}: its {field!r} template does not render ({err})") from None


def builtin_presets() -> dict[str, PromptPreset]:
    """Every preset of ``assets/prompt_presets.yaml``, by name."""
    return dict(_builtin())


@cache
def _builtin() -> tuple[tuple[str, PromptPreset], ...]:
    raw = yaml.safe_load(PRESETS_FILE.read_text(encoding="utf-8"))
    return tuple((name, _parse(name, spec, PRESETS_FILE.name)) for name, spec in raw.items())


def load_preset(name: str) -> PromptPreset:
    """A preset by name, or the single preset of a YAML file (``path/to/preset.yaml``)."""
    presets = builtin_presets()
    if name in presets:
        return presets[name]
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"prompt preset file {path} does not exist")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise PresetError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        return _parse(str(path), spec, str(path))
    close = difflib.get_close_matches(name, list(presets), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise PresetError(f"unknown prompt preset {name!r}{hint}: choose one of {', '.join(presets)} or a .yaml file")


_REQUIRED = ("system", "problem", "user", "instruction", "min_pixels", "max_pixels", "max_new_tokens")
_CHOICES = {"box_rounding": BOX_ROUNDINGS, "answer_parsing": ANSWER_PARSINGS}


def _parse(name: str, spec: Any, where: str) -> PromptPreset:
    if not isinstance(spec, dict):
        raise PresetError(f"{where}: preset {name!r} must be a mapping of fields, got {type(spec).__name__}")
    known = [f.name for f in fields(PromptPreset) if f.name != "name"]
    for key in spec:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise PresetError(f"{where}: preset {name!r} has an unknown field {key!r}{hint}")
    missing = [key for key in _REQUIRED if key not in spec]
    if missing:
        raise PresetError(f"{where}: preset {name!r} lacks {', '.join(missing)}")
    values = {"box_rounding": "round", "answer_parsing": "answer-block", "decode_cleanup": False} | spec
    for key, choices in _CHOICES.items():
        if values[key] not in choices:
            raise PresetError(f"{where}: preset {name!r}: {key}={values[key]!r}, expected one of {', '.join(choices)}")
    for key in ("min_pixels", "max_pixels", "max_new_tokens"):
        if not isinstance(values[key], int) or values[key] <= 0:
            raise PresetError(f"{where}: preset {name!r}: {key}={values[key]!r} must be a positive integer")
    for key in ("problem", "user"):
        if not isinstance(values[key], str):
            raise PresetError(f"{where}: preset {name!r}: {key} must be a template string")
    return PromptPreset(name=name, **values)


def preset_for(data_cfg) -> PromptPreset:
    """The preset a data config selects (``data.prompt_preset``), with ``data.system_prompt`` (None: the preset's;
    "": no system message) and ``data.format_prompt`` (None: the preset's instruction) applied."""
    preset = load_preset(data_cfg.prompt_preset)
    if data_cfg.system_prompt is not None:
        preset = replace(preset, system=data_cfg.system_prompt or None)
    if data_cfg.format_prompt is not None:
        if preset.instruction is None:
            raise PresetError(
                f"data.format_prompt is set but preset {preset.name!r} takes no instruction (it carries its own in "
                "the system prompt): set data.system_prompt instead, or unset data.format_prompt"
            )
        preset = replace(preset, instruction=data_cfg.format_prompt)
    return preset


def add_preset_argument(parser) -> None:
    """``--prompt-preset`` (alias ``--preset``) for a CLI that builds prompts."""
    parser.add_argument(
        "--prompt-preset",
        "--preset",
        dest="prompt_preset",
        default=None,
        help=f"prompt preset ({', '.join(builtin_presets())}, or a .yaml file): its prompt text, pixel bounds and "
        "generation length (given key=value overrides still win); default: the config's data.prompt_preset",
    )


def preset_overrides(name: str | None) -> list[str]:
    """The config overrides of ``--prompt-preset NAME`` (none without it)."""
    return load_preset(name).config_overrides() if name else []


def chat_prompt(processor, preset: PromptPreset, problem: str) -> tuple[list[dict[str, Any]], str]:
    """``(messages, prompt_text)``: the preset's messages for ``problem`` through the processor's chat template."""
    messages = preset.messages(problem)
    return messages, processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_chat(messages: list[dict[str, Any]], chat_template: str) -> str:
    """Messages through a chat template with a generation prompt, rendered the way transformers renders it."""
    return _CHAT.from_string(chat_template).render(messages=messages, add_generation_prompt=True)


def clean_up_spaces(text: str) -> str:
    """transformers' ``clean_up_tokenization`` (what ``decode(..., clean_up_tokenization_spaces=True)`` did to every
    tokenizer in the 4.x releases Rex-Thinker's evaluation ran on; 5.x skips it for BPE tokenizers such as Qwen's)."""
    for before, after in _CLEAN_UPS:
        text = text.replace(before, after)
    return text


_CLEAN_UPS = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
