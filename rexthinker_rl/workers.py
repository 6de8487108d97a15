"""Ray actors with explicit, verb-named methods: actor (train + log-probs), reference (log-probs), rollout (generate).

Each class is plain Python (usable and testable without Ray); ``spawn_workers`` wraps them with ``ray.remote`` and the
resources that place them: fractions of one GPU when colocated, or CPU shares on a laptop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from rexthinker_rl.batch import SequenceBatch
from rexthinker_rl.config import Config
from rexthinker_rl.rollout.base import RolloutPrompt, RolloutResult, SamplingSpec


def _set_threads(config: Config) -> None:
    # Phases run one after another, so each worker may use every core while it works.
    if config.trainer.device == "cpu" or not torch.cuda.is_available():
        torch.set_num_threads(max(1, os.cpu_count() or 1))


class ActorWorker:
    """The policy being trained."""

    def __init__(self, config: Config, model_path: str, total_updates: int) -> None:
        from rexthinker_rl.policy import Policy

        _set_threads(config)
        self.policy = Policy(config, model_path, trainable=True, total_updates=total_updates)

    def compute_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        return self.policy.compute_logprobs(batch)

    def update(self, batch: SequenceBatch) -> dict[str, float]:
        return self.policy.update(batch)

    def compute_ref_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        """Reference log-probs under LoRA (adapters disabled), so no reference worker holds a second copy."""
        return self.policy.compute_ref_logprobs(batch)

    def get_weights(self) -> dict[str, torch.Tensor]:
        """Merged, Hugging Face-named weights: what the rollout engine loads."""
        return self.policy.state_dict()

    def get_checkpoint_weights(self) -> dict[str, torch.Tensor]:
        return self.policy.checkpoint_state()

    def get_train_state(self) -> dict[str, Any]:
        return self.policy.train_state()

    def load_train_state(self, weights: dict[str, torch.Tensor], train_state: dict[str, Any] | None) -> None:
        self.policy.load(weights, train_state)

    def save_pretrained(self, folder: str, processor) -> None:
        from rexthinker_rl.modeling import save_hf_folder

        save_hf_folder(self.policy.hf_model(), processor, folder)


class ReferenceWorker:
    """A frozen copy of the initial policy, for the KL term."""

    def __init__(self, config: Config, model_path: str) -> None:
        from rexthinker_rl.policy import Policy

        _set_threads(config)
        self.policy = Policy(config, model_path, trainable=False)

    def compute_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        return self.policy.compute_logprobs(batch)


class RolloutWorker:
    """The generation engine (vLLM or transformers)."""

    def __init__(self, config: Config, model_path: str) -> None:
        from rexthinker_rl.rollout.base import make_engine

        _set_threads(config)
        self.engine = make_engine(config, model_path)

    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        return self.engine.generate(prompts, sampling)

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        self.engine.load_weights(weights.items())

    def sleep(self) -> None:
        self.engine.sleep()

    def wake(self) -> None:
        self.engine.wake()


def uses_reference(config: Config) -> bool:
    return config.algorithm.kl_mode != "none" and config.algorithm.kl_coef > 0


@dataclass
class Workers:
    actor: Any
    reference: Any | None
    rollout: Any


def worker_env(run_dir: str) -> dict[str, str]:
    """Environment for worker processes: caches inside the run folder, in-process vLLM on CPU, quiet tokenizers."""
    cache = os.path.join(os.path.abspath(run_dir), ".cache")
    env = {
        "VLLM_CACHE_ROOT": os.environ.get("VLLM_CACHE_ROOT", os.path.join(cache, "vllm")),
        "TORCHINDUCTOR_CACHE_DIR": os.environ.get("TORCHINDUCTOR_CACHE_DIR", os.path.join(cache, "inductor")),
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),
        "VLLM_CONFIGURE_LOGGING": os.environ.get("VLLM_CONFIGURE_LOGGING", "0"),
    }
    return env


def spawn_workers(config: Config, model_path: str, total_updates: int, run_dir: str) -> Workers:
    """Start the Ray actors. On GPU all three share one device (colocated); on CPU each takes a share of the cores."""
    import ray

    if config.actor.strategy != "torch":
        # Sharded actors (FSDP2 / DeepSpeed ZeRO-3) are not implemented yet; refuse rather than silently train a
        # 7B model unsharded on one device.
        raise NotImplementedError(
            f"actor.strategy={config.actor.strategy} is not available yet; use actor.strategy=torch (one device)"
        )
    on_gpu = config.trainer.device != "cpu" and torch.cuda.is_available()
    share = {"num_gpus": 1 / 3, "num_cpus": 1} if on_gpu else {"num_cpus": 0.5}
    options = {**share, "runtime_env": {"env_vars": worker_env(run_dir)}}
    actor = ray.remote(ActorWorker).options(name="actor", **options).remote(config, model_path, total_updates)
    # Under LoRA the actor computes reference log-probs itself (adapters disabled): no second copy of the weights.
    needs_reference = uses_reference(config) and config.model.lora.rank == 0
    reference = (
        ray.remote(ReferenceWorker).options(name="reference", **options).remote(config, model_path)
        if needs_reference
        else None
    )
    rollout = ray.remote(RolloutWorker).options(name="rollout", **options).remote(config, model_path)
    return Workers(actor=actor, reference=reference, rollout=rollout)
