"""FSDP2 and DeepSpeed ZeRO-3 on 2 CPU processes (gloo) train exactly like one process: after 2 GRPO steps (4
optimizer updates: two mini-batches each), with a checkpoint save/load into fresh ranks between the steps, the
gathered weights, log-probs and losses equal single-process ``Policy``'s on the same batches, in float32 within
TOLERANCE. (A resume that lost the optimizer moments would be off by ~lr = 1e-3, 20x the tolerance; measured
separately, resumed and uninterrupted sharded runs are bit-identical for both backends.)

Why not bit-exact: the ranks sum gradients in another order (reduce-scatter) than one process's backward does."""

import pytest
import torch

from rexthinker_rl.config import load_config
from rexthinker_rl.policy import Policy
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
]
# The ranks compute log-probs with a chunked LM head (chunks of 5 of the ~25 response tokens a step: the tied head's
# weight is read inside the root module's forward and recomputed in backward), the one process with all logits at once.
SHARDED = ["actor.logprob_chunk_tokens=5"]
ALL_LOGITS = ["actor.logprob_chunk_tokens=0"]
# float32, 4 AdamW updates at lr 1e-3: the weights move by 1.6e-3 on average (4e-3 at most). The ranks sum gradients in
# another order than one process, and Adam divides each entry by its own gradient scale, so entries whose gradient
# nearly cancels carry that float noise into the step. Measured (FSDP2): max difference 1.8e-5, 64 of 3.4M entries
# above 1e-6. Bound: every entry within 5e-5 (3% of the mean move) AND at most 1 in 10,000 entries above 1e-6.
TOLERANCE = {"atol": 5e-5, "rtol": 1e-5}
BULK_ATOL, BULK_SHARE = 1e-6, 1e-4
LOGPROB_TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def step_batch(model_dir, step: int):
    batch = _batch(model_dir, seed=step)
    batch.advantages = torch.tensor([1.0, -0.5, 0.2, -1.0, 0.7, 0.3]).roll(step)
    return batch


def single_process(model_dir, overrides):
    config = load_config(None, overrides + ["actor.strategy=torch"])
    policy = Policy(config, str(model_dir), trainable=True, total_updates=4)
    initial = {name: tensor.clone() for name, tensor in policy.checkpoint_state().items()}
    metrics, logprobs = [], []
    for step in range(2):
        batch = step_batch(model_dir, step)
        batch.old_logprobs = policy.compute_logprobs(batch)
        batch.ref_logprobs = batch.old_logprobs + 0.01
        metrics.append(policy.update(batch))
        logprobs.append(batch.old_logprobs * batch.response_mask)  # padding positions hold arbitrary values
    return {
        "initial": initial,
        "weights": policy.checkpoint_state(),
        "merged": policy.state_dict(),
        "metrics": metrics,
        "logprobs": logprobs,
    }


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return single_process(tiny_model_dir, OVERRIDES + ALL_LOGITS)


def _distributed(tiny_model_dir, tmp_path, overrides):
    out = tmp_path / "rank0.pt"
    run_ranks(train_two_steps, 2, (str(tiny_model_dir), overrides, str(out)), tmp_path)
    return torch.load(out, weights_only=True)


def _assert_same_training(result, expected):
    for step in range(2):
        torch.testing.assert_close(result["logprobs"][step], expected["logprobs"][step], **LOGPROB_TOLERANCE)
        # (clipfrac is a mean of per-micro-batch means: it depends on the grouping even in one process)
        for key in ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/grad_norm", "actor/lr"):
            assert result["metrics"][step][key] == pytest.approx(expected["metrics"][step][key], rel=1e-4, abs=1e-6)
    assert set(result["weights"]) == set(expected["weights"])
    moved, outside_bulk, entries = 0.0, 0, 0
    for name, tensor in expected["weights"].items():
        torch.testing.assert_close(result["weights"][name], tensor, **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")
        moved = max(moved, (tensor - expected["initial"][name]).abs().max().item())
        outside_bulk += int(((result["weights"][name] - tensor).abs() > BULK_ATOL).sum())
        entries += tensor.numel()
    assert outside_bulk <= BULK_SHARE * entries, f"{outside_bulk} of {entries} entries differ by more than {BULK_ATOL}"
    assert moved > 50 * TOLERANCE["atol"], "training did not move the weights: the comparison would be empty"


def test_fsdp2_two_ranks_equal_one_process(tiny_model_dir, tmp_path, reference):
    """Also packed (padding-free) with token-budget micro-batches, where the ranks need different micro-batch counts
    and must agree on one, against the padded single process."""
    packed = ["actor.padding_free=true", "actor.max_tokens_per_micro_batch=150"]
    result = _distributed(tiny_model_dir, tmp_path, OVERRIDES + SHARDED + ["actor.strategy=fsdp2", *packed])
    _assert_same_training(result, reference)


def test_deepspeed_zero3_two_ranks_equal_one_process(tiny_model_dir, tmp_path, reference):
    pytest.importorskip("deepspeed")
    zero3 = ["actor.strategy=deepspeed", "actor.zero_stage=3"]
    result = _distributed(tiny_model_dir, tmp_path, OVERRIDES + SHARDED + zero3)
    _assert_same_training(result, reference)


@pytest.mark.slow
def test_fsdp2_lora_two_ranks_equal_one_process(tiny_model_dir, tmp_path):
    """LoRA composes with FSDP2: only adapters train, and the merged weights (what vLLM loads) match one process."""
    lora = ["model.lora.rank=4", "model.lora.alpha=8"]
    expected = single_process(tiny_model_dir, OVERRIDES + lora + ALL_LOGITS)
    result = _distributed(tiny_model_dir, tmp_path, OVERRIDES + lora + SHARDED + ["actor.strategy=fsdp2"])
    _assert_same_training(result, expected)
    changed = {n for n, t in result["weights"].items() if not torch.equal(t, expected["initial"][n])}
    assert changed and all(".lora_" in name for name in changed)
    assert set(result["merged"]) == set(expected["merged"])
    for name, tensor in expected["merged"].items():
        torch.testing.assert_close(result["merged"][name], tensor, **TOLERANCE)
