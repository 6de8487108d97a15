"""Memory and time of one actor update with chunked vs all-at-once log-probs, on Qwen2.5-VL-7B's real shape.

The model is ``rexthinker-tiny --like qwen2.5-vl-7b --layers 2 --vision-layers 2``: the real 152,064-row embedding and
LM head, 2 of the 28 text blocks, 2 of the 32 vision blocks (1.64B parameters, float32 on CPU). The actor trains LoRA
adapters (rank 8, every text projection), so the embedding and head are frozen: 24 GiB cannot hold AdamW over a
trainable 1.1B-parameter embedding and head, and the logits' memory does not depend on it. One prompt (a 112 x 112
image, 16 image tokens) with one response of 1024 or 2048 tokens; gradient checkpointing on, as in the paper recipe.

Three variants per length, each in its own process so that its peak is its own (one log-prob pass, one update):
- ``floor``: the same update with the LM head replaced by a (hidden -> 1) projection: everything but the logits;
- ``all-logits``: ``actor.logprob_chunk_tokens=0``, the (tokens x vocab) float32 logits at once (the old path);
- ``chunked``: ``actor.logprob_chunk_tokens=256`` (the default).
Peak = the process's resident set high-water mark (``VmHWM``, reset just before each phase) on CPU, or
``torch.cuda.max_memory_allocated`` on a GPU. The logits part = what the LM head adds to the memory in use while its
forward or backward runs (high-water mark reset at the head's start, read at its end). Time: one more process runs
all-logits and chunked updates alternately (``--rounds``, order flipped each round, so load from other jobs slows
both alike), fastest of each. ``rexthinker-plan`` estimates each peak from the config alone; the script prints both
and the relative error.

    python benchmarks/bench_memory.py --out benchmarks/results/memory.json     # ~25 min on 2 cores, ~12 GiB
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rexthinker_rl.utils import host_memory_gb, release_free_heap, reset_host_peak

VARIANTS = {"floor": 256, "all-logits": 0, "chunked": 256}
GIB = 2**30


def worker_config(model_dir: str, prompt_tokens: int, length: int, chunk: int) -> list[str]:
    """The actor's overrides (also what ``rexthinker-plan`` is asked about)."""
    return [
        f"model.path={model_dir}",
        "trainer.device=cpu" if not torch.cuda.is_available() else "trainer.device=cuda",
        "model.dtype=float32",
        "model.attn_implementation=sdpa",
        "model.gradient_checkpointing=true",
        "model.lora.rank=8",
        "model.lora.alpha=16",
        "actor.strategy=torch",
        "data.rollout_batch_size=1",
        "actor.global_batch_size=1",
        "rollout.n=2",  # the smallest group (the rule); the batch measured holds one row either way
        "actor.micro_batch_size_per_device_for_update=1",
        "actor.micro_batch_size_per_device_for_experience=1",
        f"actor.logprob_chunk_tokens={chunk}",
        f"data.max_prompt_length={prompt_tokens}",
        f"data.max_response_length={length}",
        "data.min_pixels=12544",
        "data.max_pixels=12544",
    ]


def make_batch(model_dir: str, length: int):
    from PIL import Image

    from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
    from rexthinker_rl.model.loading import load_processor

    processor = load_processor(model_dir, 112 * 112, 112 * 112)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Please detect the man."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    encoded = encode_prompts(processor, [text], [Image.new("RGB", (112, 112), (90, 140, 200))])
    response = torch.randint(300, 4000, (length,), generator=torch.Generator().manual_seed(0)).tolist()
    batch = build_sequence_batch(encoded, [0], [response], processor.tokenizer.pad_token_id)
    batch.advantages = torch.tensor([1.0])
    return batch


class PeakMeter:
    """Peak memory of a phase and of segments inside it: the resident set's high-water mark (VmHWM, reset through
    /proc/self/clear_refs) on CPU, the allocator's peak on CUDA. A segment folds the peak so far into the phase's."""

    def __init__(self) -> None:
        self.cuda = torch.cuda.is_available()
        self.folded = 0.0

    def _reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_host_peak()

    def current(self) -> float:
        return torch.cuda.memory_allocated() / GIB if self.cuda else host_memory_gb()[0]

    def segment_peak(self) -> float:
        return torch.cuda.max_memory_allocated() / GIB if self.cuda else host_memory_gb()[1]

    def start_phase(self) -> None:
        import gc

        gc.collect()
        release_free_heap()
        self.folded = 0.0
        self._reset()

    def start_segment(self) -> float:
        """Fold the peak so far, restart the high-water mark; the memory in use now."""
        self.folded = max(self.folded, self.segment_peak())
        self._reset()
        return self.current()

    def phase_peak(self) -> float:
        return max(self.folded, self.segment_peak())


def floor_head(hidden, weight, targets, *args, **kwargs):
    """Stand-in for the LM head: one projection of each hidden state, so the rest of the graph is unchanged."""
    direction = torch.ones(hidden.shape[-1], dtype=hidden.dtype, device=hidden.device) / hidden.shape[-1]
    return -(hidden @ direction).float().abs(), None


