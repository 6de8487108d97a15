"""Can a model learn to bind a hint box to the colour under it? One word, trained and measured alone.

    python benchmarks/binding_probe.py MODEL_DIR DATA_DIR [--steps 1500] [--lr 1e-3] [--batch 16]
        [--cell-words] [--word colour|verdict] [--loss word|all] [--train-vision] [--eval-every 250] [--out F]

``DATA_DIR`` is a synthetic set (``rexthinker-data synth --hints 2 2 ...``). For every hint of its rows with two hints
the model reads the prompt (picture, hints, expression) and the start of the chain of thought up to that hint's box,
"<think>Planning: check each of the 2 circle hints. Action: Box 2 [57, 12, 80, 35]", and is trained to write the
colour word of the object in that box, nothing else (the loss is on that one token, AdamW, the vision tower frozen
unless ``--train-vision``). Every ``--eval-every`` steps it prints the share of held-out hints whose colour is the
likeliest of the four, over all hints (``all``) and over the rows whose two objects have different colours
(``differ``): there a model that knows which colours are in the picture but not where scores 0.5, and binding is
what lifts it above (``train``: the same on as many training hints; far above the held-out figure, it memorised).
``--cell-words`` adds the image token's square the box's centre lies in ("... cell 2 0", column then row, 28-pixel
squares), so that the coordinates need no decoding: what is left is finding the image token by its place (a
``--background cells`` or ``frames`` set gives every square its own code).

``--word verdict`` asks the next question, comparing: for every hint line of every row the model reads the prompt and
the row's chain of thought up to that line's verdict (the right colours written, and whatever cue the set's
``--verdict-cue`` adds) and is trained to write "yes" or "no"; it prints the share right over all lines and over the
"no" lines (``no``), where answering yes to everything scores 0. ``--loss all`` trains on whole targets instead, every
token as SFT does, and measures the same word: what SFT, with everything else it learns, makes of it.
docs/tiny-demo.md, "Why the box choice did not move", has the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import torch

from data_tools.synthetic import COLOURS as SHAPE_COLOURS
from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
from rexthinker_rl.config import load_config
from rexthinker_rl.data.dataset import IMAGE_FACTOR, RLDataset
from rexthinker_rl.model.loading import load_model, load_processor, vision_tower
from rexthinker_rl.model.logprobs import response_logprobs
from rexthinker_rl.utils import atomic_write_text

COLOURS = tuple(SHAPE_COLOURS)
HINT = re.compile(r"Box (\d+) (\[[^\]]*\])(?: cell \d+(?: \d+)?)? (\w+) ")  # the square: --verdict-cue cell, square
# "...: no." or, --verdict-cue pair, "... red blue no."; with echo, "... green green yes [..]."
VERDICT = re.compile(r"Box \d+ [^.]*?(\w|:) (yes|no)(?: \[[^\]]*\])?\.")


def encoded_samples(dataset: RLDataset, processor) -> list[tuple]:
    """(sample, its encoded prompt) per row, encoded once for every item and whole target built from it."""
    samples = [dataset[index] for index in range(len(dataset))]
    return [(s, encode_prompts(processor, [s.prompt_text], [s.image])[0]) for s in samples]


def probe_items(rows: list[tuple], processor, cell_words: bool) -> list[tuple[dict, list[int], str, bool]]:
    """(encoded prompt, token ids of the text before the colour word, the colour, the two colours differ) per hint of
    the ``encoded_samples`` rows with two hints."""
    items = []
    for sample, encoded in rows:
        hints = HINT.findall(sample.sft_target)
        if len(hints) != 2:
            continue
        category = sample.metadata.get("category", "")
        for number, box, colour in hints:
            text = f"<think>Planning: check each of the 2 {category} hints. Action: Box {number} {box}"
            if cell_words:
                x0, y0, x1, y1 = json.loads(box)
                text += f" cell {(x0 + x1) // (2 * IMAGE_FACTOR)} {(y0 + y1) // (2 * IMAGE_FACTOR)}"
            prefix = processor.tokenizer.encode(text, add_special_tokens=False)
            items.append((encoded, prefix, colour, hints[0][2] != hints[1][2]))
    return items


def verdict_items(rows: list[tuple], processor) -> list[tuple[dict, list[int], str, bool]]:
    """(encoded prompt, token ids of the target up to a hint's verdict, "yes" or "no", the verdict is "no") for every
    hint line of every ``encoded_samples`` row: the chain of thought before it, right colours included, is given."""
    items = []
    for sample, encoded in rows:
        for line in VERDICT.finditer(sample.sft_target):
            prefix = processor.tokenizer.encode(sample.sft_target[: line.end(1)], add_special_tokens=False)
            items.append((encoded, prefix, line.group(2), line.group(2) == "no"))
    return items


def accuracy(model, items, word_ids: dict[str, list[int]], pad_id: int, hard_name: str) -> dict[str, float]:
    """Share of items whose word is the likeliest of ``word_ids``'s, over all items and over the hard ones (colour:
    ``differ``, the row's two colours differ; verdict: ``no``, the verdict is "no")."""
    model.eval()
    right = {"all": [], hard_name: []}
    words = list(word_ids)
    with torch.no_grad():
        for encoded, prefix, word, hard in items:
            candidates = [prefix + word_ids[name] for name in words]
            batch = build_sequence_batch([encoded] * len(words), list(range(len(words))), candidates, pad_id)
            logprobs, _ = response_logprobs(model, batch, chunk_tokens=0)
            hit = words[int(logprobs[:, len(prefix)].argmax())] == word
            right["all"].append(hit)
            if hard:
                right[hard_name].append(hit)
    model.train()
    return {name: round(sum(hits) / max(1, len(hits)), 3) for name, hits in right.items()}


def target_rows(rows: list[tuple], processor) -> list[tuple[dict, list[int]]]:
    """(encoded prompt, the whole target's token ids and the end of sequence) per ``encoded_samples`` row: what SFT
    trains on."""
    tokenizer = processor.tokenizer
    end = [tokenizer.eos_token_id]
    return [(encoded, tokenizer.encode(s.sft_target, add_special_tokens=False) + end) for s, encoded in rows]


def train_step(model, optimizer, pairs: list[tuple[dict, list[int]]], trained: list[int | None], pad_id: int) -> None:
    """One AdamW step on the mean log-loss of ``pairs`` (encoded prompt, response ids) at the response position
    ``trained`` gives per pair (None: every response token, as SFT)."""
    batch = build_sequence_batch([pair[0] for pair in pairs], list(range(len(pairs))), [p[1] for p in pairs], pad_id)
    logprobs, _ = response_logprobs(model, batch, chunk_tokens=0)
    mask = torch.zeros_like(logprobs)
    for row, ((_, response), position) in enumerate(zip(pairs, trained, strict=True)):
        if position is None:
            mask[row, : len(response)] = 1.0
        else:
            mask[row, position] = 1.0
    loss = -(logprobs * mask).sum() / mask.sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def probe_sets(args, parser, processor, config) -> tuple[list, list, list]:
    """The training and held-out items of ``args.word``, and the training rows' whole targets (``--loss all``)."""
    train_file, val_file = f"{args.data_dir}/train.parquet", f"{args.data_dir}/val.parquet"
    train_rows = encoded_samples(RLDataset(train_file, processor, config.data), processor)
    held_out = encoded_samples(RLDataset(val_file, processor, config.data, max_samples=args.eval_rows), processor)
    if args.word == "verdict":
        train, val = verdict_items(train_rows, processor), verdict_items(held_out, processor)
    else:
        train = probe_items(train_rows, processor, args.cell_words)
        val = probe_items(held_out, processor, args.cell_words)
    if not train or not val:
        wanted = "hint lines" if args.word == "verdict" else "rows with exactly two hints (synth --hints 2 2)"
        parser.error(f"{args.data_dir}: no {wanted} in train.parquet or val.parquet")
    return train, val, target_rows(train_rows, processor) if args.loss == "all" else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("data_dir")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-rows", type=int, default=150, help="held-out rows to measure on")
    parser.add_argument("--cell-words", action="store_true", help="name the box's image-token square after it")
    parser.add_argument("--word", choices=("colour", "verdict"), default="colour", help="the word measured")
    parser.add_argument(
        "--loss", choices=("word", "all"), default="word", help="train that word alone, or whole targets as SFT"
    )
    parser.add_argument("--train-vision", action="store_true", help="train the vision tower too (default: frozen)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="write the curve here as JSON")
    parser.add_argument("--config", default="configs/grpo_tiny.yaml", help="the prompt and pixel settings")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    overrides = [f"data.train_files={args.data_dir}/train.parquet", f"data.val_files={args.data_dir}/val.parquet"]
    config = load_config(args.config, overrides)
    processor = load_processor(args.model_dir, config.data.min_pixels, config.data.max_pixels)
    train, val, whole = probe_sets(args, parser, processor, config)
    model = load_model(args.model_dir, "float32", "sdpa", "cpu")
    if not args.train_vision:
        vision_tower(model).requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    words = ("yes", "no") if args.word == "verdict" else COLOURS
    word_ids = {name: processor.tokenizer.encode(f" {name}", add_special_tokens=False) for name in words}
    hard_name, pad_id = "no" if args.word == "verdict" else "differ", processor.tokenizer.pad_token_id
    draw, curve, start = random.Random(args.seed), [], time.time()
    print(f"{len(train)} training hints, {len(val)} held-out hints", flush=True)
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            seen = accuracy(model, train[: len(val)], word_ids, pad_id, hard_name)
            curve.append({"step": step, **accuracy(model, val, word_ids, pad_id, hard_name), "train": seen})
            print(json.dumps({**curve[-1], "seconds": round(time.time() - start)}), flush=True)
        if step == args.steps:
            break
        if whole:  # --loss all: whole targets, every token, as SFT trains
            rows = draw.sample(whole, args.batch)
            train_step(model, optimizer, rows, [None] * len(rows), pad_id)
        else:
            items = draw.sample(train, args.batch)
            pairs = [(encoded, prefix + word_ids[word]) for encoded, prefix, word, _ in items]
            train_step(model, optimizer, pairs, [len(item[1]) for item in items], pad_id)
    if args.out:
        atomic_write_text(Path(args.out), json.dumps({"args": vars(args), "curve": curve}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
