"""The paper run draws what Rex-Thinker's drew: the training rows in EasyR1's order (and resumes exactly), the same
seed on every sampling request, the same logit bias, and one validation after the last step on the training file.
Facts from the original files are in tests/rexthinker_original.py, with file and line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rexthinker_rl.config import load_config
from rexthinker_rl.config.rules import DATA_ORDERS
from rexthinker_rl.data.dataset import ResumableSampler
from rexthinker_rl.rollout.base import SamplingSpec, prompt_seeds
from rexthinker_rl.train.trainer import is_due, training_requests, training_sampling, validation_sampling
from tests import rexthinker_original as original

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "configs" / "grpo_refcocog.yaml"


def _epoch(sampler: ResumableSampler) -> list[list[int]]:
    return list(sampler)


# ------------------------------------------------------------------------------------------------------ data order
def test_easyr1_order_draws_the_first_rows_of_randperm_on_the_seeded_generator():
    sampler = ResumableSampler(20_000, 64, shuffle=True, seed=1, order="easyr1")
    first = sampler.next_batch()[:8]
    assert first == torch.randperm(20_000, generator=torch.Generator().manual_seed(1))[:8].tolist()
    assert first[:4] == [15845, 10294, 19532, 4256]  # the rows issue 29 lists for seed 1 over 20,000
    ours = ResumableSampler(20_000, 64, shuffle=True, seed=1).next_batch()[:4]
    assert ours == [19294, 19356, 19196, 8843]  # our own order, unchanged


@pytest.mark.parametrize(("rows", "batch"), [(20_000, 64), (100, 10), (37, 5), (9, 9)])
def test_easyr1_order_is_torchs_random_sampler_epoch_after_epoch(rows, batch):
    expected = original.easyr1_epochs(rows, batch, seed=1, epochs=3)
    sampler = ResumableSampler(rows, batch, shuffle=True, seed=1, order="easyr1")
    assert [_epoch(sampler) for _ in range(3)] == expected
    assert expected[1] != expected[0]  # the stream continues: epoch 2 is not epoch 1 drawn again


def test_easyr1_second_epoch_continues_the_generator():
    generator = torch.Generator().manual_seed(1)
    draws = [torch.randperm(20_000, generator=generator) for _ in range(4)]
    sampler = ResumableSampler(20_000, 64, shuffle=True, seed=1, order="easyr1")
    _epoch(sampler)
    second = _epoch(sampler)
    # RandomSampler draws two permutations an epoch: the epoch's, and the empty tail it asks for at the end.
    assert second[0] == draws[2][:64].tolist()
    assert second[0] != draws[0][:64].tolist() and second[0] != draws[1][:64].tolist()


@pytest.mark.parametrize("order", DATA_ORDERS)
@pytest.mark.parametrize("stop", [0, 1, 150, 311, 312, 313, 500, 624])
def test_resume_mid_epoch_and_across_the_boundary_is_exact(order, stop):
    def make():
        return ResumableSampler(20_000, 64, shuffle=True, seed=1, order=order)  # 312 batches an epoch

    total = 3 * 312
    whole = make()
    uninterrupted = [whole.next_batch() for _ in range(total)]
    first = make()
    head = [first.next_batch() for _ in range(stop)]
    state = json.loads(json.dumps(first.state_dict()))  # as the checkpoint stores it
    assert state == {"epoch": stop // 312, "batch_in_epoch": stop % 312, "order": order}
    resumed = make()
    resumed.load_state_dict(state)
    assert head + [resumed.next_batch() for _ in range(total - stop)] == uninterrupted


def test_a_position_in_one_order_does_not_resume_another():
    state = ResumableSampler(100, 10, True, 1, order="easyr1").state_dict()
    with pytest.raises(ValueError, match="data.order=easyr1, the config says data.order=ours"):
        ResumableSampler(100, 10, True, 1, order="ours").load_state_dict(state)
    old = {"epoch": 1, "batch_in_epoch": 2}  # written before data.order existed: ours
    ResumableSampler(100, 10, True, 1).load_state_dict(old)
    with pytest.raises(ValueError, match="data.order=ours"):
        ResumableSampler(100, 10, True, 1, order="easyr1").load_state_dict(old)
    with pytest.raises(ValueError, match="data.order='random': choose one of ours, easyr1"):
        ResumableSampler(100, 10, True, 1, order="random")


# ------------------------------------------------------------------------------------------ sampling and validation
def test_paper_config_seeds_every_request_of_every_step_as_easyr1():
    paper = load_config(PAPER)
    for step in (1, 2, 312):
        assert training_sampling(paper, step).seed == original.EASYR1_REQUEST_SEED
    ours = load_config(ROOT / "configs" / "grpo_refcocog_ours.yaml")
    assert [training_sampling(ours, step).seed for step in (1, 2)] == [100_004, 100_005]  # a fresh stream a step
    assert validation_sampling(ours).seed is None and ours.rollout.seed_mode == "ours"
    assert load_config(None).rollout.seed_mode == "ours"  # the default everywhere else


def test_each_prompt_of_a_step_draws_its_own_seed_unless_easyr1():
    ours = load_config(ROOT / "configs" / "grpo_refcocog_ours.yaml")
    samples = [SimpleNamespace(prompt_text=f"p{i}", image=None) for i in range(64)]
    requests, sampling = training_requests(ours, samples, 3)
    seeds = [request.seed for request in requests]
    assert seeds == [r.seed for r in training_requests(ours, samples, 3)[0]]  # reproducible
    assert sampling.seed == 100_006 and None not in seeds  # rollout.seed 1, step 3
    # vLLM seeds a request's n samples seed .. seed + n - 1: no two prompts' ranges may meet, and each fits in 63 bits
    ordered = sorted(seeds)
    assert min(b - a for a, b in zip(ordered, ordered[1:], strict=False)) > ours.rollout.n
    assert all(0 <= seed < 2**63 - ours.rollout.n for seed in seeds)
    assert set(seeds).isdisjoint(r.seed for r in training_requests(ours, samples, 4)[0])  # the next step: others
    assert prompt_seeds("ours", None, 3) == [None] * 3  # unseeded stays unseeded
    paper = load_config(PAPER)  # EasyR1: one SamplingParams, its seed for every request
    assert [r.seed for r in training_requests(paper, samples, 3)[0]] == [None] * 64


def test_paper_config_validates_once_after_training_on_its_training_file():
    paper = load_config(PAPER)
    # scripts/config.yaml line 3 (val_files is the training parquet, the one the launch script trains on), line 10
    # (val_batch_size 16), lines 85-86 (val_freq -1, no validation before training).
    assert paper.data.val_files == paper.data.train_files
    assert load_config(PAPER, ["data.train_files=/data/mine.parquet"]).data.val_files == "/data/mine.parquet"
    assert (paper.data.val_batch_size, paper.data.val_max_samples) == (16, -1)
    assert (paper.trainer.val_freq, paper.trainer.val_before_train) == (-1, False)
    # ray_trainer.py lines 593-602 (during training only when val_freq > 0) and 616-624 (after the loop, once more
    # unless the last step just validated); main.py line 79 builds the validation reward in every run.
    assert [step for step in range(1, 313) if is_due(step, 312, paper.trainer.val_freq)] == [312]
    assert [step for step in range(1, 11) if is_due(step, 10, 5)] == [5, 10]  # no second validation at the end
    spec = validation_sampling(paper)
    expected = original.EASYR1_VALIDATION
    assert (spec.n, spec.temperature, spec.top_p, spec.seed) == tuple(
        expected[k] for k in ("n", "temperature", "top_p", "seed")
    )
    assert spec.max_tokens == 4096 and not spec.greedy


def test_our_validation_stays_greedy_and_unseeded():
    spec = validation_sampling(load_config(None))
    assert spec == SamplingSpec(n=1, temperature=0.0, top_p=1.0, max_tokens=4096, seed=None)


def test_paper_config_biases_only_the_image_pad_token():
    from rexthinker_rl.model.loading import SUPPRESSED_TOKENS

    assert load_config(PAPER).rollout.suppress_tokens == "image_pad"
    assert SUPPRESSED_TOKENS["image_pad"] == ("<|image_pad|>",)  # vllm_rollout_spmd.py lines 41-47
    assert load_config(None).rollout.suppress_tokens == "vision" and len(SUPPRESSED_TOKENS["vision"]) == 5


def test_paper_config_draws_rows_in_easyr1_order():
    assert load_config(PAPER).data.order == "easyr1"  # data_loader.py lines 42-45
    assert load_config(None).data.order == "ours"
    with pytest.raises(Exception, match="data.order='shuffled' is invalid: expected ours | easyr1"):
        load_config(None, ["data.order=shuffled"])