def measured_head(head, meter: PeakMeter, record: dict):
    """``head`` (token_logprobs' signature) recording the memory its forward and its backward add while they run."""

    def wrapped(hidden, weight, targets, *args, **kwargs):
        start = meter.start_segment()
        logprobs, entropy = head(hidden, weight, targets, *args, **kwargs)
        record["head_forward_gib"] = max(record.get("head_forward_gib", 0.0), meter.segment_peak() - start)
        if logprobs.requires_grad and hidden.requires_grad:
            marks: dict[str, float] = {}

            def backward_starts(grad):
                marks["start"] = meter.start_segment()

            def backward_ends(grad):
                added = meter.segment_peak() - marks["start"]
                record["head_backward_gib"] = max(record.get("head_backward_gib", 0.0), added)

            logprobs.register_hook(backward_starts)
            hidden.register_hook(backward_ends)
        return logprobs, entropy

    return wrapped


def load_policy(model_dir: str, variant: str, length: int):
    from rexthinker_rl.config import load_config
    from rexthinker_rl.train.policy import Policy

    batch = make_batch(model_dir, length)
    overrides = worker_config(model_dir, batch.prompt_length, length, VARIANTS[variant])
    return Policy(load_config(None, overrides), model_dir, trainable=True, total_updates=100), batch, overrides


def run_peaks(model_dir: str, variant: str, length: int) -> dict:
    """One log-prob pass and one update of ``variant``: each phase's peak and what the LM head adds while it runs."""
    import rexthinker_rl.model.logprobs
    from rexthinker_rl.algo.batch import split_mini_batches

    policy, batch, overrides = load_policy(model_dir, variant, length)
    meter, logprob_head, update_head = PeakMeter(), {}, {}
    head = floor_head if variant == "floor" else rexthinker_rl.model.logprobs.token_logprobs
    rexthinker_rl.model.logprobs.token_logprobs = measured_head(head, meter, logprob_head)
    meter.start_phase()
    loaded = meter.current()  # the process with its model, adapters and batch, before any pass
    policy.compute_logprobs(batch)
    logprob_peak = meter.phase_peak()
    rexthinker_rl.model.logprobs.token_logprobs = measured_head(head, meter, update_head)
    meter.start_phase()
    policy.update(split_mini_batches(batch, policy.config)[0])
    return {
        "variant": variant,
        "length": length,
        "prompt_tokens": batch.prompt_length,
        "overrides": overrides,
        "loaded_gib": loaded,
        "logprob_peak_gib": logprob_peak,
        "logprob_head_gib": logprob_head.get("head_forward_gib", 0.0),
        "update_peak_gib": meter.phase_peak(),
        "update_head_forward_gib": update_head.get("head_forward_gib", 0.0),
        "update_head_backward_gib": update_head.get("head_backward_gib", 0.0),
    }


def run_timing(model_dir: str, length: int, rounds: int) -> dict:
    """Seconds of the log-prob pass and of the update, all-logits and chunked alternating in one process (so that
    whatever else runs on the machine slows both alike); the same policy, only actor.logprob_chunk_tokens differs."""
    from dataclasses import replace

    from rexthinker_rl.algo.batch import split_mini_batches

    policy, batch, _ = load_policy(model_dir, "chunked", length)
    configs = {
        name: replace(policy.config, actor=replace(policy.config.actor, logprob_chunk_tokens=chunk))
        for name, chunk in VARIANTS.items()
        if name != "floor"
    }
    times: dict[str, dict[str, list[float]]] = {name: {"logprob": [], "update": []} for name in configs}
    for round_index in range(rounds):
        order = list(configs) if round_index % 2 == 0 else list(reversed(configs))
        for name in order:
            policy.config = configs[name]
            update = lambda batch: policy.update(split_mini_batches(batch, policy.config)[0])  # noqa: E731
            for phase, run in (("logprob", policy.compute_logprobs), ("update", update)):
                start = time.perf_counter()
                run(batch)
                times[name][phase].append(time.perf_counter() - start)
    return {"length": length, "rounds": rounds, "times": times}


def run_in_subprocess(model_dir: str, work: Path, mode: str, length: int, variant: str = "", rounds: int = 0) -> dict:
    out = work / f"{mode}_{variant}_{length}.json"
    command = [sys.executable, __file__, "--worker", mode, "--variant", variant, "--length", str(length)]
    command += ["--rounds", str(rounds), "--model", model_dir, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} {variant} at {length} tokens failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def planned(row: dict) -> dict[str, float]:
    """``rexthinker-plan``'s estimates of the same run (CPU: the actor process's resident set)."""
    from rexthinker_rl.apps.plan import model_shape, single_process_peaks
    from rexthinker_rl.config import load_config

    config = load_config(None, row["overrides"])
    return single_process_peaks(config, model_shape(config), head=row["variant"] != "floor")


