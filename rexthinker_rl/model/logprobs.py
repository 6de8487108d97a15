"""The forward every path uses: log-probabilities (and entropy) of a batch's response tokens under a model, in the
padded layout or padding-free (packed), with the LM head run a chunk of tokens at a time.

:func:`response_logprobs` is the entry point (the actor's log-probs and update, the reference, SFT, the benchmarks).

Qwen2.5-VL's LM head has 152,064 rows: the full (tokens x vocab) float32 logits of a 4k-token response cost more than
a 7B model's bf16 weights, and their log-softmax and gradient as much again. Here the LM head, log-softmax, gather and
entropy run over ``chunk_tokens`` tokens at a time, forward and backward, so no (tokens x vocab) tensor larger than one
chunk exists:

- frozen head (LoRA, a frozen embedding/head, the reference): the forward also keeps, per token, the two hidden-size
  vectors the input gradient needs, ``W[target] - E_p[W]`` and (entropy bonus only) ``E_p[(log p + H) W]``; the
  backward is a few multiply-adds per token and never touches the vocabulary again;
- trainable head: the backward recomputes each chunk's logits and accumulates the weight gradient in float32.

The head runs inside the model's own forward (:func:`chunked_head` routes the LM head module's call here), so the
sharding hooks of FSDP2 (root parameters unsharded by the root's forward) and DeepSpeed ZeRO-3 (the head's weight
gathered for its module call and again for its backward) fire exactly as for the usual logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rexthinker_rl.model.cpu_matmul import outer_sum, times_weight

if TYPE_CHECKING:
    from rexthinker_rl.algo.batch import SequenceBatch

# 256 tokens x 152,064 rows x 4 bytes = 156 MB per float32 copy (the forward holds two): at 2,048 response tokens a
# micro-batch, 1/8 of the full logits. Big enough that each chunk is one efficient matrix product on CPU and GPU.
DEFAULT_CHUNK_TOKENS = 256


# ----------------------------------------------------------------------------------------------------------
# The math: (N, H) hidden states, (V, H) head weight, (N,) targets -> (N,) log-probs and entropies
# ----------------------------------------------------------------------------------------------------------


def _chunk_logits(hidden: Tensor, weight: Tensor, temperature: float) -> Tensor:
    """(c, H) x (V, H) -> (c, V) float32 logits over the temperature."""
    logits = (hidden @ weight.T).float()
    return logits.div_(temperature) if temperature != 1.0 else logits


def _expected_logit(probs: Tensor, logits: Tensor) -> Tensor:
    """sum_v p_v z_v per row, (c, V) x (c, V) -> (c,), as batched dot products (no (c, V) temporary)."""
    return (probs.unsqueeze(1) @ logits.unsqueeze(2)).view(-1)


def _chunk_stats(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """log-sum-exp, target log-prob, probabilities and entropy of (c, V) float32 logits (each (c,), probs (c, V))."""
    lse = torch.logsumexp(logits, dim=-1)  # (c,)
    target_logprobs = logits.gather(-1, targets[:, None]).squeeze(-1) - lse  # (c,)
    probs = (logits - lse[:, None]).exp_()  # (c, V)
    entropy = lse - _expected_logit(probs, logits)  # H = lse - E_p[z], finite for peaked logits
    return lse, target_logprobs, probs, entropy


def _no_grad_logprobs(hidden, weight, targets, temperature, chunk_tokens, with_entropy):
    logprobs = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
    entropy = torch.empty_like(logprobs) if with_entropy else None
    with torch.no_grad():
        for start in range(0, len(targets), chunk_tokens):
            part = slice(start, start + chunk_tokens)
            logits = _chunk_logits(hidden[part], weight, temperature)
            if with_entropy:
                _, logprobs[part], _, entropy[part] = _chunk_stats(logits, targets[part])
            else:
                logprobs[part] = logits.gather(-1, targets[part, None]).squeeze(-1) - torch.logsumexp(logits, -1)
    return logprobs, entropy


class _ChunkedHead(torch.autograd.Function):
    """Log-probs (N,) and entropy (N,) (empty unless asked) of ``targets`` under ``hidden @ weight.T / temperature``.

    Gradients, per token, with upstream g (log-prob) and gH (entropy) and p = softmax(z):
    dz = g (onehot(target) - p) - gH p (log p + H); d hidden = dz @ W / T; d W = dz^T @ hidden / T."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_tokens, with_entropy, entropy_grad):
        head_grad, hidden_grad = ctx.needs_input_grad[1], ctx.needs_input_grad[0]
        ctx.temperature, ctx.chunk_tokens, ctx.head_grad = temperature, chunk_tokens, head_grad
        ctx.hidden_dtype = hidden.dtype
        ctx.entropy_grad = with_entropy and entropy_grad
        count, width = hidden.shape
        logprobs = hidden.new_empty(count, dtype=torch.float32)
        entropy = hidden.new_empty(count if with_entropy or head_grad else 0, dtype=torch.float32)
        lse = hidden.new_empty(count, dtype=torch.float32) if head_grad else None
        # Frozen head: per-token vectors of the input gradient, so backward needs no vocabulary pass.
        keep = hidden_grad and not head_grad
        towards_target = hidden.new_empty(count, width, dtype=torch.float32) if keep else None
        towards_entropy = hidden.new_empty(count, width, dtype=torch.float32) if keep and ctx.entropy_grad else None
        for start in range(0, count, chunk_tokens):
            part = slice(start, start + chunk_tokens)
            logits = _chunk_logits(hidden[part], weight, temperature)
            chunk_lse, logprobs[part], probs, chunk_entropy = _chunk_stats(logits, targets[part])
            if entropy.numel():
                entropy[part] = chunk_entropy
            if lse is not None:
                lse[part] = chunk_lse
            if keep:
                expected_row = times_weight(probs, weight)  # E_p[W]: (c, H)
                towards_target[part] = weight[targets[part]].float() - expected_row
                if towards_entropy is not None:  # p (log p + H) = p (z - lse + H), built in the logits' storage
                    weighted = logits.sub_((chunk_lse - chunk_entropy)[:, None]).mul_(probs)
                    towards_entropy[part] = times_weight(weighted, weight)
            del logits, probs
        if head_grad:
            ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        else:
            ctx.save_for_backward(towards_target, towards_entropy)
        entropy_out = entropy if with_entropy else hidden.new_empty(0, dtype=torch.float32)
        if not ctx.entropy_grad:
            ctx.mark_non_differentiable(entropy_out)
        return logprobs, entropy_out

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        if grad_entropy is None or not ctx.entropy_grad or grad_entropy.numel() == 0:
            grad_entropy = None
        if not ctx.head_grad:
            towards_target, towards_entropy = ctx.saved_tensors
            grad_hidden = grad_logprobs[:, None] * towards_target
            if grad_entropy is not None:
                grad_hidden = grad_hidden - grad_entropy[:, None] * towards_entropy
            return (grad_hidden / ctx.temperature).to(ctx.hidden_dtype), None, None, None, None, None, None
        return (*_recompute_backward(ctx, grad_logprobs, grad_entropy), None, None, None, None, None)


