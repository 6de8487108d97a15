"""Padding-free (packed) forward for Qwen2.5-VL: every row's real tokens laid end to end in one sequence of length T.

transformers' Qwen2.5-VL takes packed input as ``position_ids`` of shape (4, 1, T): row 0 holds *text* positions that
restart at 0 where each sequence starts, rows 1-3 the mRoPE (temporal, height, width) positions each sequence would
have alone, and no attention mask. From the restarting text positions the model builds attention that never crosses
a sequence boundary: a block-diagonal causal mask for sdpa/eager (what runs on CPU), and cu_seqlens for
flash_attention_2 (on GPU, where packing also saves the O(T^2) mask). Only the logits of positions that predict a
response token go through the LM head (``logits_to_keep`` as an index tensor), in chunks (``rexthinker_rl.logprobs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rexthinker_rl.batch import SequenceBatch
from rexthinker_rl.logprobs import DEFAULT_CHUNK_TOKENS, HeadRequest, model_logprobs


def rope_owner(model):
    """The module that computes Qwen2.5-VL's mRoPE positions (through peft, FSDP2 and DeepSpeed wrappers)."""
    for module in model.modules():
        if hasattr(type(module), "get_rope_index"):
            return module
    raise TypeError(f"{type(model).__name__} has no get_rope_index: padding-free packing needs a Qwen2/2.5-VL model")


@dataclass
class PackedInputs:
    input_ids: torch.Tensor  # (1, T) the real tokens of every row, rows one after another
    position_ids: torch.Tensor  # (4, 1, T) text positions (restart per row), then mRoPE t/h/w positions
    predictors: torch.Tensor  # (N,) packed positions whose logits predict a response token, row-major order
    targets: torch.Tensor  # (N,) the response tokens they predict


def pack(model, batch: SequenceBatch) -> PackedInputs:
    """The packed layout of ``batch`` (left-padded prompts, right-padded responses)."""
    real = batch.attention_mask.bool()  # (batch, L)
    mrope, _ = rope_owner(model).get_rope_index(
        batch.input_ids,
        mm_token_type_ids=batch.mm_token_type_ids,
        image_grid_thw=batch.image_grid_thw,
        attention_mask=batch.attention_mask,
    )  # (3, batch, L)
    text_positions = batch.attention_mask.long().cumsum(1) - 1  # (batch, L), 0 at each row's first real token
    position_ids = torch.cat([text_positions[real][None], mrope.to(text_positions.device)[:, real]])  # (4, T)
    lengths = real.sum(1)  # (batch,)
    starts = torch.cumsum(lengths, 0) - lengths  # (batch,) where each row begins in the packed sequence
    prompt_real = real[:, : batch.prompt_length].sum(1)  # (batch,)
    rows, columns = batch.response_mask.bool().nonzero(as_tuple=True)  # row-major, like boolean indexing
    predictors = starts[rows] + prompt_real[rows] + columns - 1  # (N,)
    input_ids = batch.input_ids[real][None]  # (1, T)
    return PackedInputs(input_ids, position_ids[:, None, :], predictors, input_ids[0, predictors + 1])


def packed_response_logprobs(
    model,
    batch: SequenceBatch,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Like ``policy.response_logprobs``: (batch, R) log-probs of the response tokens (0 where the response mask is
    0) and optionally their entropy, from one padding-free forward (LM head in chunks of ``chunk_tokens``)."""
    packed = pack(model, batch)
    inputs = {
        "input_ids": packed.input_ids,
        "position_ids": packed.position_ids,
        "pixel_values": batch.pixel_values,
        "image_grid_thw": batch.image_grid_thw,
    }
    request = HeadRequest(packed.targets[None], temperature, chunk_tokens, with_entropy, entropy_grad)
    token_logprobs, token_entropy = model_logprobs(model, inputs, packed.predictors, request)  # (1, N) each
    mask = batch.response_mask.bool()
    logprobs = torch.zeros(mask.shape, dtype=token_logprobs.dtype, device=token_logprobs.device)
    logprobs = logprobs.masked_scatter(mask, token_logprobs[0])  # (batch, R)
    if token_entropy is None:
        return logprobs, None
    return logprobs, torch.zeros_like(logprobs).masked_scatter(mask, token_entropy[0])
