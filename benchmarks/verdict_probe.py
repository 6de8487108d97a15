"""Does a model compare what it saw with what the expression asks? Teacher-forced P(yes) at each verdict.

    python benchmarks/verdict_probe.py MODEL_DIR DATA_DIR [--rows 200] [--config configs/grpo_tiny.yaml]

For the first ``--rows`` rows of ``DATA_DIR/val.parquet`` (a synthetic set: its ``sft_target`` holds one verdict per
hint, "yes" or "no" after the hint's description, e.g. "Box 2 [box] cell 1 red red yes [box]."), the model reads
the prompt and the target up to each verdict (the right colours already written) and the probability it gives the
verdict's word is turned into P(yes). Averaged by the prompt's kind (colour, position, multi, rejection; "all" pools
them), its hint count, the hint's place (1, 2) and the true verdict (the misses-second teacher's room is hint 2,
"yes": docs/tiny-demo.md): a model that compares gives P(yes) near 1 where the box matches and near 0 where it does
not; one that answers from the text alone gives the same P(yes) to both (docs/tiny-demo.md, "Why the box choice did
not move").
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict

import pyarrow.parquet as pq
import torch
from benchutil import synthetic_kind

from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
from rexthinker_rl.config import load_config
from rexthinker_rl.data.dataset import RLDataset
from rexthinker_rl.model.loading import load_model, load_processor
from rexthinker_rl.model.logprobs import response_logprobs

# One verdict word per hint: "...: yes." / "...: no." and the square+pair+echo chain's "... red red yes [box]." /
# "... blue red no."
VERDICT = re.compile(r"(?<= )(yes|no)(?=\.| \[)")


def verdict_probabilities(model, processor, sample, target: str) -> list[tuple[str, float]]:
    """(true verdict, P(yes)) for each verdict of ``target``, teacher-forced."""
    tokenizer = processor.tokenizer
    encoded = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
    batch = build_sequence_batch(
        encode_prompts(processor, [sample.prompt_text], [sample.image]), [0], [encoded["input_ids"]],
        tokenizer.pad_token_id,
    )  # fmt: skip
    with torch.no_grad():
        logprobs, _ = response_logprobs(model, batch, chunk_tokens=0)
    out = []
    for match in VERDICT.finditer(target):
        word = match.start(1)
        token = next(i for i, (begin, end) in enumerate(encoded["offset_mapping"]) if begin <= word < end)
        p_true = math.exp(logprobs[0, token].item())
        out.append((match.group(1), p_true if match.group(1) == "yes" else 1 - p_true))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("data_dir")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument(
        "--config", default="configs/grpo_tiny.yaml", help="the prompt and pixel settings it trained on"
    )
    args = parser.parse_args(argv)
    val = f"{args.data_dir}/val.parquet"
    config = load_config(args.config, [f"data.train_files={val}", f"data.val_files={val}"])
    processor = load_processor(args.model_dir, config.data.min_pixels, config.data.max_pixels)
    dataset = RLDataset(val, processor, config.data, max_samples=args.rows)
    columns = ["id", "sft_target", "referring", "hints", "category", "answer_boxes"]
    rows = {row["id"]: row for row in pq.read_table(val, columns=columns).to_pylist()}
    model = load_model(args.model_dir, "float32", "sdpa", "cpu")
    model.eval()
    found: dict[tuple[str, int, int, str], list[float]] = defaultdict(list)
    for index in range(len(dataset)):
        sample = dataset[index]
        row = rows[sample.uid]
        hints = len(json.loads(row["hints"])[row["category"]])
        kind = synthetic_kind(row["referring"], not json.loads(row["answer_boxes"]))
        verdicts = verdict_probabilities(model, processor, sample, row["sft_target"])
        for hint, (truth, p_yes) in enumerate(verdicts, start=1):
            found[(kind, hints, hint, truth)].append(p_yes)
            found[("all", hints, hint, truth)].append(p_yes)
    print("| kind | hints | hint | true verdict | verdicts | mean P(yes) |\n|---|---|---|---|---|---|")
    for (kind, hints, hint, truth), values in sorted(found.items()):
        print(f"| {kind} | {hints} | {hint} | {truth} | {len(values)} | {sum(values) / len(values):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
