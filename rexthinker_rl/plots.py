"""Training curves from a run's metrics.jsonl: ``python -m rexthinker_rl.plots RUN_DIR`` writes RUN_DIR/reward.png."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_rewards(run_dir: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    records = read_metrics(run / "metrics.jsonl")
    train = [(r["step"], r["reward/overall"]) for r in records if "reward/overall" in r]
    val = [(r["step"], r["val/reward"]) for r in records if isinstance(r.get("val/reward"), float)]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train reward (sampled, mean of group)", alpha=0.8)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation reward (greedy)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward")
    ax.set_title(run.name)
    ax.grid(alpha=0.3)
    ax.legend()
    out = run / "reward.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(f"plot written to {plot_rewards(sys.argv[1])}")
