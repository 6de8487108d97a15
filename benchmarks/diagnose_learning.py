"""What each GRPO update did to the box choice, step by step, from a run that kept every step's weights and rollouts.

    python benchmarks/diagnose_learning.py RUN_DIR [--out diagnosis.json]

RUN_DIR is a GRPO run made with ``checkpoint.save_freq=1 checkpoint.save_limit=-1 logging.log_rollouts=-1`` (every
step's weights, every sampled response). For every step it reports, on the prompts with a target (``present``):

- ``contrast``: the share of groups whose rewards are not all equal (the only groups an update learns from);
- ``solved``: the share of groups where some sample answered exactly the right boxes (``accuracy`` 1);
- ``right_box_shift`` / ``wrong_box_shift``: the mean change, from the weights that sampled the step to the weights
  after its update, of the log-probability of the answer's box tokens (the coordinates inside ``<answer>``), over the
  samples that answered the right boxes and over those that answered wrong ones, in groups with a contrast. The update
  moves the policy the way its advantages say when the first is positive and the second negative.

The log-probabilities are computed by the trainer's own forward (``logprobs.response_logprobs``) on the logged texts,
re-tokenised (a sampled token sequence and the tokenisation of its text agree except in rare BPE corner cases).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from rewards.parsing import parse_ground_truth
from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
from rexthinker_rl.config import load_config
from rexthinker_rl.data.dataset import RLDataset
from rexthinker_rl.model.loading import load_model, load_processor
from rexthinker_rl.model.logprobs import response_logprobs

ANSWER_OPEN = "<answer>"


def box_token_mask(tokenizer, response: str) -> list[int] | None:
    """1 on the response tokens that spell a number inside the ``<answer>`` block (the box coordinates), else 0."""
    start = response.find(ANSWER_OPEN)
    if start < 0:
        return None
    encoded = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    mask = []
    for begin, end in encoded["offset_mapping"]:
        piece = response[begin:end].strip()
        mask.append(int(begin >= start and piece.isdigit()))
    return mask if any(mask) else None


def read_rollouts(run_dir: Path) -> dict[int, list[dict]]:
    by_step: dict[int, list[dict]] = defaultdict(list)
    with (run_dir / "rollouts.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            by_step[record["step"]].append(record)
    return by_step


def box_logprob(model, processor, samples, dataset_index, records) -> list[float]:
    """Mean log-probability of each record's answer box tokens under ``model`` (nan where it has none)."""
    tokenizer = processor.tokenizer
    out = []
    for record in records:
        sample = samples[dataset_index[record["uid"]]]
        mask = box_token_mask(tokenizer, record["response"])
        if mask is None:
            out.append(float("nan"))
            continue
        ids = tokenizer(record["response"], add_special_tokens=False)["input_ids"]
        encoded = encode_prompts(processor, [sample.prompt_text], [sample.image])
        batch = build_sequence_batch(encoded, [0], [ids], tokenizer.pad_token_id)
        with torch.no_grad():
            logprobs, _ = response_logprobs(model, batch, chunk_tokens=0)
        weights = torch.tensor(mask, dtype=logprobs.dtype)
        out.append(float((logprobs[0, : len(mask)] * weights).sum() / weights.sum()))
    return out


def step_groups(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[record["uid"]].append(record)
    return groups


def diagnose_step(step, records, weights_before, weights_after, model, processor, samples, index) -> dict:
    present = {
        uid: group
        for uid, group in step_groups(records).items()
        if parse_ground_truth(group[0]["ground_truth"]).kind != "rejection"
    }
    contrast = {uid: g for uid, g in present.items() if len({r["reward"]["overall"] for r in g}) > 1}
    solved = [uid for uid, g in present.items() if any(r["reward"].get("accuracy", 0) >= 1 for r in g)]
    right = [r for g in contrast.values() for r in g if r["reward"].get("accuracy", 0) >= 1]
    wrong = [r for g in contrast.values() for r in g if r["reward"].get("accuracy", 0) == 0]
    shifts = {}
    for name, chosen in (("right", right), ("wrong", wrong)):
        model.load_state_dict(weights_before)
        before = box_logprob(model, processor, samples, index, chosen)
        model.load_state_dict(weights_after)
        after = box_logprob(model, processor, samples, index, chosen)
        deltas = [b - a for a, b in zip(before, after, strict=True) if a == a and b == b]
        shifts[f"{name}_box_shift"] = sum(deltas) / len(deltas) if deltas else float("nan")
        shifts[f"{name}_box_samples"] = len(deltas)
    return {
        "step": step,
        "present_groups": len(present),
        "contrast": len(contrast) / max(1, len(present)),
        "solved": len(solved) / max(1, len(present)),
        **shifts,
    }


def diagnose_run(run_dir: Path, report=None) -> list[dict]:
    """``diagnose_step`` for every step of ``run_dir`` that has its checkpoint and the one before (the step-0 weights
    are its ``model.path``); ``report(row)`` is called as each step is done."""
    config = load_config(run_dir / "config.yaml")
    processor = load_processor(config.model.path, config.data.min_pixels, config.data.max_pixels)
    dataset = RLDataset(config.data.train_files, processor, config.data)
    index = {dataset[i].uid: i for i in range(len(dataset))}
    samples = {i: dataset[i] for i in index.values()}
    model = load_model(config.model.path, "float32", "sdpa", "cpu")
    model.eval()
    weights = {0: {k: v.clone() for k, v in model.state_dict().items()}}
    rows = []
    for step, records in sorted(read_rollouts(run_dir).items()):
        checkpoint = run_dir / "checkpoints" / f"global_step_{step}" / "actor" / "model.safetensors"
        if not checkpoint.is_file() or step - 1 not in weights:
            print(f"step {step}: no checkpoint of it or the step before; stopping", file=sys.stderr)
            break
        weights[step] = load_file(checkpoint)
        row = diagnose_step(step, records, weights[step - 1], weights[step], model, processor, samples, index)
        weights.pop(step - 1)
        rows.append(row)
        if report is not None:
            report(row)
    return rows


def _print_row(row: dict) -> None:
    print(
        f"step {row['step']:3d} | contrast@present {row['contrast']:.2f} | solved@present {row['solved']:.2f} | "
        f"right-box log-prob shift {row['right_box_shift']:+.4f} ({row['right_box_samples']}) | "
        f"wrong-box {row['wrong_box_shift']:+.4f} ({row['wrong_box_samples']})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    rows = diagnose_run(Path(args.run_dir), _print_row)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