def _recompute_backward(ctx, grad_logprobs: Tensor, grad_entropy: Tensor | None) -> tuple[Tensor | None, Tensor]:
    """Gradients of hidden and weight, recomputing each chunk's logits; the weight gradient summed in float32."""
    hidden, weight, targets, lse, entropy = ctx.saved_tensors
    temperature = ctx.temperature
    grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
    rows = torch.arange(min(ctx.chunk_tokens, len(targets)), device=hidden.device)
    for start in range(0, len(targets), ctx.chunk_tokens):
        part = slice(start, start + ctx.chunk_tokens)
        logits = _chunk_logits(hidden[part], weight, temperature)
        probs = (logits - lse[part, None]).exp_()  # (c, V)
        if grad_entropy is not None:  # -gH p (z - lse + H), in the logits' storage
            grad_logits = logits.sub_((lse[part] - entropy[part])[:, None]).mul_(probs).mul_(-grad_entropy[part, None])
            grad_logits.sub_(probs.mul_(grad_logprobs[part, None]))
        else:
            grad_logits = probs.mul_(-grad_logprobs[part, None])
        count = len(grad_logits)
        grad_logits[rows[:count], targets[part]] += grad_logprobs[part]
        grad_logits.div_(temperature)
        if grad_hidden is not None:
            grad_hidden[part] = times_weight(grad_logits, weight)
        if weight.dtype == torch.float32:
            grad_weight.addmm_(grad_logits.T, hidden[part])
        else:
            grad_weight += outer_sum(grad_logits.to(weight.dtype), hidden[part])
        del logits, probs, grad_logits
    return grad_hidden, grad_weight.to(weight.dtype)


