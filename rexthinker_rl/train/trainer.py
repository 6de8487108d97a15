"""The single controller: ``GRPOTrainer.fit()`` reads as the algorithm, one timer per phase.

generate -> reward (off the critical path) -> old/ref log-probs -> advantages -> update -> sync -> log
-> validate / checkpoint. With ``trainer.pipeline=one_step_off`` the next step's generation is launched before the
update and waited for before the sync (``rexthinker_rl.train.pipeline``): the engines sample while the actor trains.

Where the work runs (processes, ranks, engines) is the runtime's business (``rexthinker_rl.runtime``): the trainer
only calls its verbs. Plots (``plots``), the run summary (``run_summary``) and rollout logs (``rollout_log``) live in
small modules beside it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import ray
import torch

from rexthinker_rl.algo import algorithms
from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts
from rexthinker_rl.algo.masking import masked_mean
from rexthinker_rl.config import Config, save_config, to_yaml
from rexthinker_rl.data.dataset import ResumableSampler, RLDataset
from rexthinker_rl.data.position import check_data_position, data_settings
from rexthinker_rl.model.easyr1_checkpoint import actor_folder, model_for_run
from rexthinker_rl.model.loading import load_processor, stored_parameter_count
from rexthinker_rl.rollout.base import SEED_MODES, RolloutPrompt, RolloutResult, SamplingSpec, prompt_seeds
from rexthinker_rl.run.lock import RunLock
from rexthinker_rl.run.logging import MetricsLogger, truncate_metrics
from rexthinker_rl.run.plots import redraw_curves
from rexthinker_rl.run.rollout_log import group_metrics, length_metrics, log_rollouts, metrics_by_kind
from rexthinker_rl.run.summary import summarize
from rexthinker_rl.runtime.base import ActorState, Generated, Pending, Runtime
from rexthinker_rl.runtime.deaths import names_dead_workers
from rexthinker_rl.runtime.ray_cluster import StartedRay, ensure_auth_token, start_cluster, stop_cluster
from rexthinker_rl.runtime.topology import check_topology, start_runtime
from rexthinker_rl.train.checkpoint import (
    check_compatible,
    check_run_folder,
    list_checkpoints,
    load_checkpoint,
    model_signature,
    resolve_resume,
    save_checkpoint,
)
from rexthinker_rl.train.pipeline import Pipeline, step_timings, throughput
from rexthinker_rl.train.rewarding import RewardRunner, probe_inputs, reward_inputs
from rexthinker_rl.utils import PhaseTimer, atomic_write_text, rng_state, seed_everything, set_rng_state


class GRPOTrainer:
    def __init__(self, config: Config) -> None:
        self.config = config
        seed_everything(config.trainer.seed)
        self.run_dir = Path(config.trainer.output_dir)
        check_run_folder(self.run_dir, config.trainer.resume)  # nothing of an earlier run or a user's is overwritten
        # Everything cheap that can be wrong is checked before any worker starts: topology, Ray's token, model folder,
        # data, reward function, the checkpoint to resume from and the data settings its position depends on.
        check_topology(config)
        if not ray.is_initialized():
            ensure_auth_token()
        self.lock = RunLock.acquire(self.run_dir)  # one live run per folder, until shutdown()
        try:
            self._prepare()
        except BaseException:
            self.lock.release(started=False)
            raise
        self.timer = PhaseTimer()
        self.runtime: Runtime | None = None
        self.started_ray: StartedRay | None = None
        self.step = 0  # the step in progress (0: start-up and the validation before training), for error messages
        # The batch in flight and the weight versions (one_step_off: the next batch is generated during this step).
        self.pipeline = Pipeline(self._launch, config.derived.pipelined, self.total_steps)
        self.history: list[dict[str, float]] = []
        # Greedy validation reward of every prompt, by step ("0" = before training): the paired gain and its noise.
        self.val_rewards: dict[str, list[float]] = {}
        save_config(config, self.run_dir / "config.yaml")

    def _prepare(self) -> None:
        """The model folder (an EasyR1 checkpoint converted into the run folder), the processor, the data sets, the
        reward and the checkpoint to resume from, all checked; the step count."""
        config, model, data = self.config, self.config.model, self.config.data
        if actor_folder(model.path) is not None and not (self.run_dir / "config.yaml").is_file():
            save_config(config, self.run_dir / "config.yaml")  # a run folder from now on, whatever fails next
        # model.path, or its conversion (under the lock)
        self.model_path = model_for_run(model.path, self.run_dir, model.trust_remote_code)
        self.processor = load_processor(
            model.tokenizer_path or self.model_path, data.min_pixels, data.max_pixels, model.trust_remote_code
        )
        self.train_set = RLDataset(data.train_files, self.processor, data)
        self.val_set = (
            RLDataset(data.val_files, self.processor, data, max_samples=data.val_max_samples)
            if data.val_files
            else None
        )
        self.rewards = RewardRunner(config.reward)
        self.rewards.check(probe_inputs(self.train_set))
        self.signature = model_signature(self.model_path, len(self.processor.tokenizer), model.lora)
        self.sampler = ResumableSampler(
            len(self.train_set), data.rollout_batch_size, data.shuffle, data.seed, order=data.order
        )
        if self.sampler.batches_per_epoch == 0:
            raise ValueError(
                f"data.train_files={data.train_files} has {len(self.train_set)} usable rows, fewer than "
                f"data.rollout_batch_size={data.rollout_batch_size}"
            )
        self.data_settings = data_settings(self.train_set, data)
        key = f"trainer.resume={config.trainer.resume}"
        self.resume_from = resolve_resume(config.trainer.resume, self.run_dir / "checkpoints")
        if self.resume_from is not None:
            check_compatible(self.resume_from, self.signature, key)
            check_data_position(self.resume_from, self.data_settings, self.sampler.batches_per_epoch, key)
        steps = config.trainer.total_epochs * self.sampler.batches_per_epoch
        self.total_steps = config.trainer.total_steps if config.trainer.total_steps > 0 else steps

    # ------------------------------------------------------------------ the algorithm
    @names_dead_workers
    def fit(self) -> dict[str, float]:
        self.start()
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
                    redraw_curves(self.run_dir)
            summary = self._finish()
            redraw_curves(self.run_dir)
        finally:
            logger.close()
        return summary

    def train_step(self, step: int) -> dict[str, float]:
        """One GRPO step on the pipeline's next batch (one_step_off: launched during the step before)."""
        runtime, timer, derived = self.runtime, self.timer, self.config.derived
        step_start = time.perf_counter()
        with timer("generate"):
            rollout, staleness = self.pipeline.next(step)
            prompts = [self.train_set[i] for i in rollout.indices]
            results = rollout.generated.results
        self.pipeline.prefetch(step)  # one step off: step + 1's batch is sampled while the actor trains
        with timer("reward_launch"):
            scores_ref = self.rewards.score_async(reward_inputs(prompts, results))  # runs during the log-probs
        with timer("prepare"):
            batch = self._sequence_batch(prompts, results)
        with timer("logprobs"):
            # On-policy (one update per step): the old policy IS the current one, so the update uses its own
            # detached log-probs as old_logprobs (ratio exactly 1) and a whole forward pass is saved.
            old = None if derived.on_policy else runtime.logprobs(batch)
            ref = runtime.ref_logprobs(batch) if self._wants_reference(step) else None
            batch.old_logprobs = old.result() if old is not None else None
            batch.ref_logprobs = ref.result() if ref is not None else None
        with timer("reward_wait"):
            scores, reward_metrics, raw_scores = self.rewards.collect(scores_ref, f"step {step}'s batch")
            reward_metrics.update(metrics_by_kind(prompts, results, raw_scores, "reward"))
            reward_metrics.update(group_metrics(prompts, results, raw_scores))
            logged = self.config.logging.log_rollouts
            log_rollouts(self.run_dir / "rollouts.jsonl", step, prompts, results, raw_scores, logged)
        with timer("advantages"):
            adv_metrics = self._kl_to_ref(batch)
            batch, filtered = self._advantages(batch, scores, results)
            adv_metrics |= filtered
        with timer("update"):
            update_metrics = runtime.update(batch) if batch is not None else {}
            self.pipeline.updated(batch is not None)
        with timer("rollout_wait"):
            upcoming = self.pipeline.wait_upcoming()
        with timer("sync"):
            self.pipeline.sync(runtime.sync_weights)
        step_seconds = time.perf_counter() - step_start
        timings = step_timings(timer.pop(), step_seconds, derived.pipelined, rollout, upcoming, staleness)
        lengths = length_metrics(results)
        lengths |= throughput(lengths["throughput/generated_tokens"], timings)
        return {**reward_metrics, **adv_metrics, **update_metrics, **lengths, **timings}

    def _wants_reference(self, step: int) -> bool:
        """The reference's log-probs this step: every step for a KL term, every logging.kl_to_ref_freq steps for the
        KL curve alone."""
        derived = self.config.derived
        return derived.kl_term or (derived.uses_reference and self._due(step, self.config.logging.kl_to_ref_freq))

    def _kl_to_ref(self, batch) -> dict[str, float]:
        """``rollout/kl_to_ref``: the sampler's KL to the reference (the starting weights) over this batch's response
        tokens, with algorithm.kl_estimator; the sampler's log-probs, else the actor's."""
        own = batch.rollout_logprobs if batch.rollout_logprobs is not None else batch.old_logprobs
        if batch.ref_logprobs is None or own is None:
            return {}
        kl = algorithms.kl_penalty(self.config.algorithm.kl_estimator, own, batch.ref_logprobs)
        return {"rollout/kl_to_ref": masked_mean(kl, batch.response_mask).item()}

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
        keep = algorithms.informative_rows(scores, uids)
        metrics["filter/kept_fraction"] = len(keep) / len(uids)
        return (batch.select(keep) if keep else None), metrics

    def validate(self) -> dict[str, float]:
        """One response per validation prompt (greedy unless rollout.val_temperature > 0); mean reward and its
        components. Prompts go to the engines data.val_batch_size at a time, so only that many images are decoded at
        once (the paper config validates on its 20,000 training rows)."""
        with self.timer("validate"):
            sampling, batch = validation_sampling(self.config), self.config.data.val_batch_size
            prompts, results = [], []
            for start in range(0, len(self.val_set), batch):
                chunk = [self.val_set[i] for i in range(start, min(start + batch, len(self.val_set)))]
                for result in self._generate(chunk, sampling):
                    result.prompt_index += start
                    results.append(result)
                prompts += [replace(prompt, image=None) for prompt in chunk]  # what scoring needs, not the pixels
            inputs, named = reward_inputs(prompts, results), f"the validation at step {self.step}"
            rewards, metrics, raw_scores = self.rewards.collect(self.rewards.score_async(inputs), named)
            metrics.update(metrics_by_kind(prompts, results, raw_scores, "reward"))
            self.val_rewards[str(self.step)] = rewards.tolist()
        # reward/overall -> val/reward, reward/<component> -> val/<component>
        return {"val/" + key.removeprefix("reward/").replace("overall", "reward"): v for key, v in metrics.items()}

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> Path:
        actor = self.runtime.save(with_optimizer=self.config.checkpoint.save_optimizer)
        state = {
            "step": step,
            "sampler": self.sampler.state_dict(),
            "data": self.data_settings,  # what the sampler's position means (data_position)
            "history": self.history,
            "val_rewards": self.val_rewards,
            **self.pipeline.state_dict(),  # the weight version; one_step_off: the next batch, already generated
        }
        return save_checkpoint(
            self.run_dir / "checkpoints",
            step,
            actor.weights,
            actor.train_state,
            state,
            to_yaml(self.config),
            self.config.checkpoint.save_limit,
            rng_state(),
            self.signature,
        )

    def _resume(self) -> int:
        """Restore actor, rollout weights, data position and history from a checkpoint; the step to continue after."""
        folder = self.resume_from  # found, verified and checked against the model before Ray started
        if folder is None:
            truncate_metrics(self.run_dir / "metrics.jsonl", keep_through=-1)
            return 0
        ckpt = load_checkpoint(folder, verified=True)
        self.runtime.load(ActorState(ckpt.weights, ckpt.train_state))
        self.sampler.load_state_dict(ckpt.trainer_state["sampler"])
        self.history = ckpt.trainer_state["history"]
        self.val_rewards = ckpt.trainer_state.get("val_rewards", {})
        self.pipeline.load(ckpt.trainer_state, ckpt.step)  # the runtime synced the engines at load
        if ckpt.rng_state is not None:
            set_rng_state(ckpt.rng_state)
        # Steps logged after this checkpoint (before a crash) will be run again: drop them so nothing is doubled.
        truncate_metrics(self.run_dir / "metrics.jsonl", keep_through=ckpt.step)
        print(f"resumed from {folder} (step {ckpt.step})", flush=True)
        return ckpt.step

    def how_to_resume(self) -> str:
        """The rerun that continues this run, and from where."""
        checkpoints = list_checkpoints(self.run_dir / "checkpoints")
        since = f"from {checkpoints[0]}" if checkpoints else "from the start (no checkpoint yet)"
        return f"rerun the same command with trainer.resume=auto to continue {since}"

    # ------------------------------------------------------------------ helpers
    def _generate(self, prompts, sampling: SamplingSpec) -> list[RolloutResult]:
        return self.runtime.generate([RolloutPrompt(p.prompt_text, p.image) for p in prompts], sampling)

    def _launch(self, step: int) -> tuple[list[int], Pending[Generated]]:
        """Start generating step ``step``'s batch (the sampler's next prompts) with the weights the engines hold."""
        indices = self.sampler.next_batch()
        requests, sampling = training_requests(self.config, [self.train_set[i] for i in indices], step)
        return indices, self.runtime.generate_async(requests, sampling)

    def _sequence_batch(self, prompts, results: list[RolloutResult]):
        encoded = encode_prompts(self.processor, [p.prompt_text for p in prompts], [p.image for p in prompts])
        return build_sequence_batch(
            encoded,
            [r.prompt_index for r in results],
            [r.response_ids for r in results],
            self.processor.tokenizer.pad_token_id,
            [r.logprobs for r in results],
        )

    def _due(self, step: int, freq: int) -> bool:
        return is_due(step, self.total_steps, freq)

    def start(self) -> None:
        """Ray (unless already running in this process) and the workers of the configured topology."""
        # A sync sends at most every weight in float32 (4 bytes); the object store holds one such copy.
        weight_bytes = 4 * stored_parameter_count(self.model_path)
        self.started_ray = start_cluster(self.config.trainer.ray_address, weight_bytes)
        updates = self.total_steps * self.config.derived.updates_per_step
        self.runtime = start_runtime(self.config, self.model_path, updates)

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
        self.runtime.save_pretrained(str(self.run_dir / "final"), self.processor)
        summary = summarize(self.history, self.val_rewards)
        atomic_write_text(self.run_dir / "val_rewards.json", json.dumps(self.val_rewards))
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        return summary

    def shutdown(self) -> None:
        """Stop the workers, and Ray when this trainer started or joined it. Then stopping Ray ends this driver's job
        and with it every worker and placement group at once, with no call per worker. When Ray was already running in
        this process (a notebook, a test), the workers and their placement groups are freed one by one and Ray is left
        running."""
        if self.runtime is not None:
            if self.started_ray is None:
                self.runtime.shutdown()
            self.runtime = None
        if self.started_ray is not None:
            stop_cluster(self.started_ray)
            self.started_ray = None
        self.lock.release()


