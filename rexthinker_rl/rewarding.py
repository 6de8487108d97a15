"""Scoring rollouts with the configured reward, in a Ray task so it overlaps the log-prob passes.

The reward function is loaded (and its signature checked) when the runner is built, before any worker starts. A reward
that raises stops the run with the row that caused it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict

import torch

from rewards.types import RewardInput, RewardScore


class RewardError(RuntimeError):
    """The reward function failed or returned something unusable; the message names the row."""


def _spec(reward_cfg) -> dict:
    if reward_cfg.components:
        components = [{k: v for k, v in asdict(c).items() if k != "name" or v} for c in reward_cfg.components]
        return {"components": components}
    return {"function": reward_cfg.function, "kwargs": dict(reward_cfg.kwargs)}


def score_all(spec: dict, inputs: list[RewardInput]) -> list[RewardScore]:
    """Score ``inputs``; on failure re-score row by row to name the first row that breaks the function."""
    from rewards.composite import build_reward

    reward = build_reward(**spec)
    try:
        return reward(inputs)
    except Exception as batch_error:  # noqa: BLE001 - re-raised below with the failing row
        for row, single in enumerate(inputs):
            try:
                reward([single])
            except Exception as error:  # noqa: BLE001
                row_id = single["metadata"].get("row_id", row)
                raise RewardError(f"reward failed on row {row_id} (batch index {row}): {error!r}") from error
        raise RewardError(f"reward failed on the batch but on no single row: {batch_error!r}") from batch_error


class RewardRunner:
    def __init__(self, reward_cfg) -> None:
        from rewards.composite import build_reward

        self.spec = _spec(reward_cfg)
        build_reward(**self.spec)  # fail now, not after the first rollout, on a bad function name or signature

    def score_async(self, inputs: list[RewardInput]):
        import ray

        return ray.remote(score_all).options(num_cpus=0).remote(self.spec, inputs)

    def collect(self, ref) -> tuple[torch.Tensor, dict[str, float], list[RewardScore]]:
        """The ``overall`` scores (batch,), the batch mean of every component as ``reward/<name>``, the raw scores."""
        import ray

        try:
            scores = ray.get(ref)
        except ray.exceptions.RayTaskError as error:
            raise error.as_instanceof_cause() from None
        totals: dict[str, float] = defaultdict(float)
        for score in scores:
            for key, value in score.items():
                totals[key] += float(value)
        metrics = {f"reward/{key}": value / max(1, len(scores)) for key, value in totals.items()}
        return torch.tensor([s["overall"] for s in scores], dtype=torch.float32), metrics, scores


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
