"""Session-wide test setup: one thread for torch, no Ray auth or tokenizer threads, and shared fixtures."""

from __future__ import annotations

import os

os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402
import torch  # noqa: E402

import rexthinker_rl  # noqa: E402, F401  (installs the torchvision shim before any processor import)

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL folder (model, tokenizer, processor), built once per session."""
    from rexthinker_rl.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
    """A small synthetic referring set (train.parquet: 64 rows, val.parquet: 16 rows; 112x112 images)."""
    from data_tools.synthetic import make_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(out, num_train=64, num_val=16, seed=0)
    return out
