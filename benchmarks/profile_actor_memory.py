"""Where the actor's resident memory goes during one GRPO update at a real shape, phase by phase.

One process, no Ray, no engine: the actor's own ``Policy`` (the config ``bench_vs_trl.py --like`` runs: fp32, AdamW,
frozen vision tower, every row in one micro-batch) on ``--prompts`` x ``--group`` sequences of a 448 px image (256
image tokens) and ``--response`` response tokens. The update's steps run one at a time, as ``Policy._update_mini_batch``
runs them (response log-probs with entropy, GRPO loss, backward, the guarded optimizer step); before each the
process's peak resident size (VmHWM) is reset, so each phase reports its own peak and what it left resident. Two
updates: the first creates AdamW's moments, the second is the steady state a run repeats. Then ``Policy.update`` whole,
as a check that the phases add up to the real path's peak.

    python benchmarks/profile_actor_memory.py --like qwen2.5-vl-3b --out benchmarks/results/actor_memory.json
    python benchmarks/profile_actor_memory.py --model runs/shape3b ...     # reuse a built --like model
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from benchutil import REPO, like_model_dir, machine
from PIL import Image

from rexthinker_rl.utils import atomic_write_text, host_memory_gb, reset_host_peak

GB = 2**30


class Phases:
    """Runs named phases, each with the peak it reached and the resident size it left."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def run(self, name: str, work, *args):
        before = host_memory_gb()[0]
        reset_host_peak()
        start = time.perf_counter()
        result = work(*args)
        seconds = time.perf_counter() - start
        after, peak = host_memory_gb()
        self.rows.append({"phase": name, "before_gb": before, "peak_gb": peak, "after_gb": after, "s": seconds})
        print(
            f"{name:34s} before {before:6.2f}  peak {peak:6.2f}  after {after:6.2f} GB  ({seconds:.1f} s)", flush=True
        )
        return result


def make_batch(model_dir: str, rows: int, response: int, image_size: int):
    from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
    from rexthinker_rl.model.loading import load_processor

    pixels = image_size**2
    processor = load_processor(model_dir, pixels, pixels)
    question = 'Hint: Object and its coordinates in this image: {"circle": [[10, 20, 90, 120]]}\nPlease detect the red circle.'
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    encoded = encode_prompts(processor, [text], [Image.new("RGB", (image_size, image_size), (200, 40, 40))])
    generator = torch.Generator().manual_seed(0)
    # Response ids below the special tokens (ordinary text), exactly ``response`` long: the random model never stops.
    responses = torch.randint(200, 4000, (rows, response), generator=generator).tolist()
    batch = build_sequence_batch(encoded, [0] * rows, responses, processor.tokenizer.pad_token_id)
    batch.advantages = torch.randn(rows, generator=generator)
    return batch


def one_update(phases: Phases, policy, mini_batch, label: str) -> None:
    """``Policy._update_mini_batch``'s steps one at a time (one micro-batch: the benchmark's setting)."""
    from rexthinker_rl.algo import algorithms

    policy.model.train()
    policy.optimizer.zero_grad(set_to_none=True)
    (micro,) = mini_batch.micro_batches
    micro = micro.to_device(policy.device)
    logprobs, entropy = phases.run(f"{label}: forward (log-probs)", policy._response_logprobs, micro, True)
    loss = algorithms.grpo_loss(
        policy.loss, logprobs, micro.old_logprobs, micro.advantages, micro.response_mask, mini_batch.norms, entropy,
        micro.ref_logprobs, micro.rollout_logprobs,
    )  # fmt: skip
    total = loss.total
    del logprobs, entropy, loss  # what the backward frees is then gone, as in the trainer's loop
    phases.run(f"{label}: backward", policy.backend.backward, total)
    del total
    phases.run(f"{label}: optimizer step", policy._step)


def profile(args: argparse.Namespace, model_dir: str) -> dict:
    from rexthinker_rl.algo.batch import split_mini_batches
    from rexthinker_rl.config import load_config
    from rexthinker_rl.train.policy import make_policy

    rows = args.prompts * args.group
    config = load_config(
        REPO / "configs/grpo_tiny.yaml",
        [
            f"model.path={model_dir}",
            f"data.rollout_batch_size={args.prompts}",
            f"rollout.n={args.group}",
            f"actor.global_batch_size={args.prompts}",
            f"actor.micro_batch_size_per_device_for_update={rows}",
            f"data.max_response_length={args.response}",
            "data.max_prompt_length=1024",
            "algorithm.kl_mode=none",
            f"actor.logprob_chunk_tokens={args.chunk_tokens}",
            *args.override,
        ],
    )
    phases = Phases()
    policy = phases.run("load the policy (fp32, AdamW attached)", lambda: make_policy(config, model_dir, True, 100))
    batch = make_batch(model_dir, rows, args.response, args.image_size)
    batch.old_logprobs = None  # on-policy, as the trainer's single pass is
    for label in ("update 1", "update 2"):
        (mini_batch,) = split_mini_batches(batch, config)[0]
        one_update(phases, policy, mini_batch, label)
    whole = phases.run("update 3: Policy.update whole", lambda: policy.update(split_mini_batches(batch, config)[0]))
    trainable = sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in policy.model.parameters())
    return {
        "sequences": rows,
        "sequence_tokens": int(batch.input_ids.shape[1]),
        "response_tokens": args.response,
        "parameters": total,
        "trainable_parameters": trainable,
        # What the weights, gradients and AdamW's two moments take in float32, before any activation
        "weights_gb": total * 4 / GB,
        "gradients_and_moments_gb": trainable * 12 / GB,
        "phases": phases.rows,
        "grad_norm": whole.get("actor/grad_norm"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--like", default="qwen2.5-vl-3b")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--model", default="", help="a model folder built with --like's shape (default: build one)")
    parser.add_argument("--prompts", type=int, default=1)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--response", type=int, default=256, help="response tokens per sequence")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--chunk-tokens", type=int, default=256, help="actor.logprob_chunk_tokens (256: the default)")
    parser.add_argument("--override", nargs="*", default=[], help="more config overrides, key=value")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with like_model_dir(args.model, args.like, args.layers, args.vision_layers) as model_dir:
        result = profile(args, model_dir)
    if args.out:
        result = {
            "machine": machine(),
            "settings": {**vars(args), "dtype": "float32", "optimizer": "AdamW (actor.optimizer_impl default)"},
            "torch": torch.__version__,
            **result,
        }
        atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
