"""trainer.pipeline=one_step_off vs sync: GRPO steps/s of our trainer, side by side, in two CPU placements.

- split: the rollout worker pinned to core 0 (rollout.cpus=[0]), the actor to core 1 (actor.cpus=[1]): generation and
  training have resources of their own, the CPU analogue of separate rollout GPUs. The pipelined step is bounded by
  the slower of the two phases; the script also prints that bound, from the sync run's own phase times.
- shared: no pinning, every worker on both cores (today's default).

Same tiny Qwen2.5-VL (built here, or ``--model``), synthetic prompts with 112 px images, ``--prompts`` x ``--group``
samples of at most ``--max-tokens`` tokens a step, the default reward, no KL reference, no validation or checkpoints.
A step is timed from the end of the previous step to the end of this one; the first ``--warmup`` steps are left out.
Every run is a process of its own; each round runs the four (placement, pipeline) pairs in an order that alternates
between rounds, so that machine noise hits both modes alike. Figures: the median step of each run, then the median
(and min/max) over rounds; a speedup is sync's median step over one_step_off's.

    .venv/bin/python benchmarks/bench_pipeline.py --out benchmarks/results/pipeline.json
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
from pathlib import Path

from benchutil import PIXELS, REPO, prepare_model, run_clocked, tiny_overrides

PLACEMENTS = {"split": ["rollout.cpus=[0]", "actor.cpus=[1]"], "shared": []}
PIPELINES = ("sync", "one_step_off")


def config_for(args: argparse.Namespace, placement: str, pipeline: str, work: Path, run_dir: str):
    from rexthinker_rl.config import load_config

    sizes = (args.prompts, args.group, args.max_tokens, args.warmup + args.steps)
    overrides = tiny_overrides(work / "model", work / "data" / "train.parquet", run_dir, *sizes)
    return load_config(
        REPO / "configs/grpo_tiny.yaml", [*overrides, f"trainer.pipeline={pipeline}", *PLACEMENTS[placement]]
    )


def run_variant(args: argparse.Namespace) -> None:
    """Child process: one (placement, pipeline) run; its step periods and phase times written to ``--result``."""
    work = Path(args.workdir)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_ADDRESS", "local")  # a fresh local Ray, never a cluster someone started
    for name, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        os.environ.setdefault(name, str(work / ".cache" / sub))
    placement, pipeline = args.variant.split("/")
    periods, steps, _ = run_clocked(
        config_for(args, placement, pipeline, work, str(Path(args.result).with_suffix("")))
    )
    phases = [{k.removeprefix("timing/"): v for k, v in h.items() if k.startswith("timing/")} for h in steps]
    Path(args.result).write_text(json.dumps({"periods_s": periods, "phases_s": phases}))


def spawn(args: argparse.Namespace, variant: str, work: Path, round_index: int) -> dict:
    name = variant.replace("/", "-")
    result, log = work / f"{name}-{round_index}.json", work / f"{name}-{round_index}.log"
    sizes = ["--prompts", args.prompts, "--group", args.group, "--max-tokens", args.max_tokens]
    sizes += ["--warmup", args.warmup, "--steps", args.steps]
    command = [sys.executable, __file__, "--variant", variant, "--workdir", work, "--result", result, *sizes]
    print(f"  round {round_index + 1}: {variant} ... (log: {log})", flush=True)
    with log.open("w") as handle:
        done = subprocess.run([str(c) for c in command], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        raise SystemExit(f"{variant} failed (exit {done.returncode}); last lines of {log}:\n" + "\n".join(lines[-15:]))
    figures = json.loads(result.read_text())
    return {key: values[args.warmup :] for key, values in figures.items()}


def _median_phase(runs: list[dict], key: str) -> float:
    return statistics.median(statistics.median(step[key] for step in run["phases_s"]) for run in runs)


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per variant: the median step of each round's run, their median/min/max; speedups and the split bound."""
    rows = {}
    for variant, variant_runs in runs.items():
        medians = [statistics.median(run["periods_s"]) for run in variant_runs]
        rows[variant] = {
            "median_step_s": statistics.median(medians),
            "min_step_s": min(medians),
            "max_step_s": max(medians),
            "round_medians_s": medians,
            "steps_per_s": 1 / statistics.median(medians),
            "phases_median_s": {
                key: _median_phase(variant_runs, key) for key in variant_runs[0]["phases_s"][0] if key != "step"
            },
        }
    out: dict = {"variants": rows}
    for placement in PLACEMENTS:
        sync, piped = rows[f"{placement}/sync"], rows[f"{placement}/one_step_off"]
        out[f"{placement}_speedup"] = sync["median_step_s"] / piped["median_step_s"]
        ratios = [s / p for s, p in zip(sync["round_medians_s"], piped["round_medians_s"], strict=True)]
        out[f"{placement}_speedup_min"], out[f"{placement}_speedup_max"] = min(ratios), max(ratios)
    # The bound of the split placement: the slower phase alone, from the sync run (generation on core 0; the rest of
    # a step, reward, log-probs, update and sync, on core 1 and the controller).
    phases = rows["split/sync"]["phases_median_s"]
    generate = phases["generate"]
    rest = rows["split/sync"]["median_step_s"] - generate
    out["split_slower_phase_s"] = max(generate, rest)
    out["split_generate_s"], out["split_rest_s"] = generate, rest
    out["split_bound_ratio"] = rows["split/one_step_off"]["median_step_s"] / out["split_slower_phase_s"]
    return out


