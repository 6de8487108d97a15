"""The trainable policy: log-probabilities of response tokens and the GRPO update, composed with a training backend.

This is the math every actor process runs; it knows nothing about Ray. What differs between one process and a rank of
a sharded group (where weights load, how the model is wrapped, backward, the optimizer step, reductions over ranks,
gathering full weights) is the :class:`rexthinker_rl.train.backends.TrainBackend` it is built with; the update loop, the
loss (``algorithms.grpo_loss``), the non-finite guard, the LoRA views and the checkpoint state are written once, here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from rexthinker_rl.algo import algorithms
from rexthinker_rl.algo.batch import MiniBatch, SequenceBatch
from rexthinker_rl.algo.rollout_correction import ROLLOUT_METRICS, RolloutCorrection
from rexthinker_rl.model.loading import load_model, model_skeleton, vision_tower
from rexthinker_rl.model.logprobs import response_logprobs
from rexthinker_rl.model.lora import apply_lora, merge_lora_weights
from rexthinker_rl.train.backends import TorchBackend, TrainBackend, make_backend
from rexthinker_rl.utils import rng_state, set_rng_state

if TYPE_CHECKING:
    from rexthinker_rl.config import Config

# actor.optimizer_impl -> torch.optim.AdamW's keyword: the same update to float rounding, different passes over memory
ADAMW_KERNELS = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}


class NonFiniteUpdateError(RuntimeError):
    """Too many consecutive updates with a NaN/inf loss or gradient."""


def lr_lambda(warmup_steps: int, total_steps: int, schedule: str):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine" and total_steps > warmup_steps:
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def loss_spec(config: Config) -> algorithms.LossSpec:
    """The loss the config asks for (the KL term only with ``algorithm.kl_mode=loss``)."""
    actor, algo = config.actor, config.algorithm
    clip = algorithms.Clip(actor.clip_ratio_low, actor.clip_ratio_high, actor.clip_ratio_dual)
    kl_coef = algo.kl_coef if algo.kl_mode == "loss" else 0.0
    correction = RolloutCorrection(config.derived.rollout_is, algo.rollout_is_cap)
    return algorithms.LossSpec(
        actor.policy_loss, clip, actor.loss_agg_mode, actor.entropy_coef, algo.kl_estimator, kl_coef, correction
    )


class Policy:
    """A Qwen2.5-VL policy with its optimizer (trainable) or frozen (reference), on ``backend``."""

    def __init__(
        self,
        config: Config,
        model_path: str,
        trainable: bool,
        total_updates: int = 1,
        backend: TrainBackend | None = None,
    ) -> None:
        self.config, self.model_path, self.trainable = config, model_path, trainable
        self.backend = backend or TorchBackend(config)
        self.rank, self.world_size, self.device = self.backend.rank, self.backend.world_size, self.backend.device
        self.loss = loss_spec(config)
        torch.manual_seed(config.trainer.seed)
        model = load_model(
            model_path,
            self.backend.load_dtype,
            config.model.attn_implementation,
            self.backend.load_device,
            config.model.trust_remote_code,
        )
        self.lora = trainable and config.model.lora.rank > 0
        self.optimizer = self.scheduler = None
        self.nonfinite_streak = 0
        if not trainable:
            model.requires_grad_(False)
            self.model = self.backend.wrap(model, trainable=False)
            return
        if config.model.freeze_vision_tower and vision_tower(model) is not None:
            vision_tower(model).requires_grad_(False)
        if self.lora:
            model = apply_lora(model, config.model.lora)  # freezes all but the adapters
        if config.model.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.backend.wrap(model, trainable=True)
        actor = config.actor
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=actor.lr,
            betas=tuple(actor.betas),
            weight_decay=actor.weight_decay,
            **ADAMW_KERNELS[actor.optimizer_impl],
        )
        schedule = lr_lambda(int(actor.lr_warmup_ratio * total_updates), total_updates, actor.lr_scheduler)
        self.model, self.optimizer, self.scheduler = self.backend.attach_optimizer(optimizer, schedule)

    # ------------------------------------------------------------------ micro-batches and forward
    def _micro_batches(self, batch: SequenceBatch, size: int) -> list[tuple[list[int], SequenceBatch]]:
        """Micro-batches of ``batch`` (by rows, or by ``actor.max_tokens_per_micro_batch``), as many on every rank."""
        actor = self.config.actor
        budget, packed = actor.max_tokens_per_micro_batch, actor.padding_free
        needed = batch.micro_batch_count(size, budget, packed)
        agreed = int(self.backend.all_reduce([needed], "max")[0])
        return batch.micro_batches(size, budget, agreed, packed)

    def _response_logprobs(
        self, micro: SequenceBatch, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        temperature = self.config.rollout.temperature or 1.0
        # Without an entropy bonus the entropy is only logged: no backward pass through the vocabulary softmax.
        entropy_grad = self.config.actor.entropy_coef != 0
        # Every backend's module goes through logprobs.response_logprobs: the LM head runs in chunks inside the model's
        # forward, so FSDP2's and ZeRO-3's gather hooks fire as for the usual logits.
        actor = self.config.actor
        return response_logprobs(
            self.model, micro, temperature, with_entropy, entropy_grad, actor.logprob_chunk_tokens, actor.padding_free
        )

    @torch.no_grad()
    def compute_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        """(batch, R) log-probabilities in micro-batches of micro_batch_size_per_device_for_experience, no grad."""
        self.model.eval()
        size = self.config.actor.micro_batch_size_per_device_for_experience
        out = torch.zeros(len(batch), batch.response_length)
        for rows, chunk in self._micro_batches(batch, size):
            logprobs = self._response_logprobs(chunk.to_device(self.device))[0].cpu()
            if rows:
                out[rows, : logprobs.shape[1]] = logprobs
        return out

    @torch.no_grad()
    def compute_ref_logprobs(self, batch: SequenceBatch) -> torch.Tensor:
        """The reference policy's log-probs under LoRA: this model with its adapters switched off."""
        if not self.lora:
            raise RuntimeError("compute_ref_logprobs needs LoRA; without it the reference is a separate policy")
        with self.model.disable_adapter():
            return self.compute_logprobs(batch)

    # ------------------------------------------------------------------ the update
    def update(self, mini_batches: list[MiniBatch]) -> dict[str, float]:
        """One optimizer step per mini-batch (``actor.ppo_epochs`` passes): this rank's part of each, as
        ``batch.split_mini_batches`` plans them for every rank (the rows need old_logprobs, advantages, and
        ref_logprobs for the KL loss), so all ranks step together. The one update path: the runtime's ranks, the
        tests and the benchmarks all come here."""
        self.model.train()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        metrics: dict[str, list[float]] = defaultdict(list)
        for _ in range(self.config.actor.ppo_epochs):
            for mini_batch in mini_batches:
                for key, value in self._update_mini_batch(mini_batch).items():
                    metrics[key].append(value)
        averaged = {key: sum(values) / len(values) for key, values in metrics.items()}
        if self.device == "cuda":  # this rank's peak during the update, and the whole device's use after it
            free, total = torch.cuda.mem_get_info()
            averaged["perf/max_memory_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
            averaged["perf/device_memory_used_gb"] = (total - free) / 2**30
        return averaged

    def _update_mini_batch(self, mini_batch: MiniBatch) -> dict[str, float]:
        # The normalisers are the whole mini-batch's, over every rank: the token-mean of one process, however split.
        norms = mini_batch.norms
        self.optimizer.zero_grad(set_to_none=True)
        stats: dict[str, float] = defaultdict(float)
        peaks: dict[str, float] = defaultdict(float)  # maxima over micro-batches and ranks
        for micro in mini_batch.micro_batches:
            micro = micro.to_device(self.device)
            share = 0.0 if micro.is_placeholder else len(micro) / mini_batch.rows
            logprobs, entropy = self._response_logprobs(micro, with_entropy=True)
            loss = algorithms.grpo_loss(
                self.loss, logprobs, micro.old_logprobs, micro.advantages, micro.response_mask, norms, entropy,
                micro.ref_logprobs, micro.rollout_logprobs,
            )  # fmt: skip
            stats["actor/pg_loss"] += loss.policy.item()
            stats["actor/entropy"] += loss.entropy.item()
            if loss.kl is not None:
                stats["actor/kl_loss"] += loss.kl.item()
            for key, value in loss.metrics.items():
                if key == "logprob_diff_max":
                    peaks[f"rollout/{key}"] = max(peaks[f"rollout/{key}"], value)
                else:
                    stats[f"rollout/{key}" if key in ROLLOUT_METRICS else f"actor/{key}"] += value * share
            self.backend.backward(loss.total)
        # Each rank holds its part of every sum (losses over global counts, metrics weighted by global rows).
        names = sorted(stats)
        stats = dict(zip(names, self.backend.all_reduce([stats[name] for name in names], "sum"), strict=True))
        names = sorted(peaks)
        stats |= dict(zip(names, self.backend.all_reduce([peaks[name] for name in names], "max"), strict=True))
        stats.update(self._step())
        return stats

    def _step(self) -> dict[str, float]:
        """The backend's guarded step, and the same bookkeeping on every backend: a non-finite gradient norm means the
        step was skipped (weights and optimizer moments untouched); too many in a row abort the run."""
        grad_norm = self.backend.step(self.config.actor.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        if math.isfinite(grad_norm):
            self.nonfinite_streak = 0
            return {"actor/grad_norm": grad_norm, "actor/skipped_updates": 0.0, "actor/lr": lr}
        self.nonfinite_streak += 1
        if self.nonfinite_streak >= self.config.actor.max_consecutive_nonfinite:
            raise NonFiniteUpdateError(
                f"{self.nonfinite_streak} consecutive updates had a non-finite gradient norm; aborting "
                "(lower actor.lr, check the reward scale, or raise actor.max_consecutive_nonfinite)"
            )
        return {"actor/grad_norm": float("nan"), "actor/skipped_updates": 1.0, "actor/lr": lr}

    # ------------------------------------------------------------------ weights (collective when sharded)
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Hugging Face-named weights on CPU (what the rollout engine loads), LoRA adapters merged in: on rank 0 of a
        sharded group, {} on the others."""
        full = self.backend.full_state_dict()
        return merge_lora_weights(full, self.config.model.lora) if self.lora and full else full

    def stream_weights(self, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        """The merged Hugging Face-named weights in ``dtype``, one tensor at a time, on every rank: what an engine in
        this process loads (colocated). Under LoRA merged weights need the adapters beside their base: the whole dict
        is gathered once, and only the adapted weights are loaded (as ``sync_state_dict``)."""
        if not self.lora:
            yield from self.backend.full_tensors(dtype)
            return
        full = dict(self.backend.full_tensors(dtype))
        yield from merge_lora_weights(full, self.config.model.lora, adapted_only=True).items()

    def sync_state_dict(self) -> dict[str, torch.Tensor]:
        """What the rollout engine loads after an update: ``state_dict()``, except that under LoRA only the adapted
        weights are sent (merged), the only ones training changes: a 7B model's frozen embedding, head and vision
        tower are not re-sent every step (the engine loaded them from the same model folder). Rank 0 only."""
        if not self.lora:
            return self.state_dict()
        full = self.backend.full_state_dict()
        return merge_lora_weights(full, self.config.model.lora, adapted_only=True) if full else full

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: the weights as trained (base + separate adapters under LoRA); rank 0 only."""
        return self.backend.full_state_dict()

    def hf_model(self):
        """A plain Hugging Face model holding the current (merged) weights, for save_pretrained; None off rank 0."""
        if isinstance(self.backend, TorchBackend) and not self.lora:
            return self.model
        weights = self.state_dict()
        if self.rank != 0:
            return None
        config = self.config.model
        model = model_skeleton(self.model_path, config.dtype, config.trust_remote_code)
        model.load_state_dict(weights, assign=True)  # the merged tensors themselves: no second copy of the model
        model.tie_weights()
        return model

    def train_state(self) -> dict[str, Any]:
        """Optimizer (this rank's view), scheduler, the non-finite streak and this process's RNG states: all an exact
        resume needs (the ranks' states are combined by ``backends.combine_train_states``)."""
        return {
            "optimizer": self.backend.optimizer_state(),
            "scheduler": self.scheduler.state_dict(),
            "nonfinite_streak": self.nonfinite_streak,
            "rng": rng_state(),
            "world_size": self.world_size,
        }

    def load(self, weights: dict[str, torch.Tensor], train_state: dict[str, Any] | None = None) -> None:
        self.backend.load_full_state_dict(weights)
        if not train_state or self.optimizer is None:
            return
        self.backend.load_optimizer_state(train_state["optimizer"])
        self.scheduler.load_state_dict(train_state["scheduler"])
        self.nonfinite_streak = int(train_state.get("nonfinite_streak", 0))
        if "rank_rng" in train_state:  # the ranks' own states, when the run has as many ranks as the checkpoint
            if len(train_state["rank_rng"]) == self.world_size:
                set_rng_state(train_state["rank_rng"][self.rank])
        elif "rng" in train_state:
            set_rng_state(train_state["rng"])


def make_policy(
    config: Config, model_path: str, trainable: bool, total_updates: int = 1, rank: int = 0, world_size: int = 1
) -> Policy:
    """The policy for ``actor.strategy``: one process (torch), or this rank's shard (fsdp2 | deepspeed; the process
    group must be joined)."""
    return Policy(config, model_path, trainable, total_updates, make_backend(config, rank, world_size))
