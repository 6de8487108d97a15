"""Padding-free (packed) forward and token-budget micro-batches on the tiny model: the same log-probs as the padded
forward, and the micro-batch / rank splitting arithmetic."""

import pytest
import torch

from rexthinker_rl.algo.batch import balanced_partition, micro_batch_cost, token_budget_groups
from rexthinker_rl.config import load_config
from rexthinker_rl.model.logprobs import pack, response_logprobs
from rexthinker_rl.train.policy import Policy
from tests.tiny.test_policy import BASE, _batch

EXACT = {"atol": 1e-5, "rtol": 1e-5}  # float32: the same arithmetic, only the attention mask's shape differs


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return Policy(load_config(None, BASE), str(tiny_model_dir), trainable=False)


def test_packed_logprobs_and_entropy_equal_padded(policy, tiny_model_dir):
    batch = _batch(tiny_model_dir)
    with torch.no_grad():
        padded, padded_entropy = response_logprobs(policy.model, batch, with_entropy=True)
        packed, packed_entropy = response_logprobs(policy.model, batch, with_entropy=True, packed=True)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(packed[mask], padded[mask], **EXACT)
    torch.testing.assert_close(packed_entropy[mask], padded_entropy[mask], **EXACT)
    assert torch.all(packed[~mask] == 0)


def test_packed_layout_restarts_text_positions_and_keeps_mrope(policy, tiny_model_dir):
    batch = _batch(tiny_model_dir)
    packed = pack(policy.model, batch)
    lengths = batch.attention_mask.sum(1)
    assert packed.input_ids.shape == (1, int(lengths.sum()))
    text = packed.position_ids[0, 0]
    assert (text == 0).sum() == len(batch)  # one restart per sequence: what keeps attention inside each sequence
    # The image grid (8x8 patches, merged 2x2 -> 4x4 tokens) gives height/width positions that differ from text ones.
    assert not torch.equal(packed.position_ids[2, 0], packed.position_ids[1, 0])


def test_packing_without_text_positions_leaks_across_sequences(policy, tiny_model_dir):
    """The check above can fail: mRoPE positions alone (no restarting text row) let attention cross sequences."""
    batch = _batch(tiny_model_dir)
    packed = pack(policy.model, batch)
    with torch.no_grad():
        leaky = policy.model(
            input_ids=packed.input_ids,
            position_ids=packed.position_ids[1:],
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
            logits_to_keep=packed.predictors,
            use_cache=False,
        ).logits[0]
        padded, _ = response_logprobs(policy.model, batch)
    leaky_logprobs = torch.log_softmax(leaky.float(), -1).gather(-1, packed.targets[:, None])[:, 0]
    assert (leaky_logprobs - padded[batch.response_mask.bool()]).abs().max() > 1e-3


def test_token_budget_compute_logprobs_equal_fixed_micro_batches(tiny_model_dir):
    batch = _batch(tiny_model_dir)
    mask = batch.response_mask.bool()
    fixed = Policy(load_config(None, BASE), str(tiny_model_dir), trainable=False).compute_logprobs(batch)
    for overrides in (
        ["actor.padding_free=true", "actor.max_tokens_per_micro_batch=120"],
        ["actor.max_tokens_per_micro_batch=150"],
    ):
        budget = Policy(load_config(None, BASE + overrides), str(tiny_model_dir), trainable=False)
        chunks = budget._micro_batches(batch, 16)
        assert len(chunks) > 1  # the budget, not the row count, split the batch
        torch.testing.assert_close(budget.compute_logprobs(batch)[mask], fixed[mask], **EXACT)


def test_token_budget_groups_fit_and_cover():
    lengths = [50, 10, 90, 30, 70, 20, 60, 40]
    for packed in (True, False):
        groups = token_budget_groups(lengths, 120, packed)
        assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
        assert all(micro_batch_cost([lengths[r] for r in g], packed) <= 120 for g in groups)
        more = token_budget_groups(lengths, 120, packed, at_least=len(groups) + 2)
        assert len(more) == len(groups) + 2 and sorted(r for g in more for r in g) == list(range(len(lengths)))
    assert token_budget_groups([500, 10], 100, True) == [[0], [1]]  # a row over the budget goes alone
    assert token_budget_groups([], 100, True, at_least=2) == [[], []]


def test_balanced_partition_evens_tokens_and_rows():
    lengths = [100, 90, 10, 10, 10, 5]
    groups = balanced_partition(lengths, 2)
    loads = [sum(lengths[r] for r in g) for g in groups]
    assert sorted(len(g) for g in groups) == [3, 3]
    assert abs(loads[0] - loads[1]) <= 20  # not [100, 90, 10] vs [10, 10, 5]
    assert balanced_partition([7], 3) == [[0], [], []]


def test_micro_batches_fill_an_agreed_count_with_placeholders(tiny_model_dir):
    batch = _batch(tiny_model_dir)
    chunks = batch.micro_batches(4, count=4)
    assert [len(rows) for rows, _ in chunks] == [4, 2, 0, 0]
    placeholder = chunks[-1][1]
    assert placeholder.is_placeholder and placeholder.response_mask.sum() == 0 and len(placeholder) == 1
    with pytest.raises(ValueError, match="micro-batches are needed"):
        batch.micro_batches(1, count=2)
