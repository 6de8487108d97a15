"""Training curves from a run's metrics.jsonl: reward, KL to the reference, the off-policy share (PPO clipping, truncated
importance weights, sampler/actor log-prob gap) and response length, side by side.

The trainer redraws ``RUN_DIR/curves.png`` at every checkpoint and at the end; ``python -m rexthinker_rl.run.plots RUN_DIR``
redraws it by hand (e.g. while a run is going).
"""

from __future__ import annotations

import io
import json
import math
import sys
import warnings
from pathlib import Path

from rexthinker_rl.utils import atomic_write_bytes

CURVES = "curves.png"


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(records: list[dict], key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def rolling_mean(points: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """Trailing mean over the last ``window`` points (fewer at the start), at each point's step."""
    out = []
    for index, (step, _) in enumerate(points):
        values = [value for _, value in points[max(0, index - window + 1) : index + 1]]
        out.append((step, sum(values) / len(values)))
    return out


# The panels, left to right: y label, then (metric, legend label, line style) per line, and what an empty panel says.
PANELS = [
    (
        "reward",
        [("reward/overall", "train (sampled, mean of group)", "-"), ("val/reward", "validation (greedy)", "o-")],
        "not logged in this run",
    ),
    # The KL to the old policy (actor/approx_kl) is not drawn: with one update a step it is 0 by construction.
    (
        "KL to the reference",
        [
            ("rollout/kl_to_ref", "sampler's KL to the reference (starting weights)", "o-"),
            ("actor/kl_loss", "KL loss term (actor)", "-"),
        ],
        "no reference in this run\n(algorithm.kl_mode=none; logging.kl_to_ref_freq=N\nlogs the KL every N steps)",
    ),
    (
        "off-policy share",
        [
            ("actor/clipfrac", "PPO clip fraction", "-"),
            ("rollout/is_clipfrac", "importance weights truncated", "-"),
            ("rollout/logprob_diff_mean", "mean |log-prob sampler - actor|", "-"),
        ],
        "not logged in this run",
    ),
    (
        "response tokens",
        [("response_length/mean", "mean", "-"), ("response_length/max", "max", "-")],
        "not logged in this run",
    ),
]


def plot_curves(run_dir: str | Path) -> Path:
    """Draw reward (sampled train and greedy validation), KL to the reference, the off-policy share and response
    length; returns the PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    records = read_metrics(run / "metrics.jsonl")
    fig, axes = plt.subplots(1, len(PANELS), figsize=(20, 4))
    for ax, (ylabel, lines, absent) in zip(axes, PANELS, strict=True):
        drawn = False
        for key, label, style in lines:
            points = _series(records, key)
            if points:
                ax.plot(*zip(*points, strict=True), style, label=label, alpha=0.85)
                drawn = True
            if key == "reward/overall" and len(points) >= 8:
                # A few prompts a step make the sampled reward jumpy: the trend is in its running mean.
                window = min(10, len(points) // 4)
                smooth = rolling_mean(points, window)
                ax.plot(
                    *zip(*smooth, strict=True), "-", color="black", lw=2, label=f"train, mean of last {window} steps"
                )
        if not drawn:
            ax.text(0.5, 0.5, absent, ha="center", va="center", transform=ax.transAxes)
        else:
            ax.legend(fontsize=8)
        ax.set_xlabel("GRPO step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(run.name)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    out = run / CURVES
    atomic_write_bytes(out, buffer.getvalue())  # a viewer never sees half a PNG
    return out


def redraw_curves(run_dir: Path) -> None:
    """Redraw curves.png during a run; a plotting problem is reported, never allowed to stop training."""
    try:
        plot_curves(run_dir)
    except Exception as error:  # noqa: BLE001 - matplotlib failures must not cost a training run
        warnings.warn(f"could not draw {run_dir / CURVES}: {error!r}", stacklevel=2)


if __name__ == "__main__":
    print(f"plot written to {plot_curves(sys.argv[1])}")