def summarise(rows: list[dict], timings: list[dict]) -> dict:
    """The logits part of a peak: what the LM head adds to the memory in use while its forward or backward runs.
    Times: the fastest of the alternating rounds, chunked over all-logits."""
    by = {(row["variant"], row["length"]): row for row in rows}
    summary: dict[str, float] = {}
    for timing in timings:
        length = timing["length"]
        floor, full, chunked = (by[(variant, length)] for variant in VARIANTS)
        head = [max(row["update_head_forward_gib"], row["update_head_backward_gib"]) for row in (full, chunked)]
        summary[f"logits_part_gib_all_logits_{length}"], summary[f"logits_part_gib_chunked_{length}"] = head
        summary[f"logits_peak_reduction_{length}"] = head[0] / max(head[1], 1e-9)
        logprob = [row["logprob_head_gib"] for row in (full, chunked)]
        summary[f"logprob_pass_logits_reduction_{length}"] = logprob[0] / max(logprob[1], 1e-9)
        for name, row in (("all_logits", full), ("chunked", chunked)):
            summary[f"update_peak_over_floor_gib_{name}_{length}"] = row["update_peak_gib"] - floor["update_peak_gib"]
        times = timing["times"]
        for phase, key in (("update", "time_ratio"), ("logprob", "logprob_time_ratio")):
            summary[f"{key}_{length}"] = min(times["chunked"][phase]) / min(times["all-logits"][phase])
            for name in ("all-logits", "chunked"):
                summary[f"{phase}_s_{name.replace('-', '_')}_{length}"] = min(times[name][phase])
    return summary


def print_table(rows: list[dict], summary: dict) -> None:
    header = f"{'length':>6} {'variant':<11}{'update GiB':>11}{'plan':>7}{'err':>6}{'log-prob GiB':>13}{'plan':>7}{'err':>6}"
    print(header + f"{'head: update fwd/bwd, log-prob GiB':>36}")
    for row in rows:
        plan = row["plan"]
        errors = [plan[key] / row[f"{key}_peak_gib"] - 1 for key in ("update", "logprob")]
        head = f"{row['update_head_forward_gib']:.2f} / {row['update_head_backward_gib']:.2f}, {row['logprob_head_gib']:.2f}"
        print(
            f"{row['length']:>6} {row['variant']:<11}{row['update_peak_gib']:>11.2f}{plan['update']:>7.2f}"
            f"{errors[0]:>+6.0%}{row['logprob_peak_gib']:>13.2f}{plan['logprob']:>7.2f}{errors[1]:>+6.0%}{head:>36}"
        )
    for length in sorted({row["length"] for row in rows}):
        part = f"{summary[f'logits_part_gib_all_logits_{length}']:.2f} -> {summary[f'logits_part_gib_chunked_{length}']:.2f}"
        print(
            f"{length} tokens: logits part {part} GiB ({summary[f'logits_peak_reduction_{length}']:.1f}x smaller); update "
            f"{summary[f'update_s_all_logits_{length}']:.1f} s -> {summary[f'update_s_chunked_{length}']:.1f} s "
            f"(x{summary[f'time_ratio_{length}']:.2f}); log-prob pass {summary[f'logprob_s_all_logits_{length}']:.1f} s"
            f" -> {summary[f'logprob_s_chunked_{length}']:.1f} s (x{summary[f'logprob_time_ratio_{length}']:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="a 7B-shaped folder (default: build one in a temp folder)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per length")
    parser.add_argument("--out", default="", help="write the JSON results here")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        peaks = args.worker == "peaks"
        result = (
            run_peaks(args.model, args.variant, args.length)
            if peaks
            else run_timing(args.model, args.length, args.rounds)
        )
        Path(args.out).write_text(json.dumps(result))
        return
    rows, timings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = args.model
        if not model_dir:
            from rexthinker_rl.model.shapes import build_shaped_model

            model_dir = str(build_shaped_model(work / "model", "qwen2.5-vl-7b", 2, 2, seed=0))
        for length in args.lengths:
            for variant in VARIANTS:
                rows.append(run_in_subprocess(model_dir, work, "peaks", length, variant))
                rows[-1]["plan"] = planned(rows[-1])
                print(f"  {variant} {length}: update peak {rows[-1]['update_peak_gib']:.2f} GiB", flush=True)
            timings.append(run_in_subprocess(model_dir, work, "timing", length, rounds=args.rounds))
            print(f"  timing {length}: {json.dumps(timings[-1]['times'])}", flush=True)
    summary = summarise(rows, timings)
    print_table(rows, summary)
    if args.out:
        result = {
            "machine": platform.processor() or platform.machine(),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "model": "qwen2.5-vl-7b shape, 2 text + 2 vision blocks, float32, LoRA rank 8 (embedding and head frozen)",
            **summary,
            "rows": rows,
            "timings": timings,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
