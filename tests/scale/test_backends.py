"""FSDP2 and DeepSpeed ZeRO-3 on 2 CPU processes (gloo) train exactly like one process: after 2 GRPO steps (4
optimizer updates: two mini-batches each), with a checkpoint save/load into fresh ranks between the steps, the
gathered weights, log-probs and losses equal single-process ``Policy``'s on the same batches in float32: log-probs and
losses (what the backends compute, before any optimizer) within float32 rounding, the weights within what that rounding
can become through AdamW, entry by entry (``tests.scale.adam_drift``). (A resume that lost the optimizer moments would
be off by ~lr = 1e-3 nearly everywhere; measured separately, resumed and uninterrupted sharded runs are bit-identical
for both backends.)

Why not bit-exact: the ranks sum gradients in another order (reduce-scatter) than one process's backward does, and Adam
turns the rounding of a gradient that is nearly zero into a full-size step: a fixed tolerance on the weights fails on
another CPU (1 of 32,768 entries off by 7.2e-5 on an AVX-512 Xeon) or hides real errors."""

import pytest
import torch

from rexthinker_rl.algo.batch import split_mini_batches
from rexthinker_rl.config import LoraConfig, load_config
from rexthinker_rl.model.lora import merge_lora_weights
from rexthinker_rl.train.policy import Policy
from tests.scale.adam_drift import assert_within, by_state_dict_name, first_update
from tests.scale.ranks import run_ranks, train_two_steps
from tests.tiny.test_policy import BASE, _batch

pytestmark = pytest.mark.slow  # 2 processes each: ~30-45 s a test on 2 cores

# 6 rows per step (2 prompts x 3), two mini-batches of 3 rows, micro-batches of 2 rows: uneven token counts per rank.
OVERRIDES = BASE + [
    "actor.global_batch_size=1",
    "actor.micro_batch_size_per_device_for_update=2",
    "actor.micro_batch_size_per_device_for_experience=2",
    "actor.lr=1e-3",
    "actor.max_grad_norm=1.0",
    "algorithm.kl_coef=0.1",
    "trainer.nnodes=1",
    "trainer.n_gpus_per_node=2",
    "actor.max_consecutive_nonfinite=2",
]
# The ranks compute log-probs with a chunked LM head (chunks of 5 of the ~25 response tokens a step: the tied head's
# weight is read inside the root module's forward and recomputed in backward), the one process with all logits at once.
SHARDED = ["actor.logprob_chunk_tokens=5"]
ALL_LOGITS = ["actor.logprob_chunk_tokens=0"]
# Another summation order for the rounding scale of each gradient (tests.scale.adam_drift): packed rows, one a
# micro-batch, the chunked head.
BULK_SHARE = 1e-3
LORA = LoraConfig(rank=4, alpha=8)
REORDERED = [
    "actor.padding_free=true",
    "actor.micro_batch_size_per_device_for_update=1",
    "actor.logprob_chunk_tokens=5",
]
LOGPROB_TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def step_batch(model_dir, step: int):
    batch = _batch(model_dir, seed=step)
    batch.advantages = torch.tensor([1.0, -0.5, 0.2, -1.0, 0.7, 0.3]).roll(step)
    return batch


def single_process(model_dir, overrides):
    config = load_config(None, overrides + ["actor.strategy=torch"])
    policy = Policy(config, str(model_dir), trainable=True, total_updates=4)
    other = Policy(load_config(None, overrides + ["actor.strategy=torch", *REORDERED]), str(model_dir), True, 4)
    initial = {name: tensor.clone() for name, tensor in policy.checkpoint_state().items()}
    metrics, logprobs = [], []
    for step in range(2):
        batch = step_batch(model_dir, step)
        batch.old_logprobs = policy.compute_logprobs(batch)
        batch.ref_logprobs = batch.old_logprobs + 0.01
        mini_batches = split_mini_batches(batch, config)[0]
        if step == 0:  # the first mini-batch's rows, planned by each policy for its own layout
            first_metrics, bound = first_update(policy, other, batch.chunks(config.derived.sequences_per_update)[0])
            after_first = {name: tensor.clone() for name, tensor in policy.checkpoint_state().items()}
            metrics.append(mean_metrics([first_metrics, policy.update(mini_batches[1:])]))
        else:
            metrics.append(policy.update(mini_batches))
        logprobs.append(batch.old_logprobs * batch.response_mask)  # padding positions hold arbitrary values
    return {
        "initial": initial,
        "after_first_update": after_first,
        "bound": by_state_dict_name(policy, bound),
        "weights": policy.checkpoint_state(),
        "merged": policy.state_dict(),
        "metrics": metrics,
        "logprobs": logprobs,
    }


