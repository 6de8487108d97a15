"""Old-README coverage: every table row, code line and number-bearing sentence of the README before it became a front
door is still in README.md or docs/*.md (links, emphasis, heading levels and line wrapping aside).

    .venv/bin/python -m tests.readme_coverage [REV]      # REV: the commit whose README.md is the old one

Not a pytest test: it reads the old README from git history, which a shallow clone lacks. It prints what is missing
and exits 1, or says how much it checked and exits 0. Deliberate rewrites are listed in REWRITTEN with the reason.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_REV = "1dbd113dd2eb79ee31c745e60d1da7d4bc693251"  # main when issue-18-docs merged it: issues 19, 20 and 22 in

# Old text -> why its new form differs (each checked to be in the old README, so the list cannot go stale silently).
REWRITTEN = {
    "(see *Outputs are never lost* below)": "no such section existed; now a link to the reliability row it meant",
    "*Performance*, *Log-prob memory at a 152k vocabulary*.": "now a link to that section of docs/performance.md",
    "Time, on a fresh clone of this 2-core machine (idle):": "docs/tiny-demo.md: 'On a fresh clone of ...'",
    "# the paper recipe (next section)": "docs/recipes.md: '(below)'",
    "| `tests/unit` | rewards": "row extended (the docs tests)",
    "| `tests/tiny` | the tiny model: generation, training, chunked": "row extended (the custom reward's test)",
    "| `tests/e2e` | 3 GRPO steps": "row says where the walk-through's lines now are (docs/data.md)",
    "| `tests/faults` | see *Reliability*": "now a link to docs/reliability.md",
    "| a save fails (disk full;": "row extended (a failed save retried once space is back)",
    "| unsafe loading and exposure |": "row extended (the secret and socket checks of a real run)",
    "| tiny offline Qwen2.5-VL (tokenizer, processor, weights)": "module path updated (its CLI is tiny_cli.py)",
    "| Ray workers (actor, reference, rollout) and the single controller |": "modules moved to runtime/ (issue 18)",
    "| sharded actor: FSDP2 / DeepSpeed ZeRO-2/3 ranks": "modules moved to backends/ and runtime/ (issue 18)",
    "`make install` 4.0 minutes, then `make demo` 6.3 minutes": "says which code it was measured on (tiny-demo.md)",
    "It printed the seed-1 row of the table above exactly": "the current code no longer does (tiny-demo.md)",
    "DeepSpeed cannot skip a step with a non-finite gradient": "no longer true: every backend skips (issue 18)",
    "| `tests/scale` | FSDP2 and DeepSpeed ZeRO-3 with 2 gloo ranks": "row extended (colocated, non-finite steps)",
    "| what is scored | every": "departures.md row now gives the original's file and line (issue 29)",
    "| box equality | exact equality": "departures.md row now gives the original's file and line (issue 29)",
    "| matching | membership test": "departures.md row now gives the original's file and line (issue 29)",
    "| duplicates | any repeated list zeroes": "departures.md row now gives the original's file and line (issue 29)",
    "| what counts as a box | any bracketed list": "departures.md row now gives the original's file and line (issue 29)",
    "| rejection | counts as correct only because": "departures.md row now gives the original's file and line (issue 29)",
    "| format | after removing whitespace around every": "departures.md row now gives the original's file and line (issue 29)",
    "| malformed ground truth | scores 0": "departures.md row now gives the original's file and line (issue 29)",
    "Rex-Thinker's tools truncate with `int()` and clamp to size - 1.": "departures.md: now a table row with the original's file and line (issue 29)",
    "Pictures are turned upright by their EXIF orientation tag in every path": "departures.md: now a table row with the original's file and line (issue 29)",
    "writes templated chain-of-thought targets for data without GPT-4o traces;": "departures.md: under 'steps the original has no counterpart for' (issue 29)",
    "**On-policy step skips the old-log-prob pass.**": "departures.md: 'The old-log-prob pass', with its line (issue 29)",
    "The fp32 parity test shows the rollout's sampling log-probs equal the actor's, so nothing is lost.": "departures.md: the same sentence, '... and a forward pass over the batch is saved' (issue 29)",
    "**Rewards can fail loudly.**": "departures.md: the original's file and line added (issue 29)",
    "EasyR1 (and so Rex-Thinker) averages each micro-batch's tokens and divides by the accumulation steps": "departures.md: the original's files and lines added (issue 29)",
}


def normalise(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](link) -> text
    text = text.replace("*", "").replace("`", "")
    return re.sub(r"\s+", " ", text).strip()


def units(readme: str) -> list[tuple[str, str]]:
    """(kind, text) of each table row, code line and prose sentence with a digit in it."""
    found: list[tuple[str, str]] = []
    in_code, paragraph = False, []

    def flush() -> None:
        prose = " ".join(paragraph)
        for sentence in re.split(r"(?<=[.;:])\s+(?=[A-Z(`*])", prose):
            if re.search(r"\d", sentence):
                found.append(("sentence", sentence))
        paragraph.clear()

    for line in readme.splitlines():
        if line.startswith("```"):
            flush()
            in_code = not in_code
        elif in_code or line.startswith("    ") and not paragraph:
            if line.strip():
                found.append(("code", line))
        elif line.startswith("|"):
            flush()
            if not re.fullmatch(r"[|\-: ]+", line):
                found.append(("table row", line))
        elif not line.strip() or line.startswith("#"):
            flush()
        else:
            if line.startswith("- "):  # a list item is a paragraph of its own
                flush()
            paragraph.append(line.strip().removeprefix("- "))
    flush()
    return found


def main(argv: list[str]) -> int:
    rev = argv[0] if argv else OLD_REV
    old = subprocess.run(["git", "show", f"{rev}:README.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    corpus = normalise("\n".join(page.read_text(encoding="utf-8") for page in pages))
    old_text = normalise(old.stdout)
    stale = [snippet for snippet in REWRITTEN if normalise(snippet) not in old_text]
    checked = units(old.stdout)
    missing = [
        (kind, text)
        for kind, text in checked
        if normalise(text) not in corpus and not any(normalise(s) in normalise(text) for s in REWRITTEN)
    ]
    for kind, text in missing:
        print(f"missing {kind}: {text[:200]}")
    for snippet in stale:
        print(f"REWRITTEN entry not in the old README: {snippet}")
    kinds = {kind: sum(1 for k, _ in checked if k == kind) for kind in ("table row", "code", "sentence")}
    print(f"{rev[:10]}:README.md: {kinds} checked, {len(missing)} missing, {len(REWRITTEN)} listed as rewritten")
    return 1 if missing or stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
