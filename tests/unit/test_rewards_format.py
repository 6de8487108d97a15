"""Format validity (rewards.format)."""

import pytest

from rewards.format import format_reward
from rewards.parsing import REJECTION_TEXT

BOXES = '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "person"}]\n```'
THINK = "Planning: find people. Action: check Person 1. Summarization: Person 1 matches."


def score(response: str, **kwargs) -> dict:
    return format_reward([{"response": response, "ground_truth": REJECTION_TEXT, "metadata": {}}], **kwargs)[0]


@pytest.mark.parametrize(
    "response",
    [
        f"<think>{THINK}</think><answer>{BOXES}</answer>",
        f"<think>{THINK}</think>\n\n<answer>{REJECTION_TEXT}</answer>\n",
        f"< think >{THINK}</ think >< answer >{BOXES}< /answer >",
        "<think></think><answer>[1, 2, 3, 4]</answer>",
    ],
)
def test_valid_formats(response):
    result = score(response)
    assert result["overall"] == 1.0
    assert result["tags"] == 1.0 and result["answer"] == 1.0


@pytest.mark.parametrize(
    ("response", "failed"),
    [
        (f"<think>{THINK}<answer>{BOXES}</answer>", "tags"),  # no </think>
        (f"<think>{THINK}</think><answer>{BOXES}</answer><answer>{BOXES}</answer>", "tags"),
        (f"<answer>{BOXES}</answer><think>{THINK}</think>", "tags"),
        (f"Sure! <think>{THINK}</think><answer>{BOXES}</answer>", "tags"),
        (f"<think>{THINK}</think>So:<answer>{BOXES}</answer>", "tags"),
        (f"<think>{THINK}</think><answer>{BOXES}</answer> Hope this helps", "tags"),
        (f"<think>{THINK}</think><answer>left side</answer>", "answer"),
        (f"<think>{THINK}</think><answer>[1, 2, 3]</answer>", "answer"),
        ("", "tags"),
    ],
)
def test_invalid_formats(response, failed):
    result = score(response)
    assert result["overall"] == 0.0
    assert result[failed] == 0.0


def test_optional_leniency():
    assert score(f"<think>{THINK}</think><answer>left side</answer>", require_answer=False)["overall"] == 1.0
    trailing = f"<think>{THINK}</think><answer>{BOXES}</answer> Hope this helps"
    assert score(trailing, allow_outside_text=True)["overall"] == 1.0
    assert (
        score(f"<think>{THINK}</think><answer>{BOXES}</answer><answer>x</answer>", allow_outside_text=True)["overall"]
        == 0.0
    )  # a repeated tag is never forgiven


def test_required_sections():
    assert score(f"<think>{THINK}</think><answer>{BOXES}</answer>", require_sections=True)["overall"] == 1.0
    headings = "## Planning\n...\n## Action\n...\n## Summary\n..."
    assert score(f"<think>{headings}</think><answer>{BOXES}</answer>", require_sections=True)["overall"] == 1.0
    missing = score(f"<think>Planning then Summary</think><answer>{BOXES}</answer>", require_sections=True)
    assert (missing["overall"], missing["sections"], missing["tags"]) == (0.0, 0.0, 1.0)
    reversed_order = "Summary first. Action. Planning last."
    assert score(f"<think>{reversed_order}</think><answer>{BOXES}</answer>", require_sections=True)["overall"] == 0.0
    # Not required by default: reported but not scored.
    assert score(f"<think>x</think><answer>{BOXES}</answer>") == {
        "overall": 1.0,
        "tags": 1.0,
        "answer": 1.0,
        "sections": 0.0,
        "strict_answer": 1.0,
    }
    custom = score(
        f"<think>Step 1. Step 2.</think><answer>{BOXES}</answer>",
        require_sections=True,
        sections=[r"step 1", r"step 2"],
    )
    assert custom["overall"] == 1.0


@pytest.mark.parametrize(
    ("answer", "strict"),
    [
        (BOXES, 1.0),
        (REJECTION_TEXT, 1.0),
        ("[1, 2, 3, 4]", 0.0),  # bare list, no fence
        ("```json\n[[1, 2, 3, 4]]\n```", 0.0),  # fenced but not bbox_2d objects
        ('[{"bbox_2d": [1, 2, 3, 4]}]', 0.0),  # no fence
        (f"The answer: {BOXES}", 0.0),
        ("[]", 0.0),
        (f"```json\n{REJECTION_TEXT}\n```", 0.0),
    ],
)
def test_strict_answer_style(answer, strict):
    result = score(f"<think>{THINK}</think><answer>{answer}</answer>", strict_answer=True)
    assert result["strict_answer"] == strict
    assert result["overall"] == strict


def test_bad_section_configuration_raises():
    with pytest.raises(ValueError, match="invalid section pattern"):
        score("", sections=["(unclosed"])
    with pytest.raises(ValueError, match="list of regular expressions"):
        score("", sections="planning")