def report(args: argparse.Namespace, summary: dict) -> None:
    print(
        f"{args.prompts} prompts x {args.group} samples, <= {args.max_tokens} new tokens, fp32, "
        f"{args.warmup} warm-up + {args.steps} measured steps x {args.rounds} round(s)"
    )
    print(f"{'variant':<22}{'median s':>9}{'min s':>8}{'max s':>8}{'steps/s':>9}  generate  actor_idle  rollout_idle")
    for variant, row in summary["variants"].items():
        phases = row["phases_median_s"]
        print(
            f"{variant:<22}{row['median_step_s']:>9.3f}{row['min_step_s']:>8.3f}{row['max_step_s']:>8.3f}"
            f"{row['steps_per_s']:>9.3f}  {phases['generate']:>8.3f}  {phases['actor_idle']:>10.3f}"
            f"  {phases['rollout_idle']:>12.3f}"
        )
    for placement in PLACEMENTS:
        print(
            f"{placement}: one_step_off {summary[f'{placement}_speedup']:.2f}x sync's steps/s "
            f"(rounds {summary[f'{placement}_speedup_min']:.2f}-{summary[f'{placement}_speedup_max']:.2f})"
        )
    print(
        f"split bound: slower phase alone {summary['split_slower_phase_s']:.3f} s (generate "
        f"{summary['split_generate_s']:.3f}, the rest {summary['split_rest_s']:.3f}); pipelined step "
        f"{summary['split_bound_ratio']:.2f}x it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model folder (default: build the tiny model)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=64, help="response cap")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the figures (>= 1)")
    parser.add_argument("--steps", type=int, default=5, help="measured steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per variant (>= 3 for a median with min/max)")
    parser.add_argument("--out", default="", help="write the JSON results here")
    parser.add_argument("--variant", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args)
        return
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1 (the first step's period includes start-up)")
    if (os.cpu_count() or 1) < 2:
        parser.error("the split placement needs 2 cores")
    variants = [f"{placement}/{pipeline}" for placement in PLACEMENTS for pipeline in PIPELINES]
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        work = Path(tmp)
        from data_tools.synthetic import make_synthetic_dataset

        prepare_model(args.model, work)
        make_synthetic_dataset(work / "data", args.prompts * (args.warmup + args.steps), 0, 0, 112, PIXELS, PIXELS)
        runs: dict[str, list[dict]] = {variant: [] for variant in variants}
        for round_index in range(args.rounds):
            for variant in variants if round_index % 2 == 0 else variants[::-1]:
                runs[variant].append(spawn(args, variant, work, round_index))
    summary = summarize(runs)
    report(args, summary)
    if args.out:
        record = {"machine": platform.machine(), "cores": os.cpu_count(), "args": vars(args) | {"out": args.out}}
        Path(args.out).write_text(json.dumps(record | summary, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
