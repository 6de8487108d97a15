"""The AdamW step at a real shape: time and peak memory of each ``actor.optimizer_impl`` kernel, side by side.

The trainable parameters are those the actor trains on a named Qwen2.5-VL shape with few blocks (the vision tower
frozen, as ``model.freeze_vision_tower`` does; the tied embedding once), float32 weights and gradients (random), and
AdamW with the actor's defaults. Each kernel runs in a process of its own (its peak resident memory is its own),
kernels interleaved over the rounds; per kernel, the median step time over the rounds with min/max, and the peak
resident memory (VmHWM) of the measured steps against the weights and gradients alone. Ratios are against
``for-loop``, torch's default on CPU and what TRL's ``adamw_torch`` runs there.

    python benchmarks/bench_optimizer.py --like qwen2.5-vl-3b --layers 2 --vision-layers 2 \\
        --out benchmarks/results/optimizer.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rexthinker_rl.utils import atomic_write_text, host_memory_gb, reset_host_peak

KERNELS = ("for-loop", "foreach", "fused")


def measure(like: str, layers: int, vision_layers: int, kernel: str, steps: int) -> dict:
    """In this process: build the trainable tensors, take one step (AdamW's moments appear), then time ``steps``."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from rexthinker_rl.model.loading import vision_tower
    from rexthinker_rl.model.shapes import shape_config
    from rexthinker_rl.train.policy import ADAMW_KERNELS

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(shape_config(like, layers, vision_layers))
    vision_tower(model).requires_grad_(False)
    shapes = [p.shape for p in model.parameters() if p.requires_grad]  # tied tensors once, as the optimizer sees them
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator) * 0.02) for shape in shapes]
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator) * 1e-3
    held = host_memory_gb()[1]
    optimizer = torch.optim.AdamW(params, lr=1e-6, weight_decay=1e-2, **ADAMW_KERNELS[kernel])
    optimizer.step()
    reset_host_peak()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return {
        "parameters": sum(p.numel() for p in params),
        "step_s": statistics.median(times),
        "weights_and_grads_gb": held,
        "peak_gb": host_memory_gb()[1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--like", default="qwen2.5-vl-3b")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per kernel and round (median taken)")
    parser.add_argument("--out", default="")
    parser.add_argument("--one", choices=KERNELS, help=argparse.SUPPRESS)  # a child process: one kernel, JSON out
    args = parser.parse_args(argv)
    shape = (args.like, args.layers, args.vision_layers)
    if args.one:
        print(json.dumps(measure(*shape, args.one, args.steps)))
        return 0
    runs: dict[str, list[dict]] = {kernel: [] for kernel in KERNELS}
    for round_index in range(args.rounds):
        for kernel in KERNELS:
            child = [sys.executable, __file__, "--one", kernel, "--steps", str(args.steps), "--like", args.like]
            child += ["--layers", str(args.layers), "--vision-layers", str(args.vision_layers)]
            output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
            runs[kernel].append(json.loads(output.strip().splitlines()[-1]))
            print(f"round {round_index + 1} {kernel:9s} {runs[kernel][-1]}", flush=True)
    rows = {}
    for kernel, measured in runs.items():
        times = [run["step_s"] for run in measured]
        rows[kernel] = {
            "step_s_median": statistics.median(times),
            "step_s_min": min(times),
            "step_s_max": max(times),
            "peak_gb": max(run["peak_gb"] for run in measured),
            "weights_and_grads_gb": max(run["weights_and_grads_gb"] for run in measured),
        }
    base = rows["for-loop"]
    for kernel, row in rows.items():
        row["time_over_for_loop"] = row["step_s_median"] / base["step_s_median"]
        row["peak_over_for_loop"] = row["peak_gb"] / base["peak_gb"]
        print(
            f"{kernel:9s} step {row['step_s_median']:.3f} s ({row['step_s_min']:.3f}-{row['step_s_max']:.3f}), "
            f"x{row['time_over_for_loop']:.2f}; peak {row['peak_gb']:.2f} GB (weights + grads "
            f"{row['weights_and_grads_gb']:.2f}), x{row['peak_over_for_loop']:.2f}"
        )
    if args.out:
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average_at_end": list(os.getloadavg()),  # another job on the cores slows every kernel alike
            "settings": {**vars(args), "dtype": "float32", "lr": 1e-6, "weight_decay": 1e-2},
            "parameters": runs["fused"][0]["parameters"],
            "kernels": rows,
        }
        atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
