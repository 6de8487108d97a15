"""Reduced-precision matmuls on a CPU, in float32 where torch's own kernel is scalar.

torch's bfloat16/float16 CPU matmul is fast only where oneDNN takes it: on an AVX2 CPU (no AVX-512, no AMX) only
``x @ W.T``, a Linear's forward. The products of a backward pass - the input gradient ``grad @ W``, the weight gradient
``grad.T @ x`` - and the frozen LM head's ``probs @ W`` fall back to a scalar kernel, 14-57x slower than float32 at
Qwen2.5-VL-7B's shapes (docs/performance.md, ``benchmarks/bf16_cpu_matmul.py``). Here those products run in float32
from the reduced-precision operands (the values the kernel would multiply), a slice at a time so that no float32 copy
of a whole weight is ever made; the result is rounded to the dtype the kernel would return. On any other device, or
in float32, nothing changes: the usual matmul runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCED = (torch.bfloat16, torch.float16)
# float32 elements of one slice of an operand, upcast at a time (8,192 rows of Qwen's 3,584-wide head: 117 MB).
SLICE_ELEMENTS = 8192 * 3584


def reduced_on_cpu(tensor: Tensor) -> bool:
    return tensor.device.type == "cpu" and tensor.dtype in REDUCED


def times_weight(rows: Tensor, weight: Tensor) -> Tensor:
    """(c, V) x (V, H) -> (c, H) float32, the (c, V) operand rounded to the weight's dtype as the matmul would. On a
    CPU, a bfloat16/float16 weight is multiplied a slice of its rows at a time in float32 (32 tokens x Qwen's 152,064
    x 3,584 head: 162 s in bf16, 2.6 s this way). Elsewhere the matmul runs in the weight's dtype."""
    rows = rows.to(weight.dtype)
    if not reduced_on_cpu(weight):
        return (rows @ weight).float()
    out = rows.new_zeros(rows.shape[0], weight.shape[1], dtype=torch.float32)
    step = max(1, SLICE_ELEMENTS // weight.shape[1])
    for start in range(0, weight.shape[0], step):
        part = slice(start, start + step)
        out.addmm_(rows[:, part].float(), weight[part].float())
    return out


def outer_sum(grad: Tensor, inputs: Tensor) -> Tensor:
    """grad.T @ inputs, (N, O) x (N, I) -> (O, I) in grad's dtype: on a CPU in reduced precision, summed in float32
    over slices of the N rows (a Linear's weight gradient)."""
    if not reduced_on_cpu(grad):
        return grad.T @ inputs
    out = grad.new_zeros(grad.shape[1], inputs.shape[1], dtype=torch.float32)
    step = max(1, SLICE_ELEMENTS // max(grad.shape[1], inputs.shape[1]))
    for start in range(0, grad.shape[0], step):
        part = slice(start, start + step)
        out.addmm_(grad[part].float().T, inputs[part].float())
    return out.to(grad.dtype)


class _LinearFunction(torch.autograd.Function):
    """F.linear forward (oneDNN's fast layout); backward through times_weight and outer_sum."""

    @staticmethod
    def forward(ctx, inputs: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(inputs if ctx.needs_input_grad[1] else None, weight)
        return F.linear(inputs, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        inputs, weight = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        grad_inputs = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_inputs = times_weight(flat, weight).to(grad.dtype).view(*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            grad_weight = outer_sum(flat, inputs.reshape(-1, inputs.shape[-1]))
        if ctx.needs_input_grad[2]:
            grad_bias = flat.float().sum(0).to(grad.dtype)
        return grad_inputs, grad_weight, grad_bias


class CpuLinear(torch.nn.Linear):
    """An nn.Linear (same parameters, names, hooks and isinstance) whose backward on a CPU in bfloat16/float16 runs
    in float32 slices; otherwise, and whenever no gradient is wanted, exactly nn.Linear."""

    def forward(self, inputs: Tensor) -> Tensor:
        weight = self.weight
        wanted = inputs.requires_grad or weight.requires_grad
        if torch.is_grad_enabled() and wanted and reduced_on_cpu(weight) and inputs.dtype == weight.dtype:
            return _LinearFunction.apply(inputs, weight, self.bias)
        return F.linear(inputs, weight, self.bias)


def use_cpu_linear(model: torch.nn.Module) -> int:
    """Turn every plain nn.Linear of ``model`` into a CpuLinear in place (its class only); returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = CpuLinear
            count += 1
    return count
