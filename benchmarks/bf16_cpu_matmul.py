"""Reduced-precision matmuls on this CPU, at Qwen2.5-VL-7B's shapes: the layouts a training step uses, in bfloat16
against float32, and what training runs on bfloat16 weights (``model/cpu_matmul.py``: the products of the scalar layouts
in float32 slices, ``times_weight`` and ``outer_sum``).

Without AVX-512 (``torch.backends.cpu.get_cpu_capability()`` says AVX2), torch's bfloat16 matmul with an untransposed
right operand falls back to a scalar kernel: a Linear's input gradient (grad @ W) and the frozen head's E_p[W]
(probs @ W) run tens of times slower than in float32. This prints each time and the ratio, so a user can see what
``model.dtype=bfloat16`` costs on their CPU before training a 7B on it, and what the float32 slices win back.

    python benchmarks/bf16_cpu_matmul.py [--tokens 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from rexthinker_rl.model.cpu_matmul import outer_sum, times_weight

VOCAB, HIDDEN, MLP = 152_064, 3_584, 18_944  # Qwen2.5-VL-7B


def _seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=8, help="rows of the left operand (tokens in a micro-batch)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    head, up = torch.randn(VOCAB, HIDDEN).bfloat16(), torch.randn(MLP, HIDDEN).bfloat16()
    probs = torch.softmax(torch.randn(args.tokens, VOCAB), -1)
    grad = torch.randn(args.tokens, MLP).bfloat16()
    hidden = torch.randn(args.tokens, HIDDEN).bfloat16()
    head32, up32 = head.float(), up.float()  # float32 weights as a float32 model holds them
    inputs = torch.randn(args.tokens, HIDDEN).bfloat16()
    cases = {  # (bf16 matmul, float32 matmul, what training runs on the bf16 weights)
        "head logits  hidden @ W.T": (
            lambda: hidden @ head.T,
            lambda: hidden.float() @ head32.T,
            lambda: hidden @ head.T,  # oneDNN's layout: left as it is
        ),
        "head E_p[W]  probs @ W": (
            lambda: probs.bfloat16() @ head,
            lambda: probs @ head32,
            lambda: times_weight(probs, head),
        ),
        "MLP input grad  grad @ W": (lambda: grad @ up, lambda: grad.float() @ up32, lambda: times_weight(grad, up)),
        "MLP weight grad  grad.T @ x": (
            lambda: grad.T @ inputs,
            lambda: grad.float().T @ inputs.float(),
            lambda: outer_sum(grad, inputs),
        ),
    }
    print(
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
        f"{args.tokens} tokens"
    )
    print(f"{'product':30s} {'bfloat16 s':>11s} {'float32 s':>10s} {'bf16/f32':>9s} {'ours s':>8s} {'bf16/ours':>10s}")
    for name, (reduced, full, ours) in cases.items():
        slow, fast, mine = (_seconds(fn, args.repeats) for fn in (reduced, full, ours))
        print(f"{name:30s} {slow:11.3f} {fast:10.3f} {slow / fast:9.1f} {mine:8.3f} {slow / mine:10.1f}")
    print("(ours: model/cpu_matmul.py on the bfloat16 weights, as training runs them: CpuLinear's backward, the head)")


if __name__ == "__main__":
    main()
