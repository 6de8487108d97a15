"""The single controller: ``GRPOTrainer.fit()`` reads as the algorithm, one timer per phase.

generate -> reward (off the critical path) -> old/ref log-probs -> advantages -> update -> sync -> log
-> validate / checkpoint.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import time
import warnings
from pathlib import Path

import torch

from rexthinker_rl import algorithms
from rexthinker_rl.batch import build_sequence_batch, encode_prompts
from rexthinker_rl.config import Config, save_config
from rexthinker_rl.logging import MetricsLogger
from rexthinker_rl.rewarding import RewardRunner, probe_inputs, reward_inputs
from rexthinker_rl.rollout.base import RolloutPrompt, RolloutResult, SamplingSpec
from rexthinker_rl.utils import PhaseTimer, atomic_write_text, rng_state, seed_everything, set_rng_state


class WorkerDiedError(RuntimeError):
    """A Ray worker process died mid-run; the message names the worker, the step and how to resume."""


def _names_dead_workers(fit):
    """Decorator: a Ray worker process that dies surfaces as a :class:`WorkerDiedError` naming worker and step."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        from ray.exceptions import RayActorError, WorkerCrashedError

        try:
            return fit(self, *args, **kwargs)
        except (RayActorError, WorkerCrashedError) as error:
            raise self._worker_died(error) from error

    return wrapper


