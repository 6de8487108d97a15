"""What every runtime offers the controller: the verbs (the :class:`Runtime` protocol), results still under way
(:class:`Pending`), the actor's state for a checkpoint (:class:`ActorState`), and naming workers by role. The verbs
every runtime answers from its actor's ranks are ``runtime.ranks.ActorVerbs``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import ray
import torch

from rexthinker_rl.runtime.deaths import WorkerStartFailed

if TYPE_CHECKING:
    from rexthinker_rl.algo.batch import SequenceBatch
    from rexthinker_rl.rollout import RolloutPrompt, RolloutResult, SamplingSpec

T = TypeVar("T")


class Pending(Generic[T]):
    """A result being computed in worker processes; ``result()`` waits for it. The controller starts the actor's and
    the reference's log-probs (and the reward actor's scoring) before waiting on any of them, so they overlap."""

    def __init__(self, refs: list, combine: Callable[[list], T]) -> None:
        self.refs, self.combine = refs, combine

    def result(self) -> T:
        return self.combine(ray.get(self.refs))


@dataclass
class Generated:
    """A batch's responses, in prompt order, and when the engines worked on it (wall clock, seconds since the epoch:
    the earliest start and the latest finish over the engines; None where the placement does not time it)."""

    results: list[RolloutResult]
    started: float | None = None
    finished: float | None = None


@dataclass
class ActorState:
    """The actor as a checkpoint holds it: full weights (peft names under LoRA) and, for an exact resume, the train
    state (optimizer, schedule, non-finite streak, every rank's RNG)."""

    weights: dict[str, torch.Tensor]
    train_state: dict[str, Any] | None


class Runtime(Protocol):
    """The controller's verbs, whatever the topology (see ``rexthinker_rl.runtime.topology``)."""

    roles: dict[str, str]
    """Ray actor id (hex) -> the role of that worker ("actor", "actor rank 1", "reference", "rollout", ...)."""

    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]: ...

    def generate_async(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> Pending[Generated]:
        """Start generating; the engines work while the controller goes on (trainer.pipeline=one_step_off)."""

    def logprobs(self, batch: SequenceBatch) -> Pending[torch.Tensor]: ...

    def ref_logprobs(self, batch: SequenceBatch) -> Pending[torch.Tensor]: ...

    def update(self, batch: SequenceBatch) -> dict[str, float]: ...

    def sync_weights(self) -> None:
        """Give the rollout engines the actor's current weights (and drop caches computed with the old ones)."""

    def save(self, with_optimizer: bool) -> ActorState: ...

    def load(self, state: ActorState) -> None:
        """Restore the actor from a checkpoint and sync the rollout engines to it."""

    def save_pretrained(self, folder: str, processor) -> None:
        """The actor as a Hugging Face folder (LoRA merged)."""

    def shutdown(self) -> None: ...


def wait_started(refs: list, roles: dict[str, str]) -> None:
    """Wait for the workers' set-up calls; a worker that dies meanwhile is reported by its role."""
    try:
        ray.get(refs)
    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as error:
        role = roles.get(getattr(error, "actor_id", None) or "", "a worker")
        raise WorkerStartFailed(role, error) from error


def identify(handles: dict[str, Any]) -> dict[str, str]:
    """``{actor id: role}`` of freshly spawned workers, each asked for its own id; waiting on the answers also waits
    until every worker is constructed (in parallel). A worker that fails to start is reported by its role."""
    asked = {role: handle.actor_id.remote() for role, handle in handles.items()}
    roles = {}
    for role, ref in asked.items():
        try:
            roles[ray.get(ref)] = role
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as error:
            raise WorkerStartFailed(role, error) from error
    return roles


def prompt_slices(count: int, parts: int) -> list[range]:
    """``count`` prompts in ``parts`` contiguous slices of near-equal size (one per engine)."""
    bounds = [count * part // parts for part in range(parts + 1)]
    return [range(bounds[part], bounds[part + 1]) for part in range(parts)]


def merge_results(slices: list[range], results: list[list[RolloutResult]]) -> list[RolloutResult]:
    """Results of each engine's slice, with prompt indices back in the whole batch's numbering."""
    merged = []
    for prompts, part in zip(slices, results, strict=True):
        for result in part:
            result.prompt_index += prompts.start
            merged.append(result)
    return merged
