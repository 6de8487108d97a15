"""Reward throughput: milliseconds per 1000 completions for each reward function, on one core.

Completions are synthetic but shaped like real ones (a reasoning block that quotes the hint boxes, then an
answer): exact, jittered, extra and missing boxes, rejections, truncated and garbage outputs. As in GRPO,
each ground truth is shared by a group of completions.

    python benchmarks/bench_rewards.py                 # 10,000 completions, prints a table
    python benchmarks/bench_rewards.py --out           # also writes bench_rewards.json next to this script
    python benchmarks/bench_rewards.py --n 2000 --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rewards.box import iou_f1
from rewards.composite import DEFAULT_COMPONENTS, build_reward
from rewards.format import format_reward
from rewards.parsing import REJECTION_TEXT
from rewards.rejection import rejection_reward
from rewards.rexthinker import rexthinker_reward

FRAME = (644, 476)  # a typical smart_resize output (multiples of 28)
GROUP_SIZE = 8


def random_box(rng: random.Random) -> list[int]:
    width, height = FRAME
    x0, y0 = rng.randrange(0, width - 40), rng.randrange(0, height - 40)
    return [x0, y0, rng.randrange(x0 + 20, width), rng.randrange(y0 + 20, height)]


def answer_text(boxes: list[list[int]]) -> str:
    if not boxes:
        return REJECTION_TEXT
    return "```json\n" + json.dumps([{"bbox_2d": box, "label": "person"} for box in boxes]) + "\n```"


def reasoning(rng: random.Random, hints: list[list[int]]) -> str:
    checks = "\n".join(f"- Person {i + 1} {box}: {'matches' if rng.random() < 0.5 else 'does not match'} the description, "
                       "because the clothing and the position differ from what is asked." for i, box in enumerate(hints))  # fmt: skip
    return (
        "OK, the user needs us to detect the person described. To accomplish this task, I need to check each "
        f"candidate.\n## Planning\nCheck the {len(hints)} candidates one by one.\n## Action\n{checks}\n"
        "## Summarization\nThe matching candidates are listed in the answer."
    )


def make_completion(rng: random.Random, gt_boxes: list[list[int]], hints: list[list[int]]) -> str:
    """One completion of a randomly chosen kind."""
    kind = rng.choice(["exact", "exact", "jitter", "extra", "missing", "reject", "truncated", "garbage", "spaced"])
    boxes = [list(box) for box in gt_boxes]
    if kind == "jitter":
        boxes = [[c + rng.randint(-8, 8) for c in box] for box in boxes]
    elif kind == "extra":
        boxes.append(random_box(rng))
    elif kind == "missing":
        boxes = boxes[1:]
    elif kind == "reject":
        boxes = []
    text = f"<think>{reasoning(rng, hints)}</think><answer>{answer_text(boxes)}</answer>"
    if kind == "truncated":
        return text[: rng.randrange(len(text))]
    if kind == "garbage":
        return "".join(rng.choice("[]{}<>/,.:0123456789 abcdefthinkanswer\n") for _ in range(rng.randrange(50, 800)))
    if kind == "spaced":
        return text.replace("<think>", "< think >").replace("</answer>", "</ answer >")
    return text


def make_inputs(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    inputs: list[dict] = []
    row = 0
    while len(inputs) < count:
        gt_boxes = [] if rng.random() < 0.2 else [random_box(rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        hints = gt_boxes + [random_box(rng) for _ in range(rng.randrange(1, 5))]
        rng.shuffle(hints)
        metadata = {"image_size": [1288, 952], "resized_size": list(FRAME), "row_id": f"row{row}"}
        metadata["hints"] = {"person": hints}
        for _ in range(min(GROUP_SIZE, count - len(inputs))):
            inputs.append(
                {
                    "response": make_completion(rng, gt_boxes, hints),
                    "ground_truth": answer_text(gt_boxes),
                    "metadata": metadata,
                }
            )
        row += 1
    return inputs


REWARDS: dict[str, Callable[[list[dict]], list[dict]]] = {
    "box iou_f1 (hungarian @0.5)": iou_f1,
    "box iou_f1 (greedy, coco 0.5:0.95)": lambda inputs: iou_f1(inputs, matching="greedy", iou_thresholds="coco"),
    "format_reward": format_reward,
    "format_reward (sections + strict)": lambda inputs: format_reward(
        inputs, require_sections=True, strict_answer=True
    ),
    "rejection_reward": rejection_reward,
    "rexthinker_reward (paper parity)": rexthinker_reward,
    "default composite (0.9 box + 0.1 format)": build_reward(components=DEFAULT_COMPONENTS),
}


def time_reward(reward: Callable, inputs: list[dict], repeats: int) -> float:
    """Best wall time in seconds over ``repeats`` runs (the minimum is the least disturbed by other load)."""
    reward(inputs[:100])  # warm up imports and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        reward(inputs)
        best = min(best, time.perf_counter() - start)
    return best


def write_json_atomic(path: Path, payload: dict) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
    os.replace(handle.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="completions to score (default 10000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per reward; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", nargs="?", const=str(Path(__file__).with_suffix(".json")), default=None, help="write results as JSON"
    )
    args = parser.parse_args()

    inputs = make_inputs(args.n, args.seed)
    mean_chars = sum(len(item["response"]) for item in inputs) / len(inputs)
    print(
        f"{args.n} completions (mean {mean_chars:.0f} chars, groups of {GROUP_SIZE}), best of {args.repeats}, one core"
    )
    print(f"{'reward':44s} {'total s':>9s} {'ms / 1000':>10s}")
    results = {}
    for name, reward in REWARDS.items():
        seconds = time_reward(reward, inputs, args.repeats)
        results[name] = {"seconds": seconds, "ms_per_1000": 1000 * seconds / args.n * 1000}
        print(f"{name:44s} {seconds:9.3f} {results[name]['ms_per_1000']:10.1f}")
    if args.out:
        payload = {
            "n": args.n,
            "repeats": args.repeats,
            "seed": args.seed,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "results": results,
        }
        write_json_atomic(Path(args.out), payload)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
