"""Replicates of the tiny demo: does GRPO make the policy better on every seed, and at what?

    python benchmarks/bench_learning.py --seeds 5 [--first 101] [--out benchmarks/results/learning.json]

Each seed S runs the whole demo, ``SEED=S RUN=<runs>/seed_S bash launch/grpo_tiny.sh``: model weights, synthetic set,
SFT and GRPO are all seeded from S, so the replicates share nothing. Per seed it records the greedy validation reward
before GRPO (the SFT start) and at the end, the gain with its paired standard error over the held-out prompts, the
prompts that got better and worse, ``accuracy@present`` (box F1 on prompts with a target: the box choice) and
``accuracy@rejection`` (refusing where nothing matches) at both ends, the answer format, and the sampled training
reward of the first and last quarter of steps. ``by_kind`` splits the held-out greedy reward at both ends by what a
prompt asks: ``choice`` (a target among 2 or more hints: choosing the box the expression names), ``single`` (a target,
one hint), ``reject@1`` and ``reject@2+`` (nothing matches, by hint count). ``room_by_ask`` says where the reward a
seed could still gain (1 - its mean) lies, by what a prompt asks: colour, position, multi or rejection. The summary
says whether the demo's learning claim holds on every seed.

A seed whose run finished is read back, not run again (delete its folder to rerun it): an interrupted benchmark resumes.
Extra arguments after ``--`` are config overrides for SFT and GRPO (as ``launch/grpo_tiny.sh`` takes them); the
launch script's TEACHER, TEACHER_BIAS and POSITION_CUE pass through from the environment and are recorded as ``launch_env``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from benchutil import REPO, machine, synthetic_kind

from rexthinker_rl.utils import atomic_write_text

VAL_KEYS = {"reward": "val/reward", "present": "val/accuracy@present", "rejection": "val/accuracy@rejection"}
VAL_KEYS["format"] = "val/format"
WALL_FILE = "wall_s.txt"  # the demo's wall time, beside its run folders


def run_seed(seed: int, run_dir: Path, overrides: list[str]) -> None:
    """The demo for one seed: its output in ``run_dir/demo.log``, its wall time (s) in ``run_dir/wall_s.txt``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SEED": str(seed), "RUN": str(run_dir)}
    start = time.perf_counter()
    with (run_dir / "demo.log").open("w") as log:
        done = subprocess.run(
            ["bash", str(REPO / "launch" / "grpo_tiny.sh"), *overrides], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: the demo failed (exit {done.returncode}); see {run_dir / 'demo.log'}")
    atomic_write_text(run_dir / WALL_FILE, f"{time.perf_counter() - start:.1f}\n")  # read back with the run


def validations(metrics_file: Path) -> list[dict]:
    with metrics_file.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [row for row in rows if "val/reward" in row]


def prompt_kind(hints: str, category: str, answer_boxes: str) -> str:
    count = len(json.loads(hints).get(category, []))
    if not json.loads(answer_boxes):
        return "reject@1" if count == 1 else "reject@2+"
    return "single" if count == 1 else "choice"


def validation_groups(run_dir: Path, first: str, columns: list[str], kind_of) -> tuple[dict, dict, int] | None:
    """The held-out greedy rewards of every validation (``val_rewards.json`` lists the prompts in the validation
    file's order), the prompts' indices grouped by ``kind_of(row)`` over ``columns`` of val.parquet, and the prompt
    count; None when rows were left out of validation (too long): the order no longer lines up."""
    rewards = json.loads((run_dir / "grpo" / "val_rewards.json").read_text())
    rows = pq.read_table(run_dir / "data" / "val.parquet", columns=columns).to_pylist()
    if len(rows) != len(rewards[first]):
        return None
    groups: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(kind_of(row), []).append(index)
    return rewards, groups, len(rows)


def reward_by_kind(run_dir: Path, first: str, last: str) -> dict:
    """Mean held-out greedy reward per prompt kind at validation steps ``first`` and ``last``."""
    found = validation_groups(
        run_dir, first, ["hints", "category", "answer_boxes"],
        lambda row: prompt_kind(row["hints"], row["category"], row["answer_boxes"]),
    )  # fmt: skip
    if found is None:
        return {}
    rewards, groups, _ = found
    out = {}
    for kind in ("choice", "single", "reject@1", "reject@2+"):
        if picked := groups.get(kind):
            mean = {step: sum(rewards[step][i] for i in picked) / len(picked) for step in (first, last)}
            out[kind] = {"prompts": len(picked), "start": mean[first], "end": mean[last]}
    return out


def room_by_ask(run_dir: Path, first: str, last: str) -> dict:
    """Where the reward a seed could still gain lies: per thing a prompt asks (colour, position, multi, rejection;
    ``benchutil.synthetic_kind``), its prompts and the held-out reward they are short of 1 at ``first`` and ``last``,
    summed and divided by all the prompts (so the kinds add up to 1 - the mean reward)."""
    found = validation_groups(
        run_dir, first, ["referring", "answer_boxes"],
        lambda row: synthetic_kind(row["referring"], not json.loads(row["answer_boxes"])),
    )  # fmt: skip
    if found is None:
        return {}
    rewards, groups, count = found
    out = {}
    for kind in sorted(groups):
        picked = groups[kind]
        short = {step: sum(1 - rewards[step][i] for i in picked) / count for step in (first, last)}
        out[kind] = {"prompts": len(picked), "start": short[first], "end": short[last]}
    return out


def seed_record(seed: int, run_dir: Path) -> dict:
    """One seed's figures from its run folder (summary.json, metrics.jsonl; the wall time where the run wrote it)."""
    grpo = run_dir / "grpo"
    summary = json.loads((grpo / "summary.json").read_text())
    vals = validations(grpo / "metrics.jsonl")
    first, last = vals[0], vals[-1]
    record = {
        "seed": seed,
        "start": summary["val_reward_before"],
        "end": summary["val_reward_last"],
        "gain": summary["val_reward_gain"],
        "paired_se": summary["val_reward_gain_se"],
        "prompts": summary["val_prompts"],
        "prompts_better": summary["val_prompts_improved"],
        "prompts_worse": summary["val_prompts_worse"],
        "val_rewards": {str(row["step"]): row["val/reward"] for row in vals},
        "train_reward_first_quarter": summary["train_reward_first_quarter"],
        "train_reward_last_quarter": summary["train_reward_last_quarter"],
        "by_kind": reward_by_kind(run_dir, str(first["step"]), str(last["step"])),
        "room_by_ask": room_by_ask(run_dir, str(first["step"]), str(last["step"])),
    }
    for name, key in VAL_KEYS.items():
        if name != "reward":
            record[f"{name}_start"], record[f"{name}_end"] = first.get(key), last.get(key)
    if (run_dir / WALL_FILE).is_file():
        record["wall_s"] = float((run_dir / WALL_FILE).read_text())
    return record


def summarize(records: list[dict]) -> dict:
    gains = [r["gain"] for r in records]
    mean = sum(gains) / len(gains)
    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / (len(gains) - 1)) if len(gains) > 1 else float("nan")
    ratios = [r["gain"] / r["paired_se"] for r in records if r["paired_se"] > 0]
    return {
        "seeds": len(records),
        "mean_gain": mean,
        "seed_sd": sd,
        "smallest_gain_in_se": min(ratios) if ratios else float("nan"),
        "seeds_gain_over_3_se": sum(ratio > 3 for ratio in ratios),
        "seeds_present_up": sum(r["present_end"] > r["present_start"] for r in records),
        "seeds_rejection_up": sum(r["rejection_end"] > r["rejection_start"] for r in records),
        "seeds_choice_up": sum(
            r["by_kind"]["choice"]["end"] > r["by_kind"]["choice"]["start"]
            for r in records
            if "choice" in r["by_kind"]
        ),
        "seeds_last_val_below_first": sum(r["end"] < r["start"] for r in records),
        "seeds_train_reward_up": sum(
            r["train_reward_last_quarter"] > r["train_reward_first_quarter"] for r in records
        ),
    }


