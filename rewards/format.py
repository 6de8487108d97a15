"""Format validity: is the completion ``<think>...</think><answer>...</answer>`` with an answer we can read?

The default checks, each worth all or nothing:

- ``tags``: each of ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` exactly once, in that order, with
  nothing but whitespace outside the two blocks (whitespace inside tags, ``< think >``, is forgiven).
- ``answer``: the answer parses as boxes or as the rejection sentence.

Optional strictness: ``require_sections`` asks the reasoning to contain the planning, action and summary
sections in order (patterns in ``sections``); ``strict_answer`` asks for exactly the trained answer style, a
fenced ```` ```json ```` list of ``{"bbox_2d": ...}`` objects with no text around it, or the bare rejection
sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rewards.parsing import ParsedAnswer, ParsedCompletion, parse_completion
from rewards.types import RewardInput, RewardScore

# Word-start patterns, case-insensitive, so "Planning", "## Action" and "Summarization:" all count.
DEFAULT_SECTIONS = (r"\bplan", r"\baction", r"\bsummar")


def sections_in_order(think: str | None, patterns: Sequence[re.Pattern[str]]) -> bool:
    """True if every pattern matches ``think``, each after the previous one's match."""
    if think is None:
        return False
    position = 0
    for pattern in patterns:
        match = pattern.search(think, position)
        if match is None:
            return False
        position = match.end()
    return True


def is_trained_answer_style(answer: ParsedAnswer) -> bool:
    """True for the exact style the model is trained to emit: fenced bbox_2d JSON, or the bare sentence."""
    if answer.kind == "rejection":
        return answer.style == "sentence" and not answer.fenced
    return answer.kind == "boxes" and answer.style == "json" and answer.fenced and not answer.extra_text


def _tags_ok(parsed: ParsedCompletion, allow_outside_text: bool) -> bool:
    return parsed.structure_error is None and (allow_outside_text or not parsed.outside_text)


def _compile_sections(sections: Sequence[str]) -> list[re.Pattern[str]]:
    if isinstance(sections, str):
        raise ValueError(f"sections must be a list of regular expressions, got the string {sections!r}")
    try:
        return [re.compile(pattern, re.IGNORECASE) for pattern in sections]
    except re.error as error:
        raise ValueError(f"invalid section pattern in {list(sections)!r}: {error}") from error


def format_reward(
    inputs: list[RewardInput],
    require_answer: bool = True,
    require_sections: bool = False,
    sections: Sequence[str] = DEFAULT_SECTIONS,
    strict_answer: bool = False,
    allow_outside_text: bool = False,
) -> list[RewardScore]:
    """Score each completion 1.0 if its format passes every required check, else 0.0.

    Args:
        inputs: completions (ground truth and metadata are not used).
        require_answer: the answer must parse as boxes or the rejection sentence.
        require_sections: the ``<think>`` text must contain ``sections`` in order.
        sections: regular expressions (case-insensitive) for the reasoning sections.
        strict_answer: the answer must be in the trained style (see :func:`is_trained_answer_style`).
        allow_outside_text: forgive non-whitespace text before ``<think>``, between the blocks, or after.

    Returns:
        Per input: ``overall`` in {0, 1}, and each check whether required or not, in {0, 1}: ``tags``,
        ``answer`` (parses), ``sections``, ``strict_answer``.
    """
    patterns = _compile_sections(sections)
    scores: list[RewardScore] = []
    for item in inputs:
        parsed = parse_completion(item.get("response"))
        checks = {
            "tags": _tags_ok(parsed, allow_outside_text),
            "answer": parsed.answer.ok,
            "sections": sections_in_order(parsed.think, patterns),
            "strict_answer": is_trained_answer_style(parsed.answer),
        }
        required = {
            "tags": True,
            "answer": require_answer,
            "sections": require_sections,
            "strict_answer": strict_answer,
        }
        passed = all(checks[name] for name, needed in required.items() if needed)
        scores.append({"overall": float(passed), **{name: float(value) for name, value in checks.items()}})
    return scores
