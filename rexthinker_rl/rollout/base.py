"""The rollout protocol: the records an engine takes and returns, and the methods every engine has."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class RolloutPrompt:
    """What an engine needs of a prompt: the chat-templated text (one unexpanded image placeholder) and the image,
    already resized to the frame the boxes live in."""

    prompt_text: str
    image: Image.Image
    seed: int | None = None  # this prompt's own sampling seed (rollout.seed_mode=ours); None: the SamplingSpec's


@dataclass(frozen=True)
class SeedMode:
    """One value of rollout.seed_mode: the seed of step ``step`` (validation: step None) from rollout.seed, and
    whether each prompt of a step then draws a seed of its own from it (``prompt_seeds``)."""

    step_seed: Callable[[int, int | None], int | None]
    per_prompt: bool


# ours: a fresh stream each step, and each prompt its own; easyr1: rollout.seed for every request of every step
# (vllm_rollout_spmd.py builds one SamplingParams with the config's seed, 1, and only temperature and n change between
# training and validation).
SEED_MODES: dict[str, SeedMode] = {
    "ours": SeedMode(lambda seed, step: None if step is None else seed * 100_003 + step, per_prompt=True),
    "easyr1": SeedMode(lambda seed, step: seed, per_prompt=False),
}


def prompt_seeds(seed_mode: str, step_seed: int | None, count: int) -> list[int | None]:
    """Each of ``count`` prompts' own seed, drawn from the step's where the mode says so (``ours``), or None: every
    request takes the step's seed (``easyr1``, or no seed).

    vLLM seeds the n samples of a request seed, seed + 1, ..., seed + n - 1, so one seed for every request gives the
    j-th sample of every prompt the same random numbers: wherever prompts have alike distributions (the same template,
    a decision at the same token), their j-th samples decide alike, and a step's groups move together instead of
    averaging out (docs/tiny-demo.md, "Samples that moved together"). Drawn 62-bit, no two prompts' ranges meet."""
    if not SEED_MODES[seed_mode].per_prompt or step_seed is None:
        return [None] * count
    states = np.random.SeedSequence(step_seed).spawn(count)
    return [int(state.generate_state(1, np.uint64)[0] >> 2) for state in states]


@dataclass
class SamplingSpec:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 256
    seed: int | None = None  # unless its prompt has one: vllm, every request's; hf, this + the prompt's index

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class RolloutResult:
    """One sampled response. ``logprobs[i]`` is the engine's log-probability of ``response_ids[i]`` under the raw
    (temperature 1, unfiltered) distribution, so it is comparable with the actor's."""

    prompt_index: int
    response_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str


class RolloutEngine(Protocol):
    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        """``len(prompts) * sampling.n`` results, grouped by prompt in prompt order."""

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the weights (Hugging Face names) and drop every cache computed with the old ones."""

    def sleep(self) -> None:
        """Free accelerator memory while the actor trains (colocated engines; a no-op where unsupported)."""

    def wake(self) -> None:
        """Undo sleep()."""
