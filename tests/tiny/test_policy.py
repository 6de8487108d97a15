"""The actor's log-probs and update on the tiny model: exact micro-batching, frozen vision tower, non-finite guard."""

import math

import pytest
import torch
from PIL import Image

from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts, split_mini_batches
from rexthinker_rl.config import load_config
from rexthinker_rl.model.loading import load_processor
from rexthinker_rl.train.policy import ADAMW_KERNELS, NonFiniteUpdateError, Policy

PIXELS = 112 * 112
BASE = [
    "trainer.device=cpu",
    "model.dtype=float32",
    "rollout.dtype=float32",
    "model.gradient_checkpointing=false",
    f"data.min_pixels={PIXELS}",
    f"data.max_pixels={PIXELS}",
    "data.rollout_batch_size=2",
    "actor.global_batch_size=2",
    "rollout.n=3",
    "actor.lr=1e-3",
    "actor.max_grad_norm=1e9",
]


def _batch(model_dir, seed=0):
    processor = load_processor(str(model_dir), PIXELS, PIXELS)
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for t in ["the red circle", "all blue squares on the left side"]
    ]
    images = [Image.new("RGB", (112, 112), c) for c in ("red", "blue")]
    encoded = encode_prompts(processor, texts, images)
    generator = torch.Generator().manual_seed(seed)
    lengths = [5, 1, 9, 3, 7, 2]  # uneven on purpose
    responses = [torch.randint(20, 300, (n,), generator=generator).tolist() for n in lengths]
    batch = build_sequence_batch(encoded, [0, 0, 0, 1, 1, 1], responses, processor.tokenizer.pad_token_id)
    batch.advantages = torch.tensor([1.0, -0.5, 0.2, -1.0, 0.7, 0.3])
    return batch


def _updated(model_dir, overrides):
    config = load_config(None, BASE + overrides)
    policy = Policy(config, str(model_dir), trainable=True, total_updates=4)
    batch = _batch(model_dir)
    batch.old_logprobs = policy.compute_logprobs(batch)
    batch.ref_logprobs = batch.old_logprobs + 0.01
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    metrics = policy.update(split_mini_batches(batch, config)[0])
    return policy, before, metrics


def test_update_changes_language_weights_not_frozen_vision(tiny_model_dir):
    policy, before, metrics = _updated(tiny_model_dir, ["actor.micro_batch_size_per_device_for_update=6"])
    changed = {n for n, p in policy.model.named_parameters() if not torch.equal(before[n], p)}
    assert any("language_model" in n or "layers" in n for n in changed)
    assert not any("visual" in n for n in changed)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert metrics["actor/skipped_updates"] == 0.0


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_micro_batching_is_exact(tiny_model_dir, mode):
    """One micro-batch of 6 or three of 2 (uneven token counts): the same accumulated gradient.

    Gradients, not weights, are compared: Adam's first step is ~lr * sign(g), which turns float noise on
    near-zero gradient entries into full-size differences."""
    micro = "actor.micro_batch_size_per_device_for_update="
    whole, _, _ = _updated(tiny_model_dir, [micro + "6", f"actor.loss_agg_mode={mode}"])
    split, _, _ = _updated(tiny_model_dir, [micro + "2", f"actor.loss_agg_mode={mode}"])
    compared = 0
    for (name, a), b in zip(whole.model.named_parameters(), split.model.parameters(), strict=True):
        if a.grad is None:
            assert b.grad is None, name
            continue
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4)
        compared += 1
    assert compared > 10


def test_every_adamw_kernel_makes_the_same_update(tiny_model_dir):
    """``actor.optimizer_impl`` fused (the default), foreach and for-loop: from the same gradients, the same weights
    after the step, to float32 rounding. Bound per entry: the step (at most ``lr`` in size on Adam's first update)
    computed in a different order is off by a few roundings of ``lr``, and the weight it lands on by a rounding or
    two of its own size (the weight decay's product and the subtraction): ``eps * (4 |w| + 16 lr)``."""
    micro = "actor.micro_batch_size_per_device_for_update=6"
    policies = {impl: _updated(tiny_model_dir, [micro, f"actor.optimizer_impl={impl}"])[0] for impl in ADAMW_KERNELS}
    eps, lr = torch.finfo(torch.float32).eps, 1e-3
    reference = dict(policies.pop("for-loop").model.named_parameters())
    moved = 0
    for impl, policy in policies.items():
        assert policy.optimizer.param_groups[0][impl] is True, impl  # the kernel asked for is the one stepped
        for name, weight in policy.model.named_parameters():
            expected = reference[name].detach()
            difference = (weight.detach() - expected).abs()
            allowed = eps * (4 * expected.abs() + 16 * lr)
            assert torch.all(difference <= allowed), (impl, name, (difference - allowed).max().item())
            moved += int(weight.grad is not None)
    assert moved > 20  # the language weights were stepped, not only compared at rest