def logprobs_from_logits(logits: Tensor, token_ids: Tensor) -> Tensor:
    """Log-probability of each token id under ``logits`` (computed in float32).

    logits: (batch, seq, vocab); token_ids: (batch, seq) -> (batch, seq) float32.
    Upcast because a bf16 log_softmax is too coarse for the importance ratio exp(logp - old_logp).
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)  # (batch, seq, vocab)
    return logprobs.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1)  # (batch, seq)


def entropy_from_logits(logits: Tensor, grad: bool = True) -> Tensor:
    """Entropy of the categorical distribution at each position, in float32.

    logits: (batch, seq, vocab) -> (batch, seq). Uses H = logsumexp(z) - sum(softmax(z) * z), which stays
    finite for large or peaked logits (no log of a zero probability). ``grad=False`` computes it as a metric only:
    no autograd graph over the (batch, seq, vocab) softmax, so no backward pass through it (entropy_coef == 0).
    """
    if not grad:
        with torch.no_grad():
            return entropy_from_logits(logits.detach())
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)  # (batch, seq, vocab)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)  # (batch, seq)


def full_logprobs(
    hidden: Tensor, weight: Tensor, targets: Tensor, temperature: float, with_entropy: bool, entropy_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """The unchunked reference: all (N, V) logits at once (what ``actor.logprob_chunk_tokens=0`` runs)."""
    logits = _chunk_logits(hidden, weight, temperature)  # (N, V)
    logprobs = logprobs_from_logits(logits, targets)
    entropy = entropy_from_logits(logits, grad=entropy_grad) if with_entropy else None
    return logprobs, entropy


def token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    with_entropy: bool = False,
    entropy_grad: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of ``targets`` (...,) under the head ``weight`` (V, H) applied to ``hidden`` (..., H), in float32,
    and optionally the entropy of each position (differentiable unless ``entropy_grad`` is False).
    ``chunk_tokens`` <= 0 computes every logit at once."""
    shape = targets.shape
    flat_hidden, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1).long()
    if chunk_tokens <= 0:
        logprobs, entropy = full_logprobs(flat_hidden, weight, flat_targets, temperature, with_entropy, entropy_grad)
    elif torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        logprobs, entropy = _ChunkedHead.apply(
            flat_hidden, weight, flat_targets, temperature, chunk_tokens, with_entropy, entropy_grad
        )
        entropy = entropy if with_entropy else None
    else:
        logprobs, entropy = _no_grad_logprobs(
            flat_hidden, weight, flat_targets, temperature, chunk_tokens, with_entropy
        )
    return logprobs.view(shape), None if entropy is None else entropy.view(shape)


# ----------------------------------------------------------------------------------------------------------
# Inside the model's forward: the LM head module's call computes log-probs instead of logits
# ----------------------------------------------------------------------------------------------------------


@dataclass
class HeadRequest:
    targets: Tensor  # (batch, K) the token each kept position predicts
    temperature: float = 1.0
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    with_entropy: bool = False
    entropy_grad: bool = True


def output_head(model) -> torch.nn.Linear:
    """The LM head module of ``model``, through DeepSpeed (``.module``) and peft (``get_base_model``) wrappers."""
    module = getattr(model, "module", model)
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        raise TypeError(f"{type(base).__name__}: chunked log-probs need a bias-free nn.Linear LM head, got {head!r}")
    return head


