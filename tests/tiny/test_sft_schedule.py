"""The SFT warm start's learning-rate schedule: the rate each optimizer step of a real ``run_sft`` used."""

from __future__ import annotations

import math

import pytest
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tests.conftest import TINY_OVERRIDES


def _rates_used(tiny_model_dir, synthetic_data_dir, tmp_path, *settings) -> list[float]:
    from rexthinker_rl.config import load_config
    from rexthinker_rl.train.sft import run_sft

    overrides = [
        *TINY_OVERRIDES,
        f"model.path={tiny_model_dir}",
        f"data.train_files={synthetic_data_dir / 'train.parquet'}",
        "sft.epochs=1",
        "sft.batch_size=16",  # 64 rows: 4 steps
        "sft.lr=1e-3",
        f"sft.output_dir={tmp_path / 'sft'}",
        *settings,
    ]
    rates = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: rates.append(optimizer.param_groups[0]["lr"])
    )
    try:
        run_sft(load_config(None, overrides))
    finally:
        hook.remove()
    return rates


@pytest.mark.parametrize(
    ("settings", "factors"),
    [
        ((), [1.0, 1.0, 1.0, 1.0]),
        (("sft.lr_scheduler=cosine",), [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]),
        # 2 warm-up steps (0.5 of 4), then the cosine over the other 2
        (("sft.lr_scheduler=cosine", "sft.lr_warmup_ratio=0.5"), [0.5, 1.0, 1.0, 0.5]),
    ],
    ids=["constant", "cosine", "warmup+cosine"],
)
def test_each_sft_step_uses_the_scheduled_rate(tiny_model_dir, synthetic_data_dir, tmp_path, settings, factors):
    rates = _rates_used(tiny_model_dir, synthetic_data_dir, tmp_path, *settings)
    assert rates == pytest.approx([1e-3 * f for f in factors], rel=1e-12)
