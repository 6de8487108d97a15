"""GPU-only checks of the scale-out paths (skipped without CUDA; none could run on the CPU machines this was written
on): flash-attention packing, FSDP2 mixed precision with CPU offload, and a colocated rank's vLLM sleep/wake and
in-process weight sync."""

import pytest
import torch

from rexthinker_rl.config import load_config
from tests.scale.test_backends import OVERRIDES, step_batch
from tests.tiny.test_policy import BASE, _batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
GPU = [o for o in BASE if o != "trainer.device=cpu"] + ["trainer.device=cuda"]


def test_flash_attention_packing_equals_sdpa_padding(tiny_model_dir):
    pytest.importorskip("flash_attn")
    from rexthinker_rl.model.loading import load_model
    from rexthinker_rl.model.logprobs import response_logprobs

    batch = _batch(tiny_model_dir).to_device("cuda")
    flash = load_model(str(tiny_model_dir), "bfloat16", "flash_attention_2", "cuda")
    sdpa = load_model(str(tiny_model_dir), "bfloat16", "sdpa", "cuda")
    with torch.no_grad():
        packed, _ = response_logprobs(flash, batch, packed=True)
        padded, _ = response_logprobs(sdpa, batch)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(packed[mask], padded[mask], atol=5e-2, rtol=0)  # bf16 kernels differ in rounding


def _one_rank(rank, world_size, model_dir, overrides, out):
    from rexthinker_rl.algo.batch import split_mini_batches
    from rexthinker_rl.train.policy import make_policy

    config = load_config(None, overrides)
    policy = make_policy(config, model_dir, True, 4, rank=rank, world_size=world_size)
    batch = step_batch(model_dir, 0)
    metrics = policy.update(split_mini_batches(batch, config, world_size)[rank])
    weights = policy.checkpoint_state()
    if rank == 0:
        torch.save({"metrics": metrics, "weights": weights}, out)


def test_fsdp2_bf16_mixed_precision_with_cpu_offload_trains(tiny_model_dir, tmp_path, monkeypatch):
    import torch.distributed as dist

    from rexthinker_rl.runtime.process_group import free_port, init_process_group

    overrides = [o for o in OVERRIDES if o not in ("trainer.device=cpu", "model.dtype=float32")]
    overrides += ["trainer.device=cuda", "model.dtype=bfloat16", "actor.strategy=fsdp2", "trainer.n_gpus_per_node=1"]
    overrides += ["actor.offload_params=true", "actor.padding_free=true"]
    monkeypatch.setenv("LOCAL_RANK", "0")
    init_process_group(0, 1, "127.0.0.1", free_port(), "cuda")
    try:
        _one_rank(0, 1, str(tiny_model_dir), overrides, tmp_path / "out.pt")
    finally:
        dist.destroy_process_group()
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    assert result["metrics"]["actor/skipped_updates"] == 0.0
    assert all(t.dtype == torch.float32 for t in result["weights"].values())  # float32 master weights


def test_colocated_rank_sleeps_wakes_and_syncs_weights(tiny_model_dir, monkeypatch):
    pytest.importorskip("vllm")
    import torch.distributed as dist

    from rexthinker_rl.algo.batch import split_mini_batches
    from rexthinker_rl.rollout.base import RolloutPrompt, SamplingSpec
    from rexthinker_rl.runtime.process_group import free_port
    from rexthinker_rl.runtime.workers import ActorWorker

    overrides = GPU + ["actor.strategy=fsdp2", "trainer.n_gpus_per_node=1", "rollout.tensor_parallel_size=1"]
    overrides += ["rollout.gpu_memory_utilization=0.3", "rollout.enforce_eager=true", "algorithm.kl_mode=none"]
    monkeypatch.setenv("LOCAL_RANK", "0")
    worker = ActorWorker(load_config(None, overrides), str(tiny_model_dir), 4, 0, 1, colocated=True)
    try:
        worker.setup("127.0.0.1", free_port())
        from PIL import Image

        processor_text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>the red circle<|im_end|>\n"
        prompt = RolloutPrompt(processor_text + "<|im_start|>assistant\n", Image.new("RGB", (112, 112), "red"))
        greedy = SamplingSpec(n=1, temperature=0.0, max_tokens=8)
        before = worker.generate([prompt], greedy)[0]
        free_asleep = torch.cuda.mem_get_info()[0]
        batch = step_batch(str(tiny_model_dir), 0)
        worker.update(split_mini_batches(batch, worker.config)[0])
        worker.sync_weights()
        after = worker.generate([prompt], greedy)[0]
        assert not worker.engine.cache_awake  # asleep again after generating
        assert free_asleep > 0
        assert before.logprobs != after.logprobs  # the engine now runs the updated weights
    finally:
        dist.destroy_process_group()