@contextmanager
def chunked_head(model, request: HeadRequest) -> Iterator[None]:
    """While open, ``model``'s LM head returns (batch, K, 2) [log-prob, entropy] of ``request.targets`` from the
    (batch, K, H) hidden states it is called with, instead of (batch, K, vocab) logits. Only the head's call is
    redirected (an instance attribute, removed on exit): its weight, parameter names and hooks stay as they are."""
    head = output_head(model)

    def forward(hidden: Tensor) -> Tensor:
        logprobs, entropy = token_logprobs(
            hidden,
            head.weight,
            request.targets,
            request.temperature,
            request.chunk_tokens,
            request.with_entropy,
            request.entropy_grad,
        )
        return torch.stack([logprobs, entropy if entropy is not None else torch.zeros_like(logprobs)], dim=-1)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def model_logprobs(model, inputs: dict, positions: Tensor, request: HeadRequest) -> tuple[Tensor, Tensor | None]:
    """(batch, K) log-probs (and entropy when asked) of ``request.targets``, predicted at sequence ``positions`` (K,)
    by one forward of ``model`` over ``inputs``."""
    with chunked_head(model, request):
        output = model(**inputs, logits_to_keep=positions, use_cache=False).logits
    if output.shape[-1] != 2 or output.shape[:-1] != request.targets.shape:
        raise RuntimeError(
            f"{type(model).__name__} returned logits of shape {tuple(output.shape)}, not (batch, K, 2): its forward "
            "does not call get_output_embeddings() on the kept hidden states (only Qwen2/2.5-VL are supported)"
        )
    entropy = output[..., 1] if request.with_entropy else None
    if entropy is not None and not request.entropy_grad:
        entropy = entropy.detach()
    return output[..., 0], entropy


# ----------------------------------------------------------------------------------------------------------
# The two layouts of a batch: padded (left-padded prompts, right-padded responses) and packed (padding-free)
#
# Packed: every row's real tokens laid end to end in one sequence of length T. transformers' Qwen2.5-VL takes packed
# input as ``position_ids`` of shape (4, 1, T): row 0 holds *text* positions that restart at 0 where each sequence
# starts, rows 1-3 the mRoPE (temporal, height, width) positions each sequence would have alone, and no attention
# mask. From the restarting text positions the model builds attention that never crosses a sequence boundary: a
# block-diagonal causal mask for sdpa/eager (what runs on CPU), and cu_seqlens for flash_attention_2 (on GPU, where
# packing also saves the O(T^2) mask). Only the positions that predict a response token go through the LM head.
# ----------------------------------------------------------------------------------------------------------


def response_logprobs(
    model,
    batch: SequenceBatch,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    packed: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probabilities (batch, R) of the response tokens under ``model``, and optionally their entropy (batch, R),
    differentiable unless ``entropy_grad`` is False (then a metric only), from one forward in the padded layout or,
    with ``packed`` (``actor.padding_free``), the packed one (then 0 where the response mask is 0). The LM head runs
    ``chunk_tokens`` tokens at a time: no (batch, R, vocab) logits are ever held."""
    forward = _packed_response_logprobs if packed else _padded_response_logprobs
    request = partial(
        HeadRequest,
        temperature=temperature,
        chunk_tokens=chunk_tokens,
        with_entropy=with_entropy,
        entropy_grad=entropy_grad,
    )
    return forward(model, batch, request)


def _padded_response_logprobs(
    model, batch: SequenceBatch, request: Callable[[Tensor], HeadRequest]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    prompt, response = batch.prompt_length, batch.response_length
    # The response tokens are predicted from positions [P-1, P+R-1).
    positions = torch.arange(prompt - 1, prompt + response - 1, device=batch.input_ids.device)
    return model_logprobs(model, batch.model_inputs(), positions, request(batch.input_ids[:, prompt:]))


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


def _packed_response_logprobs(
    model, batch: SequenceBatch, request: Callable[[Tensor], HeadRequest]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    packed = pack(model, batch)
    inputs = {
        "input_ids": packed.input_ids,
        "position_ids": packed.position_ids,
        "pixel_values": batch.pixel_values,
        "image_grid_thw": batch.image_grid_thw,
    }
    token_logprobs, token_entropy = model_logprobs(model, inputs, packed.predictors, request(packed.targets[None]))
    mask = batch.response_mask.bool()
    logprobs = torch.zeros(mask.shape, dtype=token_logprobs.dtype, device=token_logprobs.device)
    logprobs = logprobs.masked_scatter(mask, token_logprobs[0])  # (batch, R)
    if token_entropy is None:
        return logprobs, None
    return logprobs, torch.zeros_like(logprobs).masked_scatter(mask, token_entropy[0])
