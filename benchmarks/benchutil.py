"""What the benchmark scripts share (they run as ``python benchmarks/<script>.py``, so this folder is on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path


def prepare_model(model: str, work: Path) -> Path:
    """``work/model``: a link to ``--model``'s folder when one is given, else the tiny model built there (seed 0)."""
    target = work / "model"
    if model:
        os.symlink(Path(model).resolve(), target)
    else:
        from rexthinker_rl.tiny import build_tiny_model

        build_tiny_model(target, seed=0)
    return target
