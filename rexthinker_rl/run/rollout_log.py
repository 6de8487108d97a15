"""What a step's rollouts tell beside the loss: a few of them written to ``rollouts.jsonl`` (for reading and the
viewer), the reward split by sample kind, and response-length metrics."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rewards.parsing import parse_ground_truth
from rexthinker_rl.rollout.base import RolloutResult


def log_rollouts(path: Path, step: int, prompts, results: list[RolloutResult], scores, count: int) -> None:
    """The first ``count`` rollouts of a step (text, ground truth, reward breakdown), appended to ``path``; -1: all."""
    if count == 0:
        return
    lines = []
    for result, score in list(zip(results, scores, strict=True))[: None if count < 0 else count]:
        prompt = prompts[result.prompt_index]
        record = {
            "step": step,
            "uid": prompt.uid,
            "prompt": prompt.messages[-1]["content"][-1]["text"],
            "response": result.text,
            "ground_truth": prompt.ground_truth,
            "reward": {k: float(v) for k, v in score.items()},
        }
        lines.append(json.dumps(record))
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def _kinds(prompts, results: list[RolloutResult]) -> dict[int, str]:
    """``present`` (the answer has boxes) or ``rejection`` (nothing matches), by prompt index."""
    kinds = {}
    for result in results:
        if result.prompt_index not in kinds:
            truth = parse_ground_truth(prompts[result.prompt_index].ground_truth)
            kinds[result.prompt_index] = "rejection" if truth.kind == "rejection" else "present"
    return kinds


def metrics_by_kind(prompts, results: list[RolloutResult], scores, prefix: str) -> dict[str, float]:
    """Reward (and the ``accuracy`` component when there is one) split by sample kind: ``present`` (the answer has
    boxes) and ``rejection`` (nothing matches), as ``<prefix>/<name>@<kind>``. Rejection rows are easy to score on by
    refusing everything, so the split shows whether the policy learns to ground or to refuse."""
    kinds = _kinds(prompts, results)
    sums: dict[str, list[float]] = {}
    for result, score in zip(results, scores, strict=True):
        kind = kinds[result.prompt_index]
        for name in ("overall", "accuracy"):
            if name in score:
                sums.setdefault(f"{prefix}/{name}@{kind}", []).append(float(score[name]))
    return {key: sum(values) / len(values) for key, values in sums.items()}


def length_metrics(results: list[RolloutResult]) -> dict[str, float]:
    lengths = torch.tensor([len(r.response_ids) for r in results], dtype=torch.float32)
    clipped = sum(r.finish_reason == "length" for r in results) / max(1, len(results))
    return {
        "response_length/mean": lengths.mean().item(),
        "response_length/max": lengths.max().item(),
        "response_length/clip_ratio": clipped,
        "throughput/generated_tokens": lengths.sum().item(),
    }


def group_metrics(prompts, results: list[RolloutResult], scores) -> dict[str, float]:
    """What GRPO can learn from a step's groups, by kind: ``groups/contrast@<kind>``, the share of prompts whose
    samples' rewards are not all equal (a group without contrast has zero advantages and teaches nothing), and
    ``groups/solved@<kind>``, the share with at least one sample whose ``accuracy`` component is 1 (the right boxes
    and nothing else: the answer the update can reinforce). A policy that learns to ground raises both on present
    prompts; one that only learns to refuse does not."""
    kinds = _kinds(prompts, results)
    rewards: dict[int, list[float]] = {}
    solved: dict[int, bool] = {}
    for result, score in zip(results, scores, strict=True):
        rewards.setdefault(result.prompt_index, []).append(float(score["overall"]))
        solved[result.prompt_index] = solved.get(result.prompt_index, False) or float(score.get("accuracy", 0)) >= 1
    metrics: dict[str, float] = {}
    for kind in sorted(set(kinds.values())):
        group = [index for index, name in kinds.items() if name == kind]
        metrics[f"groups/contrast@{kind}"] = sum(max(rewards[i]) > min(rewards[i]) for i in group) / len(group)
        if any("accuracy" in score for score in scores):
            metrics[f"groups/solved@{kind}"] = sum(solved[i] for i in group) / len(group)
    return metrics
