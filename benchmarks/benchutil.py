"""What the benchmark scripts share (they run as ``python benchmarks/<script>.py``, so this folder is on sys.path)."""

from __future__ import annotations

import os
import time
from pathlib import Path

PIXELS = 112 * 112  # the synthetic set's 112 px images: 16 image tokens
REPO = Path(__file__).resolve().parents[1]


def prepare_model(model: str, work: Path) -> Path:
    """``work/model``: a link to ``--model``'s folder when one is given, else the tiny model built there (seed 0)."""
    target = work / "model"
    if model:
        os.symlink(Path(model).resolve(), target)
    else:
        from rexthinker_rl.model.tiny import build_tiny_model

        build_tiny_model(target, seed=0)
    return target


def tiny_overrides(model_dir, train_file, run_dir, prompts: int, group: int, max_tokens: int, steps: int) -> list[str]:
    """configs/grpo_tiny.yaml at a benchmark's sizes: every row in one micro-batch, every group trained on (no online
    filtering), no KL reference (nor the KL curve's), no validation, no checkpoint before the end, a fresh run folder."""
    rows = prompts * group
    return [
        f"model.path={model_dir}",
        f"data.train_files={train_file}",
        "data.val_files=''",
        f"data.rollout_batch_size={prompts}",
        f"data.max_response_length={max_tokens}",
        f"data.min_pixels={PIXELS}",
        f"data.max_pixels={PIXELS}",
        f"rollout.n={group}",
        f"actor.global_batch_size={prompts}",
        f"actor.micro_batch_size_per_device_for_update={rows}",
        f"actor.micro_batch_size_per_device_for_experience={rows}",
        "algorithm.online_filtering=false",
        "algorithm.kl_mode=none",
        "logging.kl_to_ref_freq=0",
        f"trainer.total_steps={steps}",
        "trainer.val_before_train=false",
        "trainer.val_freq=-1",
        f"trainer.output_dir={run_dir}",
        "trainer.resume=none",
        "checkpoint.save_freq=-1",  # the trainer still saves once after the last step, outside the timings
    ]


def run_clocked(config) -> tuple[list[float], list[dict]]:
    """Our trainer, unchanged, run to the end: the periods between step ends (the first includes start-up) and the
    history of its steps."""
    from rexthinker_rl.train.trainer import GRPOTrainer

    ends: list[float] = []

    class ClockedTrainer(GRPOTrainer):
        """Our trainer, unchanged, with the wall-clock time at the end of every step recorded."""

        def train_step(self, step: int) -> dict[str, float]:
            metrics = super().train_step(step)
            ends.append(time.perf_counter())
            return metrics

    trainer = ClockedTrainer(config)
    ends.append(time.perf_counter())
    try:
        trainer.fit()
    finally:
        trainer.shutdown()
    periods = [later - earlier for earlier, later in zip(ends, ends[1:], strict=False)]
    return periods, [h for h in trainer.history if "timing/step" in h]


SIDES = ("leftmost", "rightmost", "topmost", "bottommost")


def synthetic_kind(referring: str, rejection: bool) -> str:
    """What a synthetic-set prompt asks: rejection (nothing matches), position ("the leftmost circle"), multi ("all
    red circles") or colour ("the red circle")."""
    if rejection:
        return "rejection"
    if any(side in referring for side in SIDES):
        return "position"
    return "multi" if referring.startswith("all ") else "colour"