class GRPOTrainer:
    def __init__(self, config: Config) -> None:
        from rexthinker_rl.checkpoint import check_compatible, check_run_folder, model_signature, resolve_resume
        from rexthinker_rl.data import ResumableSampler, RLDataset
        from rexthinker_rl.modeling import load_processor

        self.config = config
        seed_everything(config.trainer.seed)
        self.run_dir = Path(config.trainer.output_dir)
        check_run_folder(self.run_dir, config.trainer.resume)  # nothing of an earlier run or a user's is overwritten
        model = config.model
        # Everything cheap that can be wrong is checked before any worker starts: data, reward function, model folder.
        self.processor = load_processor(
            model.tokenizer_path or model.path, config.data.min_pixels, config.data.max_pixels, model.trust_remote_code
        )
        self.train_set = RLDataset(config.data.train_files, self.processor, config.data)
        self.val_set = (
            RLDataset(config.data.val_files, self.processor, config.data, max_samples=config.data.val_max_samples)
            if config.data.val_files
            else None
        )
        self.rewards = RewardRunner(config.reward)
        self.rewards.check(probe_inputs(self.train_set))
        self.signature = model_signature(model.path, len(self.processor.tokenizer), model.lora)
        key = f"trainer.resume={config.trainer.resume}"
        self.resume_from = resolve_resume(config.trainer.resume, self.run_dir / "checkpoints")
        if self.resume_from is not None:
            check_compatible(self.resume_from, self.signature, key)
        self.sampler = ResumableSampler(
            len(self.train_set), config.data.rollout_batch_size, config.data.shuffle, config.data.seed
        )
        if self.sampler.batches_per_epoch == 0:
            raise ValueError(
                f"data.train_files={config.data.train_files} has {len(self.train_set)} usable rows, fewer than "
                f"data.rollout_batch_size={config.data.rollout_batch_size}"
            )
        steps = config.trainer.total_epochs * self.sampler.batches_per_epoch
        self.total_steps = config.trainer.total_steps if config.trainer.total_steps > 0 else steps
        self.timer = PhaseTimer()
        self.workers = None
        self.step = 0  # the step in progress (0: start-up and the validation before training), for error messages
        self.history: list[dict[str, float]] = []
        # Greedy validation reward of every prompt, by step ("0" = before training): the paired gain and its noise.
        self.val_rewards: dict[str, list[float]] = {}
        self._ray_switch: str | None = None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.run_dir / "config.yaml")

    # ------------------------------------------------------------------ the algorithm
    @_names_dead_workers
    def fit(self) -> dict[str, float]:
        self._start_workers()
        start = self._resume()
        logger = self._logger()
        try:
            if start == 0 and self.config.trainer.val_before_train and self.val_set is not None:
                metrics = self.validate()
                self.history.append({"step": 0, **metrics})
                logger.log(0, metrics)
            for step in range(start + 1, self.total_steps + 1):
                self.step = step
                metrics = self.train_step(step)
                if self._due(step, self.config.trainer.val_freq) and self.val_set is not None:
                    metrics.update(self.validate())
                self.history.append({"step": step, **metrics})
                logger.log(step, metrics)
                if self._due(step, self.config.checkpoint.save_freq):
                    with self.timer("checkpoint"):
                        self.save(step)
                    self._plot()
            summary = self._finish()
            self._plot()
        finally:
            logger.close()
        return summary

    def train_step(self, step: int) -> dict[str, float]:
        import ray

        workers, timer = self.workers, self.timer
        step_start = time.perf_counter()
        with timer("generate"):
            prompts = [self.train_set[i] for i in self.sampler.next_batch()]
            results = self._generate(prompts, self._train_sampling(step))
        with timer("reward_launch"):
            inputs = reward_inputs(prompts, results)
            scores_ref = self.rewards.score_async(inputs)  # runs while the log-probs are computed
        with timer("prepare"):
            batch = self._sequence_batch(prompts, results)
        with timer("logprobs"):
            # On-policy (one update per step): the old policy IS the current one, so the update uses its own
            # detached log-probs as old_logprobs (ratio exactly 1) and a whole forward pass is saved.
            old_ref = None if self._on_policy() else workers.actor.compute_logprobs.remote(batch)
            ref_ref = self._reference_logprobs(batch)
            batch.old_logprobs = ray.get(old_ref) if old_ref is not None else None
            batch.ref_logprobs = ray.get(ref_ref) if ref_ref is not None else None
        with timer("reward_wait"):
            scores, reward_metrics, raw_scores = self.rewards.collect(scores_ref)
            reward_metrics.update(_by_kind(prompts, results, raw_scores, "reward"))
            self._log_rollouts(step, prompts, results, raw_scores)
        with timer("advantages"):
            batch, adv_metrics = self._advantages(batch, scores, results)
        with timer("update"):
            update_metrics = ray.get(workers.actor.update.remote(batch)) if batch is not None else {}
        with timer("sync"):
            if batch is not None:
                ray.get(workers.rollout.load_weights.remote(workers.actor.get_weights.remote()))
        timings = timer.pop()
        timings["timing/step"] = time.perf_counter() - step_start
        lengths = _length_metrics(results)
        tokens = lengths["throughput/generated_tokens"]
        lengths["throughput/tokens_per_s"] = tokens / timings["timing/step"]
        lengths["throughput/generate_tokens_per_s"] = tokens / max(timings["timing/generate"], 1e-9)
        return {**reward_metrics, **adv_metrics, **update_metrics, **lengths, **timings}

    def _advantages(self, batch, scores: torch.Tensor, results: list[RolloutResult]):
        algo = self.config.algorithm
        uids = [result.prompt_index for result in results]
        if algo.kl_mode == "reward" and batch.ref_logprobs is not None:
            kl = algorithms.kl_penalty(algo.kl_estimator, batch.old_logprobs, batch.ref_logprobs)
            scores = algorithms.kl_reward_penalty(scores, kl, batch.response_mask, algo.kl_coef)
        batch.advantages = algorithms.compute_advantages(algo.adv_estimator, scores, uids, algo.adv_eps)
        metrics = {"advantages/mean": batch.advantages.mean().item(), "advantages/max": batch.advantages.max().item()}
        if not algo.online_filtering:
            return batch, metrics
        keep = _informative_rows(scores, uids)
        metrics["filter/kept_fraction"] = len(keep) / len(uids)
        return (batch.select(keep) if keep else None), metrics

    def validate(self) -> dict[str, float]:
        """Greedy decoding on the validation set; mean reward and its components."""
        with self.timer("validate"):
            prompts = [self.val_set[i] for i in range(len(self.val_set))]
            results = self._generate(prompts, self._val_sampling())
            inputs = reward_inputs(prompts, results)
            rewards, metrics, raw_scores = self.rewards.collect(self.rewards.score_async(inputs))
            metrics.update(_by_kind(prompts, results, raw_scores, "reward"))
            self.val_rewards[str(self.step)] = rewards.tolist()
        # reward/overall -> val/reward, reward/<component> -> val/<component>
        return {"val/" + key.removeprefix("reward/").replace("overall", "reward"): v for key, v in metrics.items()}

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> Path:
        import ray

        from rexthinker_rl.checkpoint import save_checkpoint
        from rexthinker_rl.config import to_yaml

        actor = self.workers.actor
        weights = ray.get(actor.get_checkpoint_weights.remote())
        train_state = ray.get(actor.get_train_state.remote()) if self.config.checkpoint.save_optimizer else None
        state = {
            "step": step,
            "sampler": self.sampler.state_dict(),
            "history": self.history,
            "val_rewards": self.val_rewards,
        }
        return save_checkpoint(
            self.run_dir / "checkpoints",
            step,
            weights,
            train_state,
            state,
            to_yaml(self.config),
            self.config.checkpoint.save_limit,
            rng_state(),
            self.signature,
        )

    def _resume(self) -> int:
        """Restore actor, rollout weights, data position and history from a checkpoint; the step to continue after."""
        import ray

        from rexthinker_rl.checkpoint import load_checkpoint

        folder = self.resume_from  # found, verified and checked against the model before Ray started
        if folder is None:
            _truncate_metrics(self.run_dir / "metrics.jsonl", keep_through=-1)
            return 0
        ckpt = load_checkpoint(folder, verified=True)
        ray.get(self.workers.actor.load_train_state.remote(ckpt.weights, ckpt.train_state))
        ray.get(self.workers.rollout.load_weights.remote(self.workers.actor.get_weights.remote()))
        self.sampler.load_state_dict(ckpt.trainer_state["sampler"])
        self.history = ckpt.trainer_state["history"]
        self.val_rewards = ckpt.trainer_state.get("val_rewards", {})
        if ckpt.rng_state is not None:
            set_rng_state(ckpt.rng_state)
        # Steps logged after this checkpoint (before a crash) will be run again: drop them so nothing is doubled.
        _truncate_metrics(self.run_dir / "metrics.jsonl", keep_through=ckpt.step)
        print(f"resumed from {folder} (step {ckpt.step})", flush=True)
        return ckpt.step

    # ------------------------------------------------------------------ helpers
    def _worker_died(self, error: Exception) -> WorkerDiedError:
        """Ray's report of a dead worker process, as one line naming the worker, the step and how to resume."""
        when = f"step {self.step}" if self.step else "start-up (step 0)"
        detail = "its actor failed to start" if getattr(error, "actor_init_failed", False) else "its process died"
        pid = re.search(r"\bpid[:=]\s*(\d+)", str(error))
        return WorkerDiedError(
            f"{self._worker_role(error)} worker died during {when} ({detail}{f', pid {pid.group(1)}' if pid else ''});"
            f" the run stopped; {self.how_to_resume()}"
        )

    def how_to_resume(self) -> str:
        """The rerun that continues this run, and from where."""
        from rexthinker_rl.checkpoint import list_checkpoints

        checkpoints = list_checkpoints(self.run_dir / "checkpoints")
        since = f"from {checkpoints[0]}" if checkpoints else "from the start (no checkpoint yet)"
        return f"rerun the same command with trainer.resume=auto to continue {since}"

    def _worker_role(self, error) -> str:
        """``actor``, ``reference`` or ``rollout`` for the Ray actor an error is about; ``reward`` for a task."""
        actor_id = getattr(error, "actor_id", None)
        if actor_id is None:
            return "reward" if type(error).__name__ == "WorkerCrashedError" else "a Ray"
        for role in ("actor", "reference", "rollout"):
            handle = getattr(self.workers, role, None) if self.workers is not None else None
            if handle is not None and handle._actor_id.hex() == actor_id:
                return role
        return f"Ray actor {actor_id}"

    def _generate(self, prompts, sampling: SamplingSpec) -> list[RolloutResult]:
        import ray

        requests = [RolloutPrompt(p.prompt_text, p.image) for p in prompts]
        return ray.get(self.workers.rollout.generate.remote(requests, sampling))

    def _train_sampling(self, step: int) -> SamplingSpec:
        r = self.config.rollout
        return SamplingSpec(
            n=r.n,
            temperature=r.temperature,
            top_p=r.top_p,
            top_k=r.top_k,
            max_tokens=self.config.data.max_response_length,
            seed=r.seed * 100_003 + step,  # a fresh, reproducible sample stream every step
        )

    def _val_sampling(self) -> SamplingSpec:
        r = self.config.rollout
        return SamplingSpec(
            n=1, temperature=r.val_temperature, top_p=1.0, max_tokens=self.config.data.max_response_length
        )

    def _sequence_batch(self, prompts, results: list[RolloutResult]):
        encoded = encode_prompts(self.processor, [p.prompt_text for p in prompts], [p.image for p in prompts])
        return build_sequence_batch(
            encoded,
            [r.prompt_index for r in results],
            [r.response_ids for r in results],
            self.processor.tokenizer.pad_token_id,
        )

    def _reference_logprobs(self, batch):
        """A Ray future of the reference log-probs: the reference worker, or the actor with adapters off under LoRA."""
        from rexthinker_rl.workers import uses_reference

        if self.workers.reference is not None:
            return self.workers.reference.compute_logprobs.remote(batch)
        if uses_reference(self.config):
            return self.workers.actor.compute_ref_logprobs.remote(batch)
        return None

    def _on_policy(self) -> bool:
        derived, algo = self.config.derived, self.config.algorithm
        return derived["updates_per_step"] == 1 and not (algo.kl_mode == "reward" and algo.kl_coef > 0)

    def _log_rollouts(self, step: int, prompts, results: list[RolloutResult], scores) -> None:
        """A few rollouts per step (text, ground truth, reward breakdown) to rollouts.jsonl, for reading and viewers."""
        count = self.config.logging.log_rollouts
        if count <= 0:
            return
        lines = []
        for result, score in list(zip(results, scores, strict=True))[:count]:
            prompt = prompts[result.prompt_index]
            lines.append(
                json.dumps(
                    {
                        "step": step,
                        "uid": prompt.uid,
                        "prompt": prompt.messages[-1]["content"][-1]["text"],
                        "response": result.text,
                        "ground_truth": prompt.ground_truth,
                        "reward": {k: float(v) for k, v in score.items()},
                    }
                )
            )
        with (self.run_dir / "rollouts.jsonl").open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")

    def _due(self, step: int, freq: int) -> bool:
        return step == self.total_steps or (freq > 0 and step % freq == 0)

    def _start_workers(self) -> None:
        import ray

        from rexthinker_rl.ray_cluster import start_ray
        from rexthinker_rl.workers import spawn_workers, worker_env

        if not ray.is_initialized():
            cpus, store = max(2, os.cpu_count() or 2), 300 * 2**20
            env = worker_env(str(self.run_dir))
            self._ray_switch = start_ray(self.config.trainer.ray_address, env, cpus, store)
        updates = self.total_steps * self.config.derived["updates_per_step"]
        self.workers = spawn_workers(self.config, self.config.model.path, updates, str(self.run_dir))

    def _logger(self) -> MetricsLogger:
        cfg = self.config
        return MetricsLogger(
            cfg.logging.sinks,
            self.run_dir,
            self.total_steps,
            cfg.trainer.project_name,
            cfg.trainer.experiment_name,
            cfg.logging.wandb_mode,
        )

    def _finish(self) -> dict[str, float]:
        import ray

        final = self.run_dir / "final"
        ray.get(self.workers.actor.save_pretrained.remote(str(final), self.processor))
        summary = summarize(self.history, self.val_rewards)
        atomic_write_text(self.run_dir / "val_rewards.json", json.dumps(self.val_rewards))
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        return summary

    def _plot(self) -> None:
        """Redraw curves.png; a plotting problem is reported, never allowed to stop training."""
        from rexthinker_rl.plots import plot_curves

        try:
            plot_curves(self.run_dir)
        except Exception as error:  # noqa: BLE001 - matplotlib failures must not cost a training run
            warnings.warn(f"could not draw {self.run_dir / 'curves.png'}: {error!r}", stacklevel=2)

    def shutdown(self) -> None:
        from rexthinker_rl.ray_cluster import stop_ray

        self.workers = None
        stop_ray(self._ray_switch)


