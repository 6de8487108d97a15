"""Were a step's groups sampled independently? The cross-prompt correlation of advantages at the same sample index.

    python benchmarks/sample_coupling.py RUN_DIR [RUN_DIR ...] [--out F]

Each RUN_DIR is a GRPO run made with ``logging.log_rollouts=-1`` (every sampled response in ``rollouts.jsonl``, each
group's samples in the engine's order). Per step, each group's rewards minus their mean, divided by their standard
deviation (GRPO's advantages; groups without a contrast left out), give a matrix A[prompt, j]. ``same_index`` is the
mean over steps of the mean over pairs of prompts a != b of mean_j A[a, j] A[b, j]: the correlation of the j-th
samples of two different prompts (its standard error over steps, which are independent draws). Independent sampling
makes it 0, up to noise; ``shifted`` pairs A[a, j] with A[b, j + 1] instead (the same statistic with the index
broken), the reference for what noise gives. With one seed for every request, vLLM gives the j-th sample of every
prompt the same random numbers (seed + j), and where prompts' distributions are alike their j-th samples decide alike:
``same_index`` > 0. ``effective_prompts``: the k prompts of a step count as k / (1 + (k - 1) same_index) independent
ones in the update's average (the design effect of correlated terms).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from diagnose_learning import read_rollouts, step_groups

from rexthinker_rl.utils import atomic_write_text


def step_advantages(records: list[dict]) -> np.ndarray:
    """A[prompt, j]: each group's rewards standardised (rows of groups with a contrast only)."""
    rows = []
    for group in step_groups(records).values():
        rewards = np.array([record["reward"]["overall"] for record in group])
        if rewards.std() > 0:
            rows.append((rewards - rewards.mean()) / rewards.std())
    sizes = {len(row) for row in rows}
    if len(sizes) > 1:
        raise SystemExit(f"groups of different sizes {sorted(sizes)} in one step: was rollout.n changed?")
    return np.array(rows)


def pair_products(advantages: np.ndarray, shift: int) -> list[float]:
    """mean_j A[a, j] A[b, j + shift] for every pair of rows a < b."""
    shifted = np.roll(advantages, -shift, axis=1)
    return [
        float(np.mean(advantages[a] * shifted[b]))
        for a in range(len(advantages))
        for b in range(a + 1, len(advantages))
    ]


def coupling(run_dir: Path) -> dict:
    same, shifted, prompts = [], [], []
    for _step, records in sorted(read_rollouts(run_dir).items()):
        advantages = step_advantages(records)
        if len(advantages) < 2:
            continue
        same.append(float(np.mean(pair_products(advantages, 0))))  # a step's pairs share rows: one value a step
        shifted.append(float(np.mean(pair_products(advantages, 1))))
        prompts.append(len(advantages))
    if not same:
        raise SystemExit(f"{run_dir}: no step has two groups with a contrast (was logging.log_rollouts=-1 set?)")

    def mean_se(values: list[float]) -> tuple[float, float]:
        return float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))

    (rho, rho_se), (null, null_se) = mean_se(same), mean_se(shifted)
    k = float(np.mean(prompts))
    return {
        "run": str(run_dir),
        "steps": len(prompts),
        "groups_with_contrast_per_step": k,
        "same_index": rho,
        "same_index_se": rho_se,
        "shifted": null,
        "shifted_se": null_se,
        "effective_prompts": k / (1 + (k - 1) * max(rho, 0.0)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="GRPO run folders with every rollout logged")
    parser.add_argument("--out", default="", help="write the results (JSON) here")
    args = parser.parse_args(argv)
    results = [coupling(Path(run)) for run in args.runs]
    for row in results:
        print(
            f"{row['run']}: same index {row['same_index']:+.3f} ({row['same_index_se']:.3f}), shifted "
            f"{row['shifted']:+.3f} ({row['shifted_se']:.3f}); {row['groups_with_contrast_per_step']:.1f} groups "
            f"with a contrast a step count as {row['effective_prompts']:.1f}"
        )
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
