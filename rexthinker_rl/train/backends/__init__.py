"""Training backends by ``actor.strategy``: torch (one process), fsdp2 and deepspeed (one object per rank).

See :mod:`rexthinker_rl.train.backends.base` for the protocol a :class:`rexthinker_rl.train.policy.Policy` is composed with. The
sharded backends are imported when one is built (torch's FSDP2 and checkpoint modules take a second to import,
DeepSpeed longer): loading a config, evaluating or serving a model does not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rexthinker_rl.train.backends.base import TorchBackend, TrainBackend

if TYPE_CHECKING:
    from rexthinker_rl.config import Config

# actor.strategy -> "module:class" of its backend (the config's choices are these keys)
BACKENDS: dict[str, str] = {
    "torch": "rexthinker_rl.train.backends.base:TorchBackend",
    "fsdp2": "rexthinker_rl.train.backends.fsdp2:FSDP2Backend",
    "deepspeed": "rexthinker_rl.train.backends.deepspeed_zero:DeepSpeedBackend",
}


def backend_class(strategy: str) -> type:
    module, _, name = BACKENDS[strategy].partition(":")
    return getattr(importlib.import_module(module), name)


def make_backend(config: Config, rank: int = 0, world_size: int = 1) -> TrainBackend:
    """The backend of ``actor.strategy`` for this rank (a sharded one needs the process group joined first)."""
    return backend_class(config.actor.strategy)(config, rank, world_size)


def combine_train_states(states: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
    """One checkpoint's train state from every rank's: rank 0's, plus each rank's RNG states and, for DeepSpeed,
    each rank's optimizer partition (FSDP2's optimizer state is already full on rank 0)."""
    combined = {**states[0], "rank_rng": [state["rng"] for state in states]}
    if strategy == "deepspeed":
        combined["optimizer"] = {"rank_optimizer": [state["optimizer"] for state in states]}
    return combined


__all__ = ["BACKENDS", "TorchBackend", "TrainBackend", "backend_class", "combine_train_states", "make_backend"]