def test_logprobs_do_not_depend_on_batch_composition(tiny_model_dir):
    config = load_config(None, BASE + ["actor.micro_batch_size_per_device_for_experience=1"])
    policy = Policy(config, str(tiny_model_dir), trainable=False)
    batch = _batch(tiny_model_dir)
    one_by_one = policy.compute_logprobs(batch)
    config_all = load_config(None, BASE + ["actor.micro_batch_size_per_device_for_experience=6"])
    together = Policy(config_all, str(tiny_model_dir), trainable=False).compute_logprobs(batch)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(one_by_one[mask], together[mask], atol=1e-5, rtol=1e-5)
    assert torch.all(one_by_one[mask] < 0)


def test_non_finite_gradients_are_skipped_then_abort(tiny_model_dir):
    """The torch backend's side of the contract the sharded backends meet too (tests/scale/test_backends.py): after a
    normal step, a NaN gradient is skipped and counted with weights, optimizer moments and schedule untouched; the
    second in a row aborts."""
    config = load_config(None, BASE + ["actor.max_consecutive_nonfinite=2"])
    policy = Policy(config, str(tiny_model_dir), trainable=True, total_updates=4)
    batch = _batch(tiny_model_dir)
    batch.old_logprobs = policy.compute_logprobs(batch)
    assert (
        policy.update(split_mini_batches(batch, config)[0])["actor/skipped_updates"] == 0.0
    )  # optimizer moments exist now
    batch.advantages = torch.full_like(batch.advantages, float("nan"))
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    state = policy.train_state()
    moments = {k: v.clone() for k, v in state["optimizer"]["state"][0].items()}
    metrics = policy.update(split_mini_batches(batch, config)[0])
    assert metrics["actor/skipped_updates"] == 1.0 and math.isnan(metrics["actor/grad_norm"])
    assert all(torch.equal(before[n], p) for n, p in policy.model.named_parameters())
    assert all(torch.equal(moments[k], v) for k, v in policy.train_state()["optimizer"]["state"][0].items())
    assert policy.train_state()["scheduler"] == state["scheduler"]
    with pytest.raises(NonFiniteUpdateError, match="2 consecutive updates"):
        policy.update(split_mini_batches(batch, config)[0])


def test_length_sorted_trimmed_micro_batches_match_one_padded_pass(tiny_model_dir):
    """compute_logprobs sorts rows by length and trims shared padding per micro-batch; a single forward over the
    whole, fully padded batch gives the same log-probs (positions come from the attention mask)."""
    from rexthinker_rl.model.logprobs import response_logprobs

    config = load_config(None, BASE + ["actor.micro_batch_size_per_device_for_experience=2"])
    policy = Policy(config, str(tiny_model_dir), trainable=False)
    batch = _batch(tiny_model_dir)
    chunks = batch.length_sorted_chunks(2)
    assert [len(rows) for rows, _ in chunks] == [2, 2, 2]
    assert sorted(row for rows, _ in chunks for row in rows) == list(range(len(batch)))
    assert any(chunk.input_ids.shape[1] < batch.input_ids.shape[1] for _, chunk in chunks)  # padding was cut
    with torch.no_grad():
        padded, _ = response_logprobs(policy.model, batch)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(policy.compute_logprobs(batch)[mask], padded[mask], atol=1e-5, rtol=1e-5)


def test_micro_batch_token_mean_is_easyr1s_accumulation(tiny_model_dir):
    """actor.loss_agg_mode=micro-batch-token-mean on three micro-batches of 2 gives the gradient of EasyR1's loss,
    written out here: for each micro-batch the policy forms (length-sorted rows), its own token mean of the PPO loss,
    divided by the number of micro-batches (rexthinker/verl/workers/actor/dp_actor.py update_policy)."""
    from rexthinker_rl.model.logprobs import response_logprobs

    overrides = ["actor.micro_batch_size_per_device_for_update=2", "algorithm.kl_mode=none"]
    policy, _, _ = _updated(tiny_model_dir, [*overrides, "actor.loss_agg_mode=micro-batch-token-mean"])
    reference = Policy(load_config(None, BASE + overrides), str(tiny_model_dir), trainable=True, total_updates=4)
    batch = _batch(tiny_model_dir)
    logprobs, _ = response_logprobs(reference.model, batch)  # (6, R) with grad; old = current: ratio 1
    ratio = torch.exp(logprobs - logprobs.detach())
    token_loss = -batch.advantages[:, None] * ratio
    groups = [rows for rows, _ in batch.length_sorted_chunks(2)]
    mask = batch.response_mask.to(token_loss.dtype)
    loss = sum((token_loss[rows] * mask[rows]).sum() / (mask[rows].sum() + 1e-8) for rows in groups) / len(groups)
    loss.backward()
    compared = 0
    for (name, ours), theirs in zip(policy.model.named_parameters(), reference.model.parameters(), strict=True):
        if ours.grad is not None:
            torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-6, rtol=1e-4, msg=name)
            compared += 1
    assert compared > 10
    token_mean, _, _ = _updated(tiny_model_dir, overrides)  # the default: a different gradient on this batch
    name, grad = next((n, p.grad) for n, p in token_mean.model.named_parameters() if p.grad is not None)
    assert not torch.allclose(grad, dict(policy.model.named_parameters())[name].grad, atol=1e-6, rtol=1e-4)