def table(records: list[dict]) -> str:
    head = (
        "| seed | val reward: start -> end | gain | paired SE | better / worse | accuracy@present | "
        "accuracy@rejection | reward on box choice (2 hints) | training reward, first / last quarter |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {r['seed']} | {r['start']:.3f} -> {r['end']:.3f} | **{r['gain']:+.3f}** | {r['paired_se']:.3f} "
        f"({r['gain'] / r['paired_se']:.1f} SE) | {r['prompts_better']} / {r['prompts_worse']} | "
        f"{r['present_start']:.3f} -> {r['present_end']:.3f} | {r['rejection_start']:.3f} -> {r['rejection_end']:.3f} "
        f"| {_span(r['by_kind'].get('choice'))} "
        f"| {r['train_reward_first_quarter']:.3f} / {r['train_reward_last_quarter']:.3f} |"
        for r in records
    ]
    return "\n".join([head, *rows])


def _span(kind: dict | None) -> str:
    return "" if not kind else f"{kind['start']:.3f} -> {kind['end']:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds")
    parser.add_argument("--first", type=int, default=101, help="the first seed (then first+1, ...)")
    parser.add_argument("--runs", default="runs/learning", help="folder of the seeds' run folders")
    parser.add_argument("--out", default="benchmarks/results/learning.json")
    parser.add_argument("overrides", nargs="*", help="config overrides for SFT and GRPO (after --)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: at least 1")
    records = []
    for seed in range(args.first, args.first + args.seeds):
        run_dir = Path(args.runs) / f"seed_{seed}"
        finished = (run_dir / "grpo" / "summary.json").is_file()
        if not finished:
            run_seed(seed, run_dir, args.overrides)
        records.append(seed_record(seed, run_dir))
        print(f"seed {seed}: {records[-1]['start']:.3f} -> {records[-1]['end']:.3f}", flush=True)
    # The SFT start, and with it the gains, move with the float summation order of the machine (docs/tiny-demo.md).
    launch_env = {name: os.environ[name] for name in ("TEACHER", "TEACHER_BIAS", "POSITION_CUE") if name in os.environ}
    result = {"machine": machine(), "overrides": args.overrides, "launch_env": launch_env, "per_seed": records}
    result["summary"] = summarize(records)
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(table(records))
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