def training_sampling(config: Config, step: int) -> SamplingSpec:
    """How step ``step`` samples: rollout.n responses a prompt, its seed as rollout.seed_mode says."""
    rollout = config.rollout
    return SamplingSpec(
        n=rollout.n,
        temperature=rollout.temperature,
        top_p=rollout.top_p,
        top_k=rollout.top_k,
        max_tokens=config.data.max_response_length,
        seed=SEED_MODES[rollout.seed_mode].step_seed(rollout.seed, step),
    )


def training_requests(config: Config, samples, step: int) -> tuple[list[RolloutPrompt], SamplingSpec]:
    """Step ``step``'s requests for ``samples`` (dataset items) and how they sample: under rollout.seed_mode=ours
    each prompt draws from a seed of its own (``prompt_seeds``)."""
    sampling = training_sampling(config, step)
    seeds = prompt_seeds(config.rollout.seed_mode, sampling.seed, len(samples))
    requests = [RolloutPrompt(s.prompt_text, s.image, seed) for s, seed in zip(samples, seeds, strict=True)]
    return requests, sampling


def validation_sampling(config: Config) -> SamplingSpec:
    """How validation samples: one response a prompt at rollout.val_temperature and val_top_p (EasyR1 overrides only
    temperature and n for validation, so its top-p and seed stay the training ones)."""
    rollout = config.rollout
    return SamplingSpec(
        n=1,
        temperature=rollout.val_temperature,
        top_p=rollout.val_top_p,
        max_tokens=config.data.max_response_length,
        seed=SEED_MODES[rollout.seed_mode].step_seed(rollout.seed, None),
    )


def is_due(step: int, total_steps: int, freq: int) -> bool:
    """Whether something done every ``freq`` steps (-1 or 0: never) happens after ``step``; the last step always
    (EasyR1 validates after training, once more, unless the last step already did)."""
    return step == total_steps or (freq > 0 and step % freq == 0)
