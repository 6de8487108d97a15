"""model/cpu_matmul.py: on CPU, the bfloat16 products torch runs with a scalar kernel (the LM head's E_p[W], a Linear's
input and weight gradients) run in float32 slices of the rounded operands.

Bounds from the arithmetic: each float32 result is a sum of K products of bf16 values (exact in float32), in any
order, so it lies within gamma_K = K u / (1 - K u) <= (K + 1) u (u = 2^-24) of the sum of the products' magnitudes from
the float64 truth of the same operands; a result rounded to bf16 adds half an ulp, at most 2^-8 of its magnitude."""

import pytest
import torch

from rexthinker_rl.model import cpu_matmul
from rexthinker_rl.model.cpu_matmul import CpuLinear, outer_sum, times_weight, use_cpu_linear

N, K, M = 23, 61, 16  # rows, inner size, columns: slices of 7 leave a partial last slice


def _rand(*shape, seed: int, dtype=torch.bfloat16) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _within_float32_sum(got: torch.Tensor, a: torch.Tensor, b: torch.Tensor, inner: int, rounded: bool) -> bool:
    truth, size = a.double() @ b.double(), a.double().abs() @ b.double().abs()
    bound = (inner + 1) * 2.0**-24 * size
    if rounded:
        bound = bound + 2.0**-8 * (truth.abs() + bound)
    return bool(torch.all((got.double() - truth).abs() <= bound))


def test_head_product_in_row_slices_is_the_exact_product_of_the_rounded_operands(monkeypatch):
    monkeypatch.setattr(cpu_matmul, "SLICE_ELEMENTS", 7 * M)  # 7 of the 61 weight rows a slice: 9 slices
    rows, weight = torch.rand(N, K, generator=torch.Generator().manual_seed(0)), _rand(K, M, seed=1)
    got = times_weight(rows, weight)
    assert got.dtype == torch.float32 and _within_float32_sum(got, rows.bfloat16(), weight, K, rounded=False)
    assert not torch.equal(rows.bfloat16().double(), rows.double())  # the rounding is really there to be applied


def test_weight_gradient_in_token_slices(monkeypatch):
    monkeypatch.setattr(cpu_matmul, "SLICE_ELEMENTS", 7 * K)  # 7 of the 23 tokens a slice: 4 slices
    grad, inputs = _rand(N, K, seed=2), _rand(N, M, seed=3)
    got = outer_sum(grad, inputs)
    assert got.dtype == torch.bfloat16 and _within_float32_sum(got, grad.T, inputs, N, rounded=True)
    assert torch.equal(outer_sum(grad.float(), inputs.float()), grad.float().T @ inputs.float())  # float32: as is


@pytest.mark.parametrize("bias", [True, False])
def test_cpu_linear_backward_is_the_product_of_the_rounded_operands(monkeypatch, bias):
    """A 3-D input through a bf16 CpuLinear: the forward is nn.Linear's, bit for bit; each gradient within the
    float32-sum bound of its float64 truth, rounded once to bf16."""
    monkeypatch.setattr(cpu_matmul, "SLICE_ELEMENTS", 5 * M)
    plain = torch.nn.Linear(M, K, bias=bias).bfloat16()  # weight (K, M): input gradient sums over K outputs
    ours = torch.nn.Linear(M, K, bias=bias).bfloat16()
    ours.load_state_dict(plain.state_dict())
    assert use_cpu_linear(ours) == 1 and type(ours) is CpuLinear
    inputs = _rand(2, N, M, seed=4).requires_grad_()
    upstream = _rand(2, N, K, seed=5)
    out = ours(inputs)
    assert torch.equal(out, plain(inputs.detach()))
    out.backward(upstream)
    flat_grad, flat_inputs = upstream.reshape(-1, K), inputs.detach().reshape(-1, M)
    assert _within_float32_sum(inputs.grad.reshape(-1, M), flat_grad, ours.weight.detach(), K, rounded=True)
    assert _within_float32_sum(ours.weight.grad, flat_grad.T, flat_inputs, 2 * N, rounded=True)
    if bias:
        ones = torch.ones(1, 2 * N, dtype=torch.bfloat16)
        assert _within_float32_sum(ours.bias.grad[None], ones, flat_grad, 2 * N, rounded=True)


def test_float32_and_no_grad_are_nn_linear_exactly():
    plain = torch.nn.Linear(M, K)
    ours = torch.nn.Linear(M, K)
    ours.load_state_dict(plain.state_dict())
    use_cpu_linear(ours)
    inputs = torch.randn(N, M, generator=torch.Generator().manual_seed(6))
    mine, theirs = inputs.clone().requires_grad_(), inputs.clone().requires_grad_()
    ours(mine).square().sum().backward()
    plain(theirs).square().sum().backward()
    assert torch.equal(mine.grad, theirs.grad) and torch.equal(ours.weight.grad, plain.weight.grad)
    reduced = torch.nn.Linear(M, K).bfloat16()
    use_cpu_linear(reduced)
    with torch.no_grad():
        assert reduced(inputs.bfloat16()).grad_fn is None and torch.equal(
            reduced(inputs.bfloat16()), torch.nn.functional.linear(inputs.bfloat16(), reduced.weight, reduced.bias)
        )


def test_use_cpu_linear_swaps_plain_linears_only_and_keeps_names():
    class Head(torch.nn.Linear):  # a subclass is someone else's forward: left alone
        pass

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), Head(4, 4), torch.nn.Linear(4, 2))
    names = list(model.state_dict())
    assert use_cpu_linear(model) == 2
    assert [type(m).__name__ for m in model] == ["CpuLinear", "ReLU", "Head", "CpuLinear"]
    assert list(model.state_dict()) == names and isinstance(model[0], torch.nn.Linear)
