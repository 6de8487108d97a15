"""Scoring rollouts with the configured reward, in a Ray worker of its own so it overlaps the log-prob passes.

The reward function is loaded (and its signature checked) when the runner is built, and :meth:`RewardRunner.check`
scores a few training rows before any worker starts. A reward that raises, calls ``sys.exit``, or returns anything but
one finite ``overall`` per input, stops the run with the row that caused it; one that takes longer than
``reward.timeout_s`` on a batch stops it naming the batch (the blocked worker is killed).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import asdict

import ray
import torch

from rewards.composite import build_reward
from rewards.types import RewardInput, RewardScore
from rexthinker_rl.errors import ConfigError
from rexthinker_rl.runtime.placement import resources


class RewardError(RuntimeError):
    """The reward function failed or returned something unusable; the message names the row."""


def _key(reward_cfg) -> str:
    return "reward.components" if reward_cfg.components else f"reward.function={reward_cfg.function}"


def _spec(reward_cfg) -> dict:
    if reward_cfg.components:
        components = [{k: v for k, v in asdict(c).items() if k != "name" or v} for c in reward_cfg.components]
        return {"components": components}
    return {"function": reward_cfg.function, "kwargs": dict(reward_cfg.kwargs)}


# sys.exit inside a reward would end the run with its status (0: "success") or the scoring worker without a word.
FAILURES = (Exception, SystemExit)


def score_all(spec: dict, inputs: list[RewardInput]) -> list[RewardScore]:
    """Score ``inputs``; on failure re-score row by row to name the first row that breaks the function."""
    reward = build_reward(**spec)
    try:
        return reward(inputs)
    except FAILURES as batch_error:  # re-raised below with the failing row
        for row, single in enumerate(inputs):
            try:
                reward([single])
            except FAILURES as error:
                row_id = single["metadata"].get("row_id", row)
                raise RewardError(f"reward failed on row {row_id} (batch index {row}): {_failure(error)}") from error
        raise RewardError(f"reward failed on the batch but on no single row: {_failure(batch_error)}") from batch_error


def _failure(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r}); a reward returns scores and never ends the process"
    return repr(error)


class RewardWorker:
    """A long-lived process that scores batches: a Ray task a step would start a fresh worker process (and import the
    reward) whenever Ray has reaped the idle one, which on a small CPU host it does between steps (~2 s a step)."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec

    def score(self, inputs: list[RewardInput]) -> list[RewardScore]:
        return score_all(self.spec, inputs)


class RewardRunner:
    def __init__(self, reward_cfg) -> None:
        self.spec = _spec(reward_cfg)
        self.key = _key(reward_cfg)
        self.timeout_s = reward_cfg.timeout_s or None
        self.worker = None  # started with the first batch, in the Ray cluster the trainer runs in
        try:  # fail now, not after the first rollout, on a bad file, function name, signature or keyword
            build_reward(**self.spec)
        except Exception as error:  # noqa: BLE001 - whatever importing the user's file raised, re-raised as config
            raise ConfigError(f"{self.key}: {_one_line(error)}") from error

    def check(self, inputs: list[RewardInput]) -> None:
        """Score ``inputs`` here and now (before workers start): the reward must not raise and must return one finite
        ``overall`` per input."""
        try:
            self._score_here(inputs)
        except RewardError as error:
            raise RewardError(
                f"{self.key} fails before training, on sample completions (each row's ground truth and an empty one): "
                f"{error}; fix the function: it must return one {{'overall': float, ...}} per input and never raise "
                "on a completion"
            ) from error

    def _score_here(self, inputs: list[RewardInput]) -> None:
        """:func:`score_all` in this process, within reward.timeout_s: in a thread of its own, since a call that
        blocks cannot be interrupted (the thread is a daemon: it does not keep the process alive)."""
        failure: list[BaseException] = []

        def run() -> None:
            try:
                score_all(self.spec, inputs)
            except BaseException as error:  # handed to the caller's thread below
                failure.append(error)

        thread = threading.Thread(target=run, name="reward-check", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            raise RewardError(self._timed_out("the sample completions scored before training", len(inputs)))
        if failure:
            raise failure[0]

    def _timed_out(self, batch: str, count: int) -> str:
        return (
            f"{self.key} did not return within reward.timeout_s={self.timeout_s:g} s on {batch} ({count} responses): "
            "it blocks or is far slower than that; the run stopped; fix the function, or raise reward.timeout_s"
        )

    def score_async(self, inputs: list[RewardInput]) -> tuple:
        if self.worker is None:
            self.worker = ray.remote(RewardWorker).options(**resources("reward", False)).remote(self.spec)
        return self.worker.score.remote(inputs), len(inputs)

    def collect(self, pending: tuple, batch: str) -> tuple[torch.Tensor, dict[str, float], list[RewardScore]]:
        """The ``overall`` scores (batch,), the batch mean of every component as ``reward/<name>``, the raw scores;
        ``batch`` names the batch in an error ("step 3's batch")."""
        ref, count = pending
        try:
            scores = ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.kill(self.worker)  # blocked: it would never take the next batch
            self.worker = None
            raise RewardError(self._timed_out(batch, count)) from None
        except ray.exceptions.RayTaskError as error:
            raise error.as_instanceof_cause() from None
        totals: dict[str, float] = defaultdict(float)
        for score in scores:
            for key, value in score.items():
                totals[key] += float(value)
        metrics = {f"reward/{key}": value / max(1, len(scores)) for key, value in totals.items()}
        return torch.tensor([s["overall"] for s in scores], dtype=torch.float32), metrics, scores


def probe_inputs(dataset, rows: int = 4) -> list[RewardInput]:
    """Inputs for :meth:`RewardRunner.check`: for the first ``rows`` prompts, the ground truth as a well-formed
    completion and an empty completion (what a policy emits when it stops at once)."""
    inputs = []
    for index in range(min(rows, len(dataset))):
        sample = dataset[index]
        for response in (f"<think>check</think><answer>{sample.ground_truth}</answer>", ""):
            inputs.append(RewardInput(response=response, ground_truth=sample.ground_truth, metadata=sample.metadata))
    return inputs


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def reward_inputs(prompts, results) -> list[RewardInput]:
    """One RewardInput per rollout: the response, its prompt's ground truth and metadata."""
    return [
        RewardInput(
            response=result.text,
            ground_truth=prompts[result.prompt_index].ground_truth,
            metadata=prompts[result.prompt_index].metadata,
        )
        for result in results
    ]
