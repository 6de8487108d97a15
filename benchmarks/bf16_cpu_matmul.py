"""Reduced-precision matmuls on this CPU, at Qwen2.5-VL-7B's shapes: the layouts a training step uses, in bfloat16
against float32, and the LM head's (c, V) x (V, H) product as ``logprobs._times_head`` computes it on CPU.

Without AVX-512 (``torch.backends.cpu.get_cpu_capability()`` says AVX2), torch's bfloat16 matmul with an untransposed
right operand falls back to a scalar kernel: a Linear's input gradient (grad @ W) and the frozen head's E_p[W]
(probs @ W) run tens of times slower than in float32. This prints each time and the ratio, so a user can see what
``model.dtype=bfloat16`` costs on their CPU before training a 7B on it.

    python benchmarks/bf16_cpu_matmul.py [--tokens 8] [--repeats 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from rexthinker_rl.model.logprobs import _times_head

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
    cases = {
        "head logits  hidden @ W.T": (lambda: hidden @ head.T, lambda: hidden.float() @ head32.T),
        "head E_p[W]  probs @ W": (lambda: probs.bfloat16() @ head, lambda: _times_head(probs, head)),
        "MLP input grad  grad @ W": (lambda: grad @ up, lambda: grad.float() @ up32),
    }
    print(
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads, "
        f"{args.tokens} tokens"
    )
    print(f"{'product':28s} {'bfloat16 s':>11s} {'float32 s':>10s} {'bf16/f32':>9s}")
    for name, (reduced, full) in cases.items():
        slow, fast = _seconds(reduced, args.repeats), _seconds(full, args.repeats)
        print(f"{name:28s} {slow:11.3f} {fast:10.3f} {slow / fast:9.1f}")
    print("(the float32 column of 'head E_p[W]' is logprobs._times_head on bfloat16 weights, as training runs it)")


if __name__ == "__main__":
    main()
