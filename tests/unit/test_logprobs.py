"""Chunked log-probs and entropy (rexthinker_rl.model.logprobs) equal the all-logits computation: values and gradients, with
a frozen or a trainable head, with and without an entropy gradient, at any temperature and chunk size."""

import math

import pytest
import torch

from rexthinker_rl.model.logprobs import entropy_from_logits, logprobs_from_logits, token_logprobs

N, H, V = 23, 16, 61  # 23 tokens: chunks of 5 leave a partial last chunk


def _run(chunk, head_trainable, entropy_grad, temperature, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2, N, H, generator=generator).to(dtype).requires_grad_(True)  # (batch, tokens, H)
    weight = (torch.randn(V, H, generator=generator) / 2).to(dtype).requires_grad_(head_trainable)
    targets = torch.randint(V, (2, N), generator=generator)
    upstream_logprob, upstream_entropy = torch.randn(2, N, generator=generator), torch.randn(2, N, generator=generator)
    logprobs, entropy = token_logprobs(hidden, weight, targets, temperature, chunk, True, entropy_grad)
    loss = (logprobs * upstream_logprob).sum() + (entropy * upstream_entropy).sum() * entropy_grad
    loss.backward()
    return logprobs.detach(), entropy.detach(), hidden.grad, weight.grad


@pytest.mark.parametrize("head_trainable", [False, True])
@pytest.mark.parametrize("entropy_grad", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_equals_all_logits(head_trainable, entropy_grad, temperature):
    full = _run(0, head_trainable, entropy_grad, temperature)
    for chunk in (5, N, 1000):
        chunked = _run(chunk, head_trainable, entropy_grad, temperature)
        for name, got, expected in zip(("logprobs", "entropy", "hidden grad"), chunked, full, strict=False):
            torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
        if head_trainable:
            torch.testing.assert_close(chunked[3], full[3], atol=2e-5, rtol=1e-5)
        else:
            assert chunked[3] is None and full[3] is None
    assert full[2].abs().max() > 0.1  # gradients of real size: the comparison is not between zeros


def test_entropy_without_grad_is_a_metric_only():
    hidden = torch.randn(N, H, requires_grad=True)
    weight = torch.randn(V, H)
    logprobs, entropy = token_logprobs(hidden, weight, torch.randint(V, (N,)), 1.0, 5, True, entropy_grad=False)
    assert logprobs.requires_grad and not entropy.requires_grad
    assert torch.all(entropy > 0) and torch.all(entropy <= torch.log(torch.tensor(float(V))) + 1e-5)


def test_no_grad_pass_equals_the_graph_pass():
    hidden, weight, targets = torch.randn(N, H), torch.randn(V, H), torch.randint(V, (N,))
    with torch.no_grad():
        plain = token_logprobs(hidden, weight, targets, 0.9, 4, True)
    graph = token_logprobs(hidden.requires_grad_(True), weight, targets, 0.9, 4, True)
    for got, expected in zip(plain, graph, strict=True):
        torch.testing.assert_close(got, expected.detach())
    expected = torch.log_softmax((hidden @ weight.T) / 0.9, -1).gather(-1, targets[:, None])[:, 0].detach()
    torch.testing.assert_close(plain[0], expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # log-probs alone (the reference and old-log-prob passes)
        alone, no_entropy = token_logprobs(hidden, weight, targets, 0.9, 4)
    torch.testing.assert_close(alone, expected, atol=1e-5, rtol=1e-5)
    assert no_entropy is None


def test_bfloat16_head_matches_within_bf16_round_off():
    full = _run(0, True, True, 1.0, dtype=torch.bfloat16)
    chunked = _run(5, True, True, 1.0, dtype=torch.bfloat16)
    torch.testing.assert_close(chunked[0], full[0])  # log-probs are float32 from the same bf16 logits
    assert chunked[2].dtype == chunked[3].dtype == torch.bfloat16
    torch.testing.assert_close(chunked[2].float(), full[2].float(), atol=0.05, rtol=0.02)
    torch.testing.assert_close(chunked[3].float(), full[3].float(), atol=0.05, rtol=0.02)


def test_bfloat16_frozen_head_matches_within_bf16_round_off():
    full = _run(0, False, True, 1.0, dtype=torch.bfloat16)
    chunked = _run(5, False, True, 1.0, dtype=torch.bfloat16)
    torch.testing.assert_close(chunked[0], full[0])
    assert chunked[2].dtype == torch.bfloat16
    torch.testing.assert_close(chunked[2].float(), full[2].float(), atol=0.05, rtol=0.02)


def test_entropy_by_hand_and_stable():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]]))  # (1, 2, 3)
    expected = torch.tensor([[1.5 * math.log(2), math.log(3)]])  # 0.5 ln 2 + 2 * 0.25 ln 4; uniform: ln 3
    torch.testing.assert_close(entropy_from_logits(logits), expected)
    torch.testing.assert_close(entropy_from_logits(logits + 1e4), expected, atol=1e-3, rtol=0)
    peaked = entropy_from_logits(torch.tensor([[[1000.0, 0.0, -1000.0]]]))
    assert torch.isfinite(peaked).all() and peaked.abs().item() < 1e-6


def test_entropy_upcasts_bf16():
    logits = torch.randn(2, 3, 11).to(torch.bfloat16)
    entropy = entropy_from_logits(logits)
    assert entropy.dtype == torch.float32 and entropy.shape == (2, 3)
    assert (entropy <= math.log(11) + 1e-5).all() and (entropy >= 0).all()


def test_logprobs_from_logits_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)], [2.0, 2.0]]])  # probs [0.25, 0.75] and [0.5, 0.5]
    logprobs = logprobs_from_logits(logits, torch.tensor([[1, 0]]))
    torch.testing.assert_close(logprobs, torch.tensor([[math.log(0.75), math.log(0.5)]]))
    assert logprobs_from_logits(logits.to(torch.bfloat16), torch.tensor([[1, 0]])).dtype == torch.float32
