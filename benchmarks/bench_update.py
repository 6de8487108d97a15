"""Update efficiency: tokens/s of our actor update (``Policy.update``) over a bare torch loop on the same batch.

The batch is shaped like the tiny demo's: 8 synthetic prompts x 16 responses whose lengths spread from 20 to 160
tokens (rejections are short, answers long). Four variants run interleaved, each repeated, median/min/max reported:

- ``bare-padded``:  forward + backward + AdamW step over micro-batches in row order, every row padded to the batch's
  longest prompt and response (what a naive loop, and our actor before length sorting, does);
- ``bare-sorted``:  the same loop over micro-batches of similar length with their shared padding trimmed (the ceiling);
- ``ours``:         ``Policy.update``: the same micro-batching plus the GRPO loss, global token-mean scaling, entropy,
  clip statistics, grad clipping and the non-finite guard;
- ratios: ours / bare-sorted (target >= 0.9) and bare-sorted / bare-padded (what trimming buys).

    python benchmarks/bench_update.py                     # builds the tiny model in a temp folder
    python benchmarks/bench_update.py --repeats 5 --out benchmarks/results/update.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from benchutil import prepare_model
from PIL import Image

from rexthinker_rl.algo.batch import SequenceBatch, build_sequence_batch, encode_prompts, split_mini_batches
from rexthinker_rl.config import load_config
from rexthinker_rl.model.loading import load_processor
from rexthinker_rl.model.logprobs import response_logprobs
from rexthinker_rl.train.policy import Policy

PIXELS = 112 * 112
MICRO = 32


def make_batch(model_dir: str, prompts: int = 8, group: int = 16, seed: int = 0) -> SequenceBatch:
    processor = load_processor(model_dir, PIXELS, PIXELS)
    generator = torch.Generator().manual_seed(seed)
    texts, images = [], []
    for i in range(prompts):
        hints = ", ".join(f"[{10 * j + i}, {5 * j}, {10 * j + 20}, {5 * j + 20}]" for j in range(2 + i % 3))
        question = (
            f'Hint: Object and its coordinates in this image: {{"circle": [{hints}]}}\nPlease detect the red circle.'
        )
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        images.append(Image.new("RGB", (112, 112), (40 * i % 255, 90, 160)))
    encoded = encode_prompts(processor, texts, images)
    lengths = torch.randint(20, 161, (prompts * group,), generator=generator).tolist()
    # Response tokens drawn from ordinary text (never vision or other special tokens).
    text = "<think>Planning: check each hint. Action: Box 1 red circle [12, 34, 56, 78]: no. Summary: 1 match.</think>"
    pool = torch.tensor(sorted(set(processor.tokenizer(text, add_special_tokens=False)["input_ids"])))
    responses = [pool[torch.randint(len(pool), (n,), generator=generator)].tolist() for n in lengths]
    batch = build_sequence_batch(
        encoded, [i // group for i in range(prompts * group)], responses, processor.tokenizer.pad_token_id
    )
    batch.advantages = torch.randn(len(batch), generator=generator)
    return batch


def bare_loop(policy: Policy, batch: SequenceBatch, sort: bool) -> None:
    """The ceiling: log-probs, a plain policy-gradient loss, backward, one optimizer step."""
    model, optimizer = policy.model, policy.optimizer
    model.train()
    optimizer.zero_grad(set_to_none=True)
    tokens = batch.response_mask.sum()
    micro_batches = [chunk for _, chunk in batch.length_sorted_chunks(MICRO)] if sort else batch.chunks(MICRO)
    for micro in micro_batches:
        logprobs, _ = response_logprobs(model, micro)
        loss = -(logprobs * micro.advantages[:, None] * micro.response_mask).sum() / tokens
        loss.backward()
    optimizer.step()


def ours(policy: Policy, batch: SequenceBatch) -> None:
    batch.old_logprobs = None  # on-policy: the update uses its own detached log-probs, as the trainer does
    policy.update(split_mini_batches(batch, policy.config)[0])  # the path the actor's ranks take


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="model folder (default: build the tiny model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="", help="write JSON results here (and a PNG beside it)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(prepare_model(args.model, Path(tmp)))
        config = load_config(
            None,
            [
                f"model.path={model_dir}",
                "trainer.device=cpu",
                "model.dtype=float32",
                "model.attn_implementation=sdpa",
                "model.gradient_checkpointing=false",
                "actor.strategy=torch",
                "data.rollout_batch_size=8",
                "actor.global_batch_size=8",
                "rollout.n=16",
                f"actor.micro_batch_size_per_device_for_update={MICRO}",
                "data.max_response_length=160",
            ],
        )
        policy = Policy(config, model_dir, trainable=True, total_updates=1000)
        batch = make_batch(model_dir)
        real_tokens = int(batch.attention_mask.sum())
        variants = {
            "bare-padded": lambda: bare_loop(policy, batch, sort=False),
            "bare-sorted": lambda: bare_loop(policy, batch, sort=True),
            "ours": lambda: ours(policy, batch),
        }
        for run in variants.values():  # warm-up
            run()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):  # interleaved, so machine noise hits every variant alike
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    rows = {
        name: {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
            "tokens_per_s": real_tokens / statistics.median(values),
        }
        for name, values in times.items()
    }
    ratios = {
        "ours_over_bare_sorted": rows["bare-sorted"]["median_s"] / rows["ours"]["median_s"],
        "sorted_over_padded_speedup": rows["bare-padded"]["median_s"] / rows["bare-sorted"]["median_s"],
    }
    print(f"batch: {len(batch)} sequences, {real_tokens} real tokens, padded shape {tuple(batch.input_ids.shape)}")
    print(f"{'variant':<14}{'median s':>10}{'min s':>9}{'max s':>9}{'tokens/s':>11}")
    for name, row in rows.items():
        print(
            f"{name:<14}{row['median_s']:>10.2f}{row['min_s']:>9.2f}{row['max_s']:>9.2f}{row['tokens_per_s']:>11.0f}"
        )
    print(f"ours / bare-sorted throughput: {ratios['ours_over_bare_sorted']:.2f} (target >= 0.9)")
    print(f"length sorting + trimming speed-up over padded: {ratios['sorted_over_padded_speedup']:.2f}x")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        result = {"machine": platform.processor() or platform.machine(), "repeats": args.repeats, "rows": rows}
        out.write_text(json.dumps({**result, "ratios": ratios}, indent=2))
        _plot(rows, out.with_suffix(".png"))
        print(f"wrote {out} and {out.with_suffix('.png')}")


def _plot(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    medians = [rows[n]["tokens_per_s"] for n in names]
    ax.bar(names, medians, color=["#999999", "#4c72b0", "#dd8452"])
    ax.set_ylabel("tokens / s (median)")
    ax.set_title("actor update throughput, tiny model, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