def mean_metrics(parts: list[dict]) -> dict:
    """What one update call over all the parts' mini-batches reports (one mini-batch per part)."""
    return {key: sum(part[key] for part in parts) / len(parts) for key in parts[0]}


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return single_process(tiny_model_dir, OVERRIDES + ALL_LOGITS)


def _distributed(tiny_model_dir, tmp_path, overrides):
    out = tmp_path / "rank0.pt"
    run_ranks(train_two_steps, 2, (str(tiny_model_dir), overrides, str(out)), tmp_path)
    return torch.load(out, weights_only=True)


def _assert_same_training(result, expected):
    """Log-probs and losses of both steps within float32 rounding (before any optimizer amplifies it); the weights
    after the first update entry by entry within what that rounding can become through one AdamW step; the resumed
    ranks bit-identical to uninterrupted ones; and the final weights as one process's in bulk."""
    for step in range(2):
        torch.testing.assert_close(result["logprobs"][step], expected["logprobs"][step], **LOGPROB_TOLERANCE)
        # (clipfrac is a mean of per-micro-batch means: it depends on the grouping even in one process)
        for key in ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/grad_norm", "actor/lr"):
            assert result["metrics"][step][key] == pytest.approx(expected["metrics"][step][key], rel=1e-4, abs=1e-6)
    first = "weights after the first update"
    assert_within(
        result["after_first_update"], expected["after_first_update"], expected["bound"], expected["initial"], first
    )
    assert result["resume_gap"] == 0.0, f"resumed ranks differ from uninterrupted ones by {result['resume_gap']}"
    assert_bulk_agrees(result["weights"], expected["weights"], expected["initial"])


def assert_bulk_agrees(result: dict, expected: dict, initial: dict) -> None:
    """After 4 updates the runs have drifted apart (each update's gradients follow the weights the last one left), so
    the final weights are compared in bulk: their mean gap is a small share of the mean move (measured: 1e-5 of it;
    an optimizer state lost at the resume, a dropped mini-batch: the whole move)."""
    gap = sum((result[name] - tensor).abs().sum().item() for name, tensor in expected.items())
    moved = sum((tensor - initial[name]).abs().sum().item() for name, tensor in expected.items())
    assert moved > 0 and gap <= BULK_SHARE * moved, f"final weights: mean gap {gap / moved:.3g} of the mean move"


def _assert_non_finite_step_skipped(result):
    """Then a NaN gradient: skipped and counted, nothing touched; the second in a row aborts (ranks.py). What the torch
    backend does (tests/tiny/test_policy.py), the sharded ones do."""
    nonfinite = result["nonfinite"]
    assert nonfinite["skipped"] == 1.0 and nonfinite["grad_norm_is_nan"]
    assert nonfinite["optimizer_unchanged"] == "", nonfinite["optimizer_unchanged"]
    assert nonfinite["weights_unchanged"] and nonfinite["schedule_unchanged"]
    assert "2 consecutive updates had a non-finite gradient norm" in nonfinite["aborted"]


def test_fsdp2_two_ranks_equal_one_process(tiny_model_dir, tmp_path, reference):
    """Also packed (padding-free) with token-budget micro-batches, where the ranks need different micro-batch counts
    and must agree on one, against the padded single process."""
    packed = ["actor.padding_free=true", "actor.max_tokens_per_micro_batch=150"]
    result = _distributed(tiny_model_dir, tmp_path, OVERRIDES + SHARDED + ["actor.strategy=fsdp2", *packed])
    _assert_same_training(result, reference)
    _assert_non_finite_step_skipped(result)


def test_deepspeed_zero3_two_ranks_equal_one_process(tiny_model_dir, tmp_path, reference):
    pytest.importorskip("deepspeed")
    zero3 = ["actor.strategy=deepspeed", "actor.zero_stage=3"]
    result = _distributed(tiny_model_dir, tmp_path, OVERRIDES + SHARDED + zero3)
    _assert_same_training(result, reference)
    _assert_non_finite_step_skipped(result)


@pytest.mark.slow
def test_fsdp2_lora_two_ranks_equal_one_process(tiny_model_dir, tmp_path):
    """LoRA composes with FSDP2: only adapters train, and the merged weights (what vLLM loads) match one process."""
    lora = [f"model.lora.rank={LORA.rank}", f"model.lora.alpha={LORA.alpha}"]
    expected = single_process(tiny_model_dir, OVERRIDES + lora + ALL_LOGITS)
    result = _distributed(tiny_model_dir, tmp_path, OVERRIDES + lora + SHARDED + ["actor.strategy=fsdp2"])
    _assert_same_training(result, expected)
    changed = {n for n, t in result["weights"].items() if not torch.equal(t, expected["initial"][n])}
    assert changed and all(".lora_" in name for name in changed)
    assert_bulk_agrees(result["merged"], expected["merged"], merge_lora_weights(expected["initial"], LORA))
