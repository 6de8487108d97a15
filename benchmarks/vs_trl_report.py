"""The report of ``bench_vs_trl.py``: its tables, its JSON (``vs_trl*.json``) and its plots (a bar chart at one response
length, a growth plot across several)."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from benchutil import machine


def ratios_of(rows: dict[str, dict]) -> dict[str, dict]:
    """``"ours-<mode> / trl-<rollout>"``: steps/s, tokens/s and peak memory (summed PSS), ours over TRL."""
    ours = {side: row for side, row in rows.items() if side.startswith("ours-") and "error" not in row}
    theirs = {side: row for side, row in rows.items() if side.startswith("trl-") and "error" not in row}
    return {
        f"{mine} / {other}": {
            "steps_per_s": ours[mine]["steps_per_s"] / theirs[other]["steps_per_s"],
            "tokens_per_s": ours[mine]["tokens_per_s"] / theirs[other]["tokens_per_s"],
            "peak_memory": ours[mine]["peak_pss_gb"] / theirs[other]["peak_pss_gb"],
        }
        for mine in ours
        for other in theirs
    }


def print_table(args: argparse.Namespace, length: int, rows: dict[str, dict]) -> None:
    print(
        f"{args.prompts} prompts x {args.group} samples, <= {length} new tokens, {args.image_size} px images, fp32, "
        f"{args.warmup} warm-up + {args.steps} measured steps x {args.rounds} round(s)"
    )
    head = f"{'side':<26}{'median s':>9}{'min s':>8}{'max s':>8}{'steps/s':>9}{'tok/step':>9}{'tokens/s':>10}"
    print(f"{head}{'PSS GB':>8}{'RSS GB':>8}  rollout")
    for side, row in rows.items():
        if "error" in row:
            print(f"{side:<26}failed: {row['error']}")
            continue
        print(
            f"{side:<26}{row['median_s']:>9.2f}{row['min_s']:>8.2f}{row['max_s']:>8.2f}{row['steps_per_s']:>9.3f}"
            f"{row['tokens_per_step']:>9.0f}{row['tokens_per_s']:>10.0f}{row['peak_pss_gb']:>8.2f}"
            f"{row['peak_rss_gb']:>8.2f}  {row['rollout']}"
        )
    for side, row in rows.items():
        if row.get("largest_processes_gb"):
            largest = ", ".join(f"{name} {gb:.2f}" for name, gb in row["largest_processes_gb"].items())
            print(f"{side}, largest processes, peak PSS over the whole run (start-up, end included), GB: {largest}")
        if row.get("phases_median_s"):
            phases = ", ".join(f"{k} {v:.2f}" for k, v in row["phases_median_s"].items())
            print(f"{side}, median s per phase: {phases}")
    for pair, ratio in ratios_of(rows).items():
        print(
            f"{pair}: steps/s {ratio['steps_per_s']:.2f}x (target >= 2), tokens/s {ratio['tokens_per_s']:.2f}x, "
            f"peak memory {ratio['peak_memory']:.2f}x"
        )


def report(args: argparse.Namespace, rows: dict[int, dict[str, dict]], facts: dict) -> None:
    for length, by_side in rows.items():
        print_table(args, length, by_side)
    if not args.out:
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keys = ("prompts", "group", "max_tokens", "lr", "warmup", "steps", "rounds", "trl_threads", "ours", "ours_set")
    keys += ("like", "layers", "vision_layers", "image_size", "max_prompt_length", "reward")
    settings = {k: getattr(args, k) for k in keys}
    if args.like:  # a --like shape, built here or given with --model
        model = f"{args.like}, random" + (f", from {args.model}" if args.model else ", seed 0")
    else:
        model = args.model or "tiny (build_tiny_model, seed 0)"
    payload = {
        "machine": machine(),
        "load_average_at_end": os.getloadavg(),  # the machine is shared: other jobs show here
        "python": platform.python_version(),
        "settings": {**settings, "model": model},
        "model": facts,
        **facts,  # vocab_size, hidden_size, block counts at the top, as the issue reads them
        "memory": "peak of the summed PSS of the side's process tree (driver, Ray, workers, engine), sampled 4x/s",
    }
    if len(rows) == 1:  # one length: its rows and ratios at the top
        (by_side,) = rows.values()
        payload.update(rows=by_side, ours_over=ratios_of(by_side))
        sync = payload["ours_over"].get("ours-sync / trl-transformers")
        if sync:
            payload.update(steps_ratio=sync["steps_per_s"], memory_ratio=sync["peak_memory"])
    else:
        payload["by_length"] = {str(n): {"rows": r, "ours_over": ratios_of(r)} for n, r in rows.items()}
    temp = out.with_suffix(".json.tmp")
    temp.write_text(json.dumps(payload, indent=2))
    os.replace(temp, out)
    plot(rows, out.with_suffix(".png"), model)
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(rows: dict[int, dict[str, dict]], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(rows) > 1:
        plot_growth(rows, path, model, plt)
        return
    (by_side,) = rows.values()
    names = [name for name, row in by_side.items() if "error" not in row]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    colours = ["#dd8452" if name.startswith("ours-") else "#4c72b0" for name in names]
    for ax, key, label in (
        (axes[0], "steps_per_s", "GRPO steps / s"),
        (axes[1], "tokens_per_s", "generated tokens / s"),
        (axes[2], "peak_pss_gb", "peak memory, GB (PSS)"),
    ):
        ax.bar(names, [by_side[n][key] for n in names], color=colours)
        ax.set_ylabel(label)
    low = [by_side[n]["steps_per_s"] - 1 / by_side[n]["max_s"] for n in names]
    high = [1 / by_side[n]["min_s"] - by_side[n]["steps_per_s"] for n in names]
    axes[0].errorbar(names, [by_side[n]["steps_per_s"] for n in names], yerr=[low, high], fmt="none", color="black")
    fig.suptitle(f"end-to-end GRPO step, {model}, CPU (median; bars: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_growth(rows: dict[int, dict[str, dict]], path: Path, model: str, plt) -> None:
    """Step time and peak memory against the response length, a line per side."""
    lengths = sorted(rows)
    sides = {side for by_side in rows.values() for side, row in by_side.items() if "error" not in row}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for side in sorted(sides):
        have = [n for n in lengths if "error" not in rows[n].get(side, {"error": 1})]
        style = "o-" if side.startswith("ours-") else "s--"
        axes[0].plot(have, [rows[n][side]["median_s"] for n in have], style, label=side)
        axes[1].plot(have, [rows[n][side]["peak_pss_gb"] for n in have], style, label=side)
    for ax, label in ((axes[0], "step time, s (median)"), (axes[1], "peak memory, GB (PSS)")):
        ax.set_xlabel("response length, tokens")
        ax.set_ylabel(label)
        ax.set_xticks(lengths)
        ax.legend()
    fig.suptitle(f"GRPO step against response length, {model}, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def merge_growth(paths: list[str], out: Path) -> None:
    """One growth table and plot from several ``bench_vs_trl.py`` results of the same settings but the response
    length (e.g. a 3-round run at 256 tokens and a 1-round run at 128 and 512). Two results at one length add up
    side by side (e.g. TRL's from one run, ours from a rerun with ``--trl-rollout`` and no value); of two rows of one
    side the later wins, unless it failed and the earlier did not."""
    rows: dict[int, dict[str, dict]] = {}
    sources: dict[str, list[str]] = {}
    for path in paths:
        payload = json.loads(Path(path).read_text())
        lengths = payload["settings"]["max_tokens"]
        by_length = payload.get("by_length") or {str(lengths[0]): {"rows": payload["rows"]}}
        for length, entry in by_length.items():
            sides = rows.setdefault(int(length), {})
            for side, row in entry["rows"].items():
                if side not in sides or "error" in sides[side] or "error" not in row:
                    sides[side] = row
            rounds = payload["settings"]["rounds"]
            sources.setdefault(length, []).append(entry.get("source", f"{path}: {rounds} round(s)"))
    rows = dict(sorted(rows.items()))
    settings = payload["settings"]
    model = f"{settings['like']}, random" if settings.get("like") else settings["model"]
    print(f"{'tokens':>7}  {'side':<22}{'median s':>9}{'steps/s':>9}{'PSS GB':>8}")
    for length, by_side in rows.items():
        for side, row in by_side.items():
            if "error" not in row:
                print(
                    f"{length:>7}  {side:<22}{row['median_s']:>9.1f}{row['steps_per_s']:>9.4f}{row['peak_pss_gb']:>8.2f}"
                )
    growth = {
        str(n): {"rows": r, "ours_over": ratios_of(r), "source": "; ".join(sources[str(n)])} for n, r in rows.items()
    }
    merged = {key: payload[key] for key in ("machine", "python", "settings", "model")}
    merged["settings"] = {**merged["settings"], "max_tokens": list(rows), "rounds": "per length, see source"}
    temp = out.with_suffix(".json.tmp")
    temp.write_text(json.dumps({**merged, "by_length": growth}, indent=2))
    os.replace(temp, out)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_growth(rows, out.with_suffix(".png"), model, plt)
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="merge bench_vs_trl.py results at several response lengths")
    parser.add_argument("--growth", nargs="+", required=True, help="bench_vs_trl.py JSON results")
    parser.add_argument("--out", required=True, help="the merged JSON (and a PNG beside it)")
    options = parser.parse_args()
    merge_growth(options.growth, Path(options.out))
