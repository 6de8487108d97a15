"""The docs cannot drift: the configuration reference equals what the dataclasses generate and names every key, every
relative link in README.md and docs/*.md resolves (file and heading), and the README stays a front door."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from rexthinker_rl.config import doc as config_doc
from rexthinker_rl.config import valid_keys

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)


def test_configuration_reference_is_current():
    page = ROOT / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == config_doc.render(), (
        "docs/configuration.md is stale: run `python -m rexthinker_rl.config_doc` (make docs) and commit it"
    )


def test_configuration_reference_names_every_key_once():
    page = config_doc.render()
    rows = re.findall(r"^\| `([^`]+)` \|", page, re.MULTILINE)
    keys = [key for key in valid_keys() if key.split(".")[0] not in config_doc.NOT_SETTABLE]
    leaves = [key for key in keys if not any(other.startswith(key + ".") for other in keys)]
    assert sorted(set(rows)) == sorted(rows)  # no key twice
    # reward.components entries are documented as reward.components[].<field>; every other key by its own name.
    assert len(leaves) > 100 and set(leaves) <= set(rows), sorted(set(leaves) - set(rows))


def _anchors(text: str) -> set[str]:
    """Heading ids as GitHub makes them (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", text), re.MULTILINE):
        slug = config_doc.anchor(heading.replace("`", ""))
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in LINK.finditer(FENCE.sub("", text)):
            target = match.group(1)
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path_part, _, fragment = target.partition("#")
            resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not resolved.exists():
                broken.append(f"{where}: no such file")
            elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved.read_text("utf-8")):
                broken.append(f"{where}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    assert len(PAGES) > 5 and not broken, "\n".join(broken)


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines: move detail into a docs/ page"
    linked = {Path(target).name for target in re.findall(r"\]\(docs/([\w.-]+\.md)", "\n".join(lines))}
    unlinked = sorted(page.name for page in PAGES[1:] if page.name not in linked)
    assert not unlinked, f"docs pages the README does not link to: {unlinked}"


def test_readme_learning_table_is_what_learning_json_says():
    """The README's table of the demo's replicates comes from benchmarks/results/learning.json (issue 27): each seed's
    start, end, gain, standard error and prompts better / worse, as rounded there."""
    import json

    runs = json.loads((ROOT / "benchmarks" / "results" / "learning.json").read_text())["per_seed"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for run in runs:
        row = (
            f"| {run['seed']} | {run['start']:.3f} -> {run['end']:.3f} | **{run['gain']:+.3f}** | "
            f"{run['paired_se']:.3f} ({run['gain'] / run['paired_se']:.1f} SE) | "
            f"{run['prompts_better']} / {run['prompts_worse']} |"
        )
        assert row in readme, f"README.md has no row {row!r} for seed {run['seed']} of learning.json"
    assert len(runs) == 5
