"""Text a row must not carry into a prompt or an answer, and the check every path that reads rows shares.

Three kinds of string are reserved:

- the tokenizer's special and added tokens (Qwen2.5-VL's ``<|image_pad|>``, ``<|im_end|>``, ``<|vision_start|>``, ...):
  the processor and the chat format act on them instead of reading them as text (an ``<|image_pad|>`` in a referring
  expression makes the processor count one image token too many, an ``<|im_end|>`` ends the turn);
- the reasoning markup completions are parsed by (``<think>``, ``</think>``, ``<answer>``, ``</answer>``, with the
  spacing the answer parser tolerates): in a referring expression it ends up inside the answer label and the SFT target,
  which then no longer parse;
- the ``<image>`` mark, which says where the image goes (a ``problem`` may start with it, as Rex-Thinker's do; nothing
  may hold it anywhere else).

``convert`` refuses such a record (a bad record, skippable with ``--on-error skip``), ``validate`` reports such a row,
and the dataset loader refuses it before any worker starts, each in one line naming the field and the string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from rexthinker_rl.model.tiny import QWEN_EXTRA_TOKENS, QWEN_SPECIAL_TOKENS

QWEN_TOKENS = (*QWEN_SPECIAL_TOKENS, *QWEN_EXTRA_TOKENS)
IMAGE_MARK = "<image>"
# The tags as rewards.parsing reads them (whitespace inside the brackets tolerated).
MARKUP = re.compile(r"<\s*/?\s*(?:think|answer)\s*>")
# What each field of a row may not hold: the tokenizer's tokens only (an SFT target is made of markup), or all three
# kinds (a problem may start with the image mark).
TOKENS, PROBLEM_TEXT, EVERYTHING = "tokens", "problem text", "everything"
ROW_FIELDS = {"problem": PROBLEM_TEXT, "answer": EVERYTHING, "referring": EVERYTHING, "category": EVERYTHING}
ROW_FIELDS |= {"hints": EVERYTHING, "sft_target": TOKENS}


def tokenizer_tokens(tokenizer: Any) -> tuple[str, ...]:
    """Qwen2.5-VL's special and added tokens, and those of ``tokenizer`` (a processor or tokenizer), if it has more."""
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    own: set[str] = set()
    added = getattr(tokenizer, "get_added_vocab", None)
    if callable(added):
        own |= set(added())
    own |= set(getattr(tokenizer, "all_special_tokens", None) or [])
    # A tokenizer that makes the markup tokens of their own (``<think>``) must not make every SFT target "reserved":
    # markup is checked as markup, field by field.
    own = {token for token in own - set(QWEN_TOKENS) if not MARKUP.fullmatch(token) and token != IMAGE_MARK}
    return (*QWEN_TOKENS, *sorted(own))


def find_reserved(text: str, tokens: Iterable[str] = QWEN_TOKENS, allow: str = EVERYTHING) -> str | None:
    """Why ``text`` may not be used (``allow``: which kinds are checked, see ROW_FIELDS), or None when it may."""
    for token in tokens:
        if token and token in text:
            return f"{token!r}, a special token of the model's tokenizer"
    if allow == TOKENS:
        return None
    markup = MARKUP.search(text)
    if markup:
        return f"{markup.group(0)!r}, the reasoning markup answers are parsed by"
    # A problem may start with the mark (Rex-Thinker's problems do); anywhere else it would be a second image.
    rest = text if allow == EVERYTHING else text.strip().removeprefix(IMAGE_MARK)
    if IMAGE_MARK in rest:
        return f"{IMAGE_MARK!r}, the mark of where the image goes"
    return None


def check_text(field: str, text: str, tokens: Iterable[str] = QWEN_TOKENS, allow: str = EVERYTHING) -> str | None:
    """One line saying why ``field``'s ``text`` is refused, or None."""
    found = find_reserved(text, tokens, allow)
    return None if found is None else f"{field!r} holds {found}; remove or reword it"


def row_text_problems(row: dict, keys: dict[str, str], tokens: Iterable[str] = QWEN_TOKENS) -> list[str]:
    """Reasons a row's text columns are refused. ``keys`` maps a column of ROW_FIELDS to the row's own key for it
    (``{"problem": data.prompt_key, ...}``); a missing column or a value that is not text is left to other checks."""
    tokens = tuple(tokens)
    reasons = []
    for field, key in keys.items():
        value = row.get(key)
        if isinstance(value, dict):  # a hints column held as a mapping: its categories are text too
            value = json.dumps(value, ensure_ascii=False, default=str, skipkeys=True)
        if isinstance(value, str):
            reason = check_text(key, value, tokens, ROW_FIELDS[field])
            if reason is not None:
                reasons.append(reason)
    return reasons


def row_keys(prompt_key: str = "problem", answer_key: str = "answer") -> dict[str, str]:
    """:func:`row_text_problems`'s ``keys`` for a dataset's configured prompt and answer columns."""
    return {field: field for field in ROW_FIELDS} | {"problem": prompt_key, "answer": answer_key}
