"""Supervised warm start: cross-entropy on the response tokens of chain-of-thought targets (the ``sft_target`` column).

Rex-Thinker trains SFT before GRPO; the tiny CPU demo does too, so GRPO starts from a policy that already writes the
format. Same model loading, prompt building and log-prob code as the GRPO actor.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
from rexthinker_rl.algo.masking import masked_mean
from rexthinker_rl.config import Config, compute_device
from rexthinker_rl.data.dataset import RLDataset
from rexthinker_rl.model.loading import load_model, load_processor, save_hf_folder, vision_tower
from rexthinker_rl.model.logprobs import response_logprobs
from rexthinker_rl.run.outputs import check_new_folder, is_model_folder
from rexthinker_rl.train.policy import lr_lambda
from rexthinker_rl.utils import seed_everything


def run_sft(config: Config) -> Path:
    """Train ``config.model.path`` on the SFT targets of ``config.data.train_files``; returns the output folder."""
    seed_everything(config.trainer.seed)
    model_cfg, sft = config.model, config.sft
    # The output is checked before hours of training, and never replaces the model SFT starts from or its data.
    inputs = [model_cfg.path, model_cfg.tokenizer_path, config.data.train_files]
    out = ("sft.output_dir", "set sft.overwrite=true")
    check_new_folder(sft.output_dir, sft.overwrite, is_model_folder, "Hugging Face model folder", *out, inputs)
    processor = load_processor(
        model_cfg.path, config.data.min_pixels, config.data.max_pixels, model_cfg.trust_remote_code
    )
    dataset = RLDataset(config.data.train_files, processor, config.data)
    rows = [i for i in range(len(dataset)) if dataset[i].sft_target]
    if not rows:
        raise ValueError(
            f"{config.data.train_files}: no row has an sft_target; write templated chain-of-thought targets with "
            "`rexthinker-data cot` (docs/data.md, own photos), or skip SFT and start GRPO from released weights"
        )
    device = compute_device(config)
    model = load_model(
        model_cfg.path, model_cfg.dtype, model_cfg.attn_implementation, device, model_cfg.trust_remote_code
    )
    if model_cfg.freeze_vision_tower and vision_tower(model) is not None:
        vision_tower(model).requires_grad_(False)
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=sft.lr, weight_decay=config.actor.weight_decay
    )
    total = sft.epochs * -(-len(rows) // sft.batch_size)
    schedule = lr_lambda(int(sft.lr_warmup_ratio * total), total, sft.lr_scheduler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    tokenizer = processor.tokenizer
    rng = random.Random(config.data.seed)
    for epoch in range(sft.epochs):
        order = rows[:]
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), sft.batch_size):
            samples = [dataset[i] for i in order[start : start + sft.batch_size]]
            targets = [
                tokenizer(s.sft_target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                for s in samples
            ]
            encoded = encode_prompts(processor, [s.prompt_text for s in samples], [s.image for s in samples])
            batch = build_sequence_batch(encoded, list(range(len(samples))), targets, tokenizer.pad_token_id)
            batch = batch.to_device(device)
            logprobs, _ = response_logprobs(model, batch, chunk_tokens=config.actor.logprob_chunk_tokens)
            loss = -masked_mean(logprobs, batch.response_mask)  # selected, not multiplied (masking.py)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.actor.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        print(f"sft epoch {epoch + 1}/{sft.epochs} | loss {sum(losses) / len(losses):.4f}", flush=True)
    return save_hf_folder(model, processor, sft.output_dir, sft.overwrite, *out)