def _truncate_metrics(path: Path, keep_through: int) -> None:
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash or a full disk mid-write; that step is run again anyway
        if record["step"] <= keep_through:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _informative_rows(scores: torch.Tensor, uids: list[int]) -> list[int]:
    """Rows of groups whose rewards are not all equal (an all-equal group has zero advantage: no signal)."""
    groups: dict[int, list[int]] = {}
    for row, uid in enumerate(uids):
        groups.setdefault(uid, []).append(row)
    return [row for rows in groups.values() if scores[rows].max() > scores[rows].min() for row in rows]


def _by_kind(prompts, results: list[RolloutResult], scores, prefix: str) -> dict[str, float]:
    """Reward (and the ``accuracy`` component when there is one) split by sample kind: ``present`` (the answer has
    boxes) and ``rejection`` (nothing matches), as ``<prefix>/<name>@<kind>``. Rejection rows are easy to score on by
    refusing everything, so the split shows whether the policy learns to ground or to refuse."""
    from rewards.parsing import parse_ground_truth

    kinds = {}
    for result in results:
        prompt = prompts[result.prompt_index]
        if result.prompt_index not in kinds:
            kinds[result.prompt_index] = (
                "rejection" if parse_ground_truth(prompt.ground_truth).kind == "rejection" else "present"
            )
    sums: dict[str, list[float]] = {}
    for result, score in zip(results, scores, strict=True):
        kind = kinds[result.prompt_index]
        for name in ("overall", "accuracy"):
            if name in score:
                sums.setdefault(f"{prefix}/{name}@{kind}", []).append(float(score[name]))
    return {key: sum(values) / len(values) for key, values in sums.items()}


