"""The actor's chunked LM head on the tiny model: log-probs, entropy and every parameter's gradient equal those of the
all-logits head (``actor.logprob_chunk_tokens=0``), padded and packed, full fine-tuning (trainable tied head) and LoRA
(frozen head); and no (tokens x vocab) tensor larger than one chunk is ever created, forward or backward."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from rexthinker_rl.config import load_config
from rexthinker_rl.train.policy import Policy
from tests.tiny.test_policy import BASE, _batch

CHUNK = 7  # the test batch has 27 response tokens: 4 chunks, the last one partial
CLOSE = {"atol": 2e-5, "rtol": 1e-5}


def _forward_backward(model_dir, overrides: list[str]):
    """Log-probs, entropy and parameter gradients of a loss that uses both (entropy bonus on)."""
    config = load_config(None, BASE + overrides + ["actor.entropy_coef=0.01", "rollout.temperature=0.8"])
    policy = Policy(config, str(model_dir), trainable=True)
    policy.model.train()
    batch = _batch(model_dir)
    logprobs, entropy = policy._response_logprobs(batch, with_entropy=True)
    mask = batch.response_mask
    ((logprobs * batch.advantages[:, None] + 0.3 * entropy) * mask).sum().backward()
    grads = {name: p.grad.clone() for name, p in policy.model.named_parameters() if p.grad is not None}
    return logprobs.detach() * mask, entropy.detach() * mask, grads


@pytest.mark.parametrize(
    "layout",
    [[], ["actor.padding_free=true"], ["model.lora.rank=4", "model.lora.alpha=8"]],
    ids=["padded", "packed", "lora"],
)
def test_chunked_head_equals_all_logits(tiny_model_dir, layout):
    full = _forward_backward(tiny_model_dir, layout + ["actor.logprob_chunk_tokens=0"])
    chunked = _forward_backward(tiny_model_dir, layout + [f"actor.logprob_chunk_tokens={CHUNK}"])
    torch.testing.assert_close(chunked[0], full[0], **CLOSE)
    torch.testing.assert_close(chunked[1], full[1], **CLOSE)
    assert set(chunked[2]) == set(full[2]) and len(full[2]) > 5
    for name, grad in full[2].items():
        torch.testing.assert_close(chunked[2][name], grad, **CLOSE, msg=lambda m, n=name: f"{n}: {m}")
    head_grad = [name for name in full[2] if "embed_tokens" in name or "lm_head" in name]
    assert bool(head_grad) == ("model.lora.rank=4" not in layout)  # tied head trains in full fine-tuning only


class _VocabTensors(TorchDispatchMode):
    """Records the largest number of rows of any (..., vocab) float tensor an op allocates (views allocate nothing:
    the head weight's transpose is (hidden, vocab))."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.most_rows = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:
            return out
        for tensor in out if isinstance(out, tuple | list) else [out]:
            logits_like = isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.ndim >= 2
            if logits_like and tensor.shape[-1] == self.vocab:
                self.most_rows = max(self.most_rows, tensor.numel() // self.vocab)
        return out


@pytest.mark.parametrize("chunk", [0, CHUNK])
def test_no_tensor_holds_more_than_a_chunk_of_logits(tiny_model_dir, chunk):
    config = load_config(None, BASE + [f"actor.logprob_chunk_tokens={chunk}", "actor.entropy_coef=0.01"])
    policy = Policy(config, str(tiny_model_dir), trainable=True)
    vocab = policy.model.get_output_embeddings().weight.shape[0]
    batch = _batch(tiny_model_dir)
    watch = _VocabTensors(vocab)
    with watch:
        logprobs, entropy = policy._response_logprobs(batch, with_entropy=True)
        (logprobs.sum() + entropy.sum()).backward()
        with torch.no_grad():
            policy._response_logprobs(batch, with_entropy=True)
    if chunk:
        assert 0 < watch.most_rows <= chunk
    else:  # the check can fail: the all-logits head holds every response position's row at once
        assert watch.most_rows >= batch.response_length * len(batch)
