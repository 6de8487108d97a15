"""A batch being generated (:class:`Rollout`), what the pipelined loop keeps of it across a checkpoint, and the
idle-time accounting of a step.

With ``trainer.pipeline=one_step_off`` the controller launches step t+1's generation before it updates on step t's
batch, so the engines sample batch t+1 with the weights they hold: those of step t-1. The trainer logs how stale each
batch is (``pipeline/staleness``, in updates) and how long each side waited on the other. A checkpoint taken at step
t holds batch t+1, already generated, so a resumed run trains on exactly the batch the uninterrupted one did (the
weights that sampled it are not in the checkpoint).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rexthinker_rl.rollout.base import RolloutResult
from rexthinker_rl.runtime import Generated, Pending


@dataclass
class Rollout:
    """Step ``step``'s prompts (dataset rows ``indices``) and their generation: under way (``pending``) or done.
    ``version``: how many actor updates the generating weights had seen."""

    step: int
    indices: list[int]
    version: int
    pending: Pending[Generated] | None = None
    generated: Generated | None = None

    def wait(self) -> Generated:
        if self.generated is None:
            self.generated = self.pending.result()
        return self.generated

    def state_dict(self) -> dict:
        """The finished batch, for a checkpoint (JSON: token ids, log-probs, texts)."""
        generated = self.wait()
        results = [asdict(result) for result in generated.results]
        return {"step": self.step, "indices": self.indices, "version": self.version, "results": results}

    @classmethod
    def from_state(cls, state: dict) -> Rollout:
        generated = Generated([RolloutResult(**result) for result in state["results"]])
        return cls(state["step"], list(state["indices"]), state["version"], generated=generated)


def idle_times(step_seconds: float, waited: float, generated: Generated | None) -> dict[str, float]:
    """``timing/actor_idle``: the seconds the controller waited on generation with no training to do;
    ``timing/rollout_idle``: the step's seconds the engines were not generating (the step minus the engines' time on
    the batch generated during it; None: none was)."""
    busy = 0.0
    if generated is not None and generated.started is not None:
        busy = generated.finished - generated.started
    return {"timing/actor_idle": waited, "timing/rollout_idle": max(0.0, step_seconds - busy)}