def _length_metrics(results: list[RolloutResult]) -> dict[str, float]:
    lengths = torch.tensor([len(r.response_ids) for r in results], dtype=torch.float32)
    clipped = sum(r.finish_reason == "length" for r in results) / max(1, len(results))
    return {
        "response_length/mean": lengths.mean().item(),
        "response_length/max": lengths.max().item(),
        "response_length/clip_ratio": clipped,
        "throughput/generated_tokens": lengths.sum().item(),
    }


def summarize(history: list[dict[str, float]], val_rewards: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Validation reward before training (step 0) and at the end, and the training-reward trend: summary.json.

    With the per-prompt validation rewards (``{step: [reward per prompt]}``), the gain also gets its paired standard
    error over prompts, ``std(after - before) / sqrt(n)``: how much the gain would move on another draw of prompts.
    """
    val = [(h["step"], h["val/reward"]) for h in history if "val/reward" in h and math.isfinite(h["val/reward"])]
    train = [h["reward/overall"] for h in history if "reward/overall" in h]
    quarter = max(1, len(train) // 4)
    before = next((reward for step, reward in val if step == 0), float("nan"))
    last = val[-1][1] if val else float("nan")
    summary = {
        "steps": sum(1 for h in history if "reward/overall" in h),
        "val_reward_before": before,
        "val_reward_last": last,
        "val_reward_gain": last - before,
        "train_reward_first_quarter": sum(train[:quarter]) / quarter if train else float("nan"),
        "train_reward_last_quarter": sum(train[-quarter:]) / quarter if train else float("nan"),
    }
    first, final = (val_rewards or {}).get("0"), (val_rewards or {}).get(str(val[-1][0])) if val else None
    if first and final and len(first) == len(final) and len(first) > 1 and val[-1][0] != 0:
        diffs = [b - a for a, b in zip(first, final, strict=True)]
        mean = sum(diffs) / len(diffs)
        std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
        summary["val_prompts"] = len(diffs)
        summary["val_reward_gain_se"] = std / math.sqrt(len(diffs))
        summary["val_prompts_improved"] = sum(d > 0 for d in diffs)
        summary["val_prompts_worse"] = sum(d < 0 for d in diffs)
    return summary


def describe_summary(summary: dict[str, float]) -> str:
    """The end-of-run lines: validation reward before -> after (with its paired noise) and the training-reward trend."""
    lines = []
    if math.isfinite(summary.get("val_reward_gain", float("nan"))):
        line = (
            f"validation reward (greedy): before {summary['val_reward_before']:.3f} -> after "
            f"{summary['val_reward_last']:.3f}, gain {summary['val_reward_gain']:+.3f}"
        )
        if "val_reward_gain_se" in summary:
            se = summary["val_reward_gain_se"]
            ratio = f", {summary['val_reward_gain'] / se:.1f} SE" if se > 0 else ""
            line += (
                f" (paired standard error over {summary['val_prompts']} prompts {se:.3f}{ratio}; "
                f"{summary['val_prompts_improved']} prompts better, {summary['val_prompts_worse']} worse)"
            )
        lines.append(line)
    if math.isfinite(summary.get("train_reward_first_quarter", float("nan"))):
        lines.append(
            f"training reward (sampled): first quarter of steps {summary['train_reward_first_quarter']:.3f} -> "
            f"last quarter {summary['train_reward_last_quarter']:.3f}"
        )
    return "\n".join(lines)
