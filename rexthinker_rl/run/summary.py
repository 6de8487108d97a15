"""The end of a run in numbers: ``summary.json`` (validation reward before and after, with its paired standard error
over prompts, and the training-reward trend) and the lines ``rexthinker-train`` prints from it."""

from __future__ import annotations

import math


def summarize(history: list[dict[str, float]], val_rewards: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Validation reward before training (step 0) and at the end, and the training-reward trend: summary.json.

    With the per-prompt validation rewards (``{step: [reward per prompt]}``), the gain also gets its paired standard
    error over prompts, ``std(after - before) / sqrt(n)``: how much the gain would move on another draw of prompts.
    """
    val = [(h["step"], h["val/reward"]) for h in history if "val/reward" in h and math.isfinite(h["val/reward"])]
    train = [h["reward/overall"] for h in history if "reward/overall" in h]
    quarter = max(1, len(train) // 4)
    before = next((reward for step, reward in val if step == 0), float("nan"))
    last = val[-1][1] if val else float("nan")
    summary = {
        "steps": sum(1 for h in history if "reward/overall" in h),
        "val_reward_before": before,
        "val_reward_last": last,
        "val_reward_gain": last - before,
        "train_reward_first_quarter": sum(train[:quarter]) / quarter if train else float("nan"),
        "train_reward_last_quarter": sum(train[-quarter:]) / quarter if train else float("nan"),
    }
    first, final = (val_rewards or {}).get("0"), (val_rewards or {}).get(str(val[-1][0])) if val else None
    if first and final and len(first) == len(final) and len(first) > 1 and val[-1][0] != 0:
        paired = paired_gain(first, final)
        summary["val_prompts"] = paired["prompts"]
        summary["val_reward_gain_se"] = paired["se"]
        summary["val_prompts_improved"] = paired["improved"]
        summary["val_prompts_worse"] = paired["worse"]
    return summary


def paired_gain(before: list[float], after: list[float]) -> dict[str, float]:
    """The gain from ``before`` to ``after`` (a score per prompt, at least two prompts, the same prompts in the same
    order), its paired standard error ``std(after - before) / sqrt(n)`` (NaN for one prompt), and how many prompts got
    better and worse."""
    diffs = [b - a for a, b in zip(before, after, strict=True)]
    mean = sum(diffs) / len(diffs)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)) if len(diffs) > 1 else math.nan
    return {
        "prompts": len(diffs),
        "gain": mean,
        "se": std / math.sqrt(len(diffs)),
        "improved": sum(d > 0 for d in diffs),
        "worse": sum(d < 0 for d in diffs),
    }


def describe_summary(summary: dict[str, float]) -> str:
    """The end-of-run lines: validation reward before -> after (with its paired noise) and the training-reward trend."""
    lines = []
    if math.isfinite(summary.get("val_reward_gain", float("nan"))):
        line = (
            f"validation reward (greedy): before {summary['val_reward_before']:.3f} -> after "
            f"{summary['val_reward_last']:.3f}, gain {summary['val_reward_gain']:+.3f}"
        )
        if "val_reward_gain_se" in summary:
            se = summary["val_reward_gain_se"]
            ratio = f", {summary['val_reward_gain'] / se:.1f} SE" if se > 0 else ""
            line += (
                f" (paired standard error over {summary['val_prompts']} prompts {se:.3f}{ratio}; "
                f"{summary['val_prompts_improved']} prompts better, {summary['val_prompts_worse']} worse)"
            )
        lines.append(line)
    if math.isfinite(summary.get("train_reward_first_quarter", float("nan"))):
        lines.append(
            f"training reward (sampled): first quarter of steps {summary['train_reward_first_quarter']:.3f} -> "
            f"last quarter {summary['train_reward_last_quarter']:.3f}"
        )
    return "\n".join(lines)
