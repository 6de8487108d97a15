"""A dead worker as one line: its role (from the ids the workers reported), the step, how to resume. Ray's errors are
built here as Ray raises them; the real deaths (SIGKILLed workers of a run) are tests/faults/test_worker_death.py."""

from __future__ import annotations

import pytest
from ray.exceptions import RayActorError, WorkerCrashedError

from rexthinker_rl.runtime.deaths import WorkerDiedError, WorkerStartFailed, death_line, names_dead_workers

ROLES = {"a1": "actor", "b2": "rollout", "c3": "colocated rank 1"}
RESUME = "rerun the same command with trainer.resume=auto to continue from runs/x/checkpoints/global_step_2"


def test_the_line_names_role_step_pid_and_resume():
    error = RayActorError(actor_id="c3", error_msg="The actor died unexpectedly (pid=4242, ip=127.0.0.1)")
    assert death_line(error, ROLES, 3, RESUME) == (
        f"colocated rank 1 worker died during step 3 (its process died, pid 4242); the run stopped; {RESUME}"
    )


def test_start_up_failures_and_reward_tasks():
    failed = WorkerStartFailed("rollout", RayActorError(actor_id="zz", actor_init_failed=True))
    assert death_line(failed, {}, 0, RESUME).startswith(
        "rollout worker died during start-up (step 0) (its actor failed to start); the run stopped"
    )
    assert death_line(WorkerCrashedError(), ROLES, 5, RESUME).startswith("reward worker died during step 5")
    assert death_line(RayActorError(actor_id="unknown"), ROLES, 1, RESUME).startswith("Ray actor unknown worker")


def test_the_decorator_turns_ray_errors_into_one_error():
    class Controller:
        runtime, step = None, 2

        def how_to_resume(self) -> str:
            return RESUME

        @names_dead_workers
        def fit(self):
            raise WorkerStartFailed("actor", RayActorError(actor_id="a1"))

    with pytest.raises(WorkerDiedError, match="^actor worker died during step 2 "):
        Controller().fit()
