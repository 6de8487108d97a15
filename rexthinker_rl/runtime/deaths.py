"""Worker death as one line: which worker (by role), during which step, and how to resume.

Ray reports a dead actor process as ``RayActorError`` (with the actor's id) and a dead task as
``WorkerCrashedError``; the runtime knows each worker's id (the workers report it themselves at start-up), so the
line names the role, never Ray's internals.
"""

from __future__ import annotations

import functools
import re

from ray.exceptions import RayActorError, WorkerCrashedError

RAY_WORKER_ERRORS = (RayActorError, WorkerCrashedError)


class WorkerDiedError(RuntimeError):
    """A Ray worker process died mid-run; the message names the worker, the step and how to resume."""


class WorkerStartFailed(RuntimeError):
    """A worker of ``role`` failed while starting (the runtime knew whom it asked)."""

    def __init__(self, role: str, error: Exception) -> None:
        super().__init__(f"{role}: {error}")
        self.role, self.error = role, error


def worker_role(error: Exception, roles: dict[str, str]) -> str:
    """The role of the worker an error is about: a runtime's worker by its actor id, ``reward`` for a Ray task."""
    if isinstance(error, WorkerStartFailed):
        return error.role
    actor_id = getattr(error, "actor_id", None)
    if actor_id is None:
        return "reward" if isinstance(error, WorkerCrashedError) else "a Ray"
    return roles.get(actor_id, f"Ray actor {actor_id}")


def death_line(error: Exception, roles: dict[str, str], step: int, how_to_resume: str) -> str:
    cause = error.error if isinstance(error, WorkerStartFailed) else error
    when = f"step {step}" if step else "start-up (step 0)"
    detail = "its actor failed to start" if getattr(cause, "actor_init_failed", False) else "its process died"
    pid = re.search(r"\bpid[:=]\s*(\d+)", str(cause))
    return (
        f"{worker_role(error, roles)} worker died during {when} ({detail}{f', pid {pid.group(1)}' if pid else ''});"
        f" the run stopped; {how_to_resume}"
    )


def names_dead_workers(fit):
    """Decorator for the controller's ``fit``: a worker process that dies surfaces as one :class:`WorkerDiedError`.
    The controller provides ``runtime`` (or None before it starts), ``step`` and ``how_to_resume()``."""

    @functools.wraps(fit)
    def wrapper(controller, *args, **kwargs):
        try:
            return fit(controller, *args, **kwargs)
        except (*RAY_WORKER_ERRORS, WorkerStartFailed) as error:
            roles = controller.runtime.roles if controller.runtime is not None else {}
            line = death_line(error, roles, controller.step, controller.how_to_resume())
            raise WorkerDiedError(line) from error

    return wrapper
