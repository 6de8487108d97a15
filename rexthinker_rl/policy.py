"""The trainable policy: log-probabilities of response tokens and the GRPO update, on one device.

This is the math the actor worker runs; it knows nothing about Ray. ``actor.strategy=torch`` uses it as is; the sharded
backends (``rexthinker_rl.sharded``: FSDP2, DeepSpeed) subclass it and override the few hooks that differ between one
process and a data-parallel group: sharding the model, summing counts over ranks, backward, the optimizer step and
gathering full weights.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch

from rexthinker_rl import algorithms
from rexthinker_rl.batch import SequenceBatch, token_budget_groups
from rexthinker_rl.config import Config
from rexthinker_rl.logprobs import DEFAULT_CHUNK_TOKENS, HeadRequest, model_logprobs
from rexthinker_rl.modeling import load_model
from rexthinker_rl.utils import rng_state, set_rng_state


class NonFiniteUpdateError(RuntimeError):
    """Too many consecutive updates with a NaN/inf loss or gradient."""


def _vision_tower(model):
    inner = getattr(model, "model", model)
    return getattr(inner, "visual", None) or getattr(model, "visual", None)


def response_logprobs(
    model,
    batch: SequenceBatch,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities (batch, R) of the response tokens under ``model``, and optionally their entropy (batch, R),
    differentiable unless ``entropy_grad`` is False (then a metric only). The LM head runs ``chunk_tokens`` tokens at
    a time (``rexthinker_rl.logprobs``): no (batch, R, vocab) logits are ever held."""
    prompt, response = batch.prompt_length, batch.response_length
    # The response tokens are predicted from positions [P-1, P+R-1).
    positions = torch.arange(prompt - 1, prompt + response - 1, device=batch.input_ids.device)
    request = HeadRequest(batch.input_ids[:, prompt:], temperature, chunk_tokens, with_entropy, entropy_grad)
    return model_logprobs(model, batch.model_inputs(), positions, request)


def lr_lambda(warmup_steps: int, total_steps: int, schedule: str):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "cosine" and total_steps > warmup_steps:
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


class Policy:
    """A Qwen2.5-VL policy with its optimizer (trainable) or frozen (reference)."""

    rank = 0
    world_size = 1

    def __init__(self, config: Config, model_path: str, trainable: bool, total_updates: int = 1) -> None:
        self.config = config
        self.model_path = model_path
        self.device = self._device()
        torch.manual_seed(config.trainer.seed)
        self.model = load_model(
            model_path,
            self._load_dtype(),
            config.model.attn_implementation,
            self._load_device(),
            config.model.trust_remote_code,
        )
        self.trainable = trainable
        self.lora = False
        self.optimizer = self.scheduler = None
        self.nonfinite_streak = 0
        if not trainable:
            self.model.requires_grad_(False)
            self._shard()
            return
        if config.model.freeze_vision_tower and _vision_tower(self.model) is not None:
            _vision_tower(self.model).requires_grad_(False)
        self.lora = config.model.lora.rank > 0
        if self.lora:
            from rexthinker_rl.lora import apply_lora

            self.model = apply_lora(self.model, config.model.lora)  # freezes all but the adapters
        if config.model.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._shard()
        self._build_optimizer(total_updates)

    # ------------------------------------------------------------------ hooks the sharded backends override
    def _device(self) -> str:
        return "cuda" if self.config.trainer.device != "cpu" and torch.cuda.is_available() else "cpu"

    def _load_dtype(self) -> str:
        return self.config.model.dtype

    def _load_device(self) -> str:
        return self.device

    def _shard(self) -> None:
        """Wrap the loaded model for the backend (nothing on one device)."""

    def _build_optimizer(self, total_updates: int) -> None:
        actor = self.config.actor
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=actor.lr, betas=tuple(actor.betas), weight_decay=actor.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda(total_updates))

    def _lr_lambda(self, total_updates: int):
        actor = self.config.actor
        return lr_lambda(int(actor.lr_warmup_ratio * total_updates), total_updates, actor.lr_scheduler)

    def _sum_over_ranks(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over data-parallel ranks (one process: unchanged)."""
        return values

    def _max_over_ranks(self, value: int) -> int:
        return value

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    # ------------------------------------------------------------------ micro-batches and forward
    def _micro_batches(self, batch: SequenceBatch, size: int) -> list[tuple[list[int], SequenceBatch]]:
        """Micro-batches of ``batch`` (by rows, or by ``actor.max_tokens_per_micro_batch``), as many on every rank."""
        actor = self.config.actor
        budget, packed = actor.max_tokens_per_micro_batch, actor.padding_free
        if batch.is_placeholder:
            needed = 1
        elif budget > 0:
            needed = len(token_budget_groups(batch.real_lengths(), budget, packed))
        else:
            needed = math.ceil(len(batch) / size)
        return batch.micro_batches(size, budget, self._max_over_ranks(needed), packed)

    def _response_logprobs(
        self, micro: SequenceBatch, with_entropy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        temperature = self.config.rollout.temperature or 1.0
        # Without an entropy bonus the entropy is only logged: no backward pass through the vocabulary softmax.
        entropy_grad = self.config.actor.entropy_coef != 0
        chunk = self.config.actor.logprob_chunk_tokens
        if self.config.actor.padding_free:
            from rexthinker_rl.packing import packed_response_logprobs

            return packed_response_logprobs(self.model, micro, temperature, with_entropy, entropy_grad, chunk)
        return response_logprobs(self.model, micro, temperature, with_entropy, entropy_grad, chunk)

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
            raise RuntimeError("compute_ref_logprobs needs LoRA; without it the reference is a separate worker")
        with self.model.disable_adapter():
            return self.compute_logprobs(batch)

    def update(self, batch: SequenceBatch) -> dict[str, float]:
        """One GRPO update pass over ``batch`` (needs old_logprobs, advantages; ref_logprobs for the KL loss)."""
        per_update = self.config.actor.global_batch_size * self.config.rollout.n
        return self.update_mini_batches(batch.chunks(per_update))

    def update_mini_batches(self, mini_batches: list[SequenceBatch]) -> dict[str, float]:
        """One optimizer step per mini-batch (``actor.ppo_epochs`` passes). Data-parallel ranks each get their share
        of every mini-batch (a placeholder where they have none), so all ranks step together."""
        actor, algo = self.config.actor, self.config.algorithm
        self.model.train()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        metrics: dict[str, list[float]] = defaultdict(list)
        for _ in range(actor.ppo_epochs):
            for mini_batch in mini_batches:
                for key, value in self._update_mini_batch(mini_batch, actor, algo).items():
                    metrics[key].append(value)
        averaged = {key: sum(values) / len(values) for key, values in metrics.items()}
        if self.device == "cuda":  # this rank's peak during the update, and the whole device's use after it
            free, total = torch.cuda.mem_get_info()
            averaged["perf/max_memory_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
            averaged["perf/device_memory_used_gb"] = (total - free) / 2**30
        return averaged

    def _update_mini_batch(self, mini_batch: SequenceBatch, actor, algo) -> dict[str, float]:
        # Normalisers of the whole mini-batch, over every rank: the token-mean of one process, however it is split.
        tokens, seqs = algorithms.count_tokens_and_seqs(mini_batch.response_mask)
        rows = 0 if mini_batch.is_placeholder else len(mini_batch)
        global_tokens, global_seqs, global_rows, ranks = self._sum_over_ranks([tokens, seqs, rows, 1])
        stats: dict[str, float] = defaultdict(float)
        use_kl_loss = algo.kl_mode == "loss" and algo.kl_coef > 0 and mini_batch.ref_logprobs is not None
        self.optimizer.zero_grad(set_to_none=True)
        micro_batches = self._micro_batches(mini_batch, actor.micro_batch_size_per_device_for_update)
        aggregate = {
            "mode": actor.loss_agg_mode,
            "global_tokens": global_tokens,
            "global_seqs": global_seqs,
            "norm_len": self.config.data.max_response_length,
            "micro_batches": len(micro_batches) * ranks,  # every rank runs as many
        }
        for _, micro in micro_batches:
            micro = micro.to_device(self.device)
            share = 0.0 if micro.is_placeholder else len(micro) / global_rows
            logprobs, entropy = self._response_logprobs(micro, with_entropy=True)
            mask = micro.response_mask
            old_logprobs = micro.old_logprobs if micro.old_logprobs is not None else logprobs.detach()
            pg_loss, pg_metrics = algorithms.compute_policy_loss(
                actor.policy_loss,
                logprobs,
                old_logprobs,
                micro.advantages,
                mask,
                clip_low=actor.clip_ratio_low,
                clip_high=actor.clip_ratio_high,
                clip_ratio_c=actor.clip_ratio_dual,
                loss_agg_mode=aggregate["mode"],
                global_tokens=global_tokens,
                global_seqs=global_seqs,
                norm_len=aggregate["norm_len"],
                micro_batches=aggregate["micro_batches"],
            )
            entropy_loss = algorithms.aggregate_loss(entropy, mask, **aggregate)
            loss = pg_loss - actor.entropy_coef * entropy_loss
            if use_kl_loss:
                kl = algorithms.kl_penalty(algo.kl_estimator, logprobs, micro.ref_logprobs)
                kl_loss = algorithms.aggregate_loss(kl, mask, **aggregate)
                loss = loss + algo.kl_coef * kl_loss
                stats["actor/kl_loss"] += kl_loss.item()
            self._backward(loss)
            stats["actor/pg_loss"] += pg_loss.item()
            stats["actor/entropy"] += entropy_loss.item()
            for key, value in pg_metrics.items():
                stats[f"actor/{key}"] += value * share
        # Each rank holds its part of every sum (losses over global counts, metrics weighted by global rows).
        names = sorted(stats)
        stats = dict(zip(names, self._sum_over_ranks([stats[name] for name in names]), strict=True))
        stats.update(self._step())
        return stats

    def _clip_grad_norm(self) -> torch.Tensor:
        """Clip the gradients in place; their total norm before clipping (a plain scalar tensor)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        return torch.nn.utils.clip_grad_norm_(params, self.config.actor.max_grad_norm)

    def _optimizer_step(self) -> None:
        self.optimizer.step()
        self.scheduler.step()

    def _step(self) -> dict[str, float]:
        grad_norm = self._clip_grad_norm()
        if not torch.isfinite(grad_norm):
            # A NaN/inf gradient would poison the weights and the optimizer moments: skip this step, count it.
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_streak += 1
            if self.nonfinite_streak >= self.config.actor.max_consecutive_nonfinite:
                raise NonFiniteUpdateError(
                    f"{self.nonfinite_streak} consecutive updates had a non-finite gradient norm; aborting "
                    "(lower actor.lr, check the reward scale, or raise actor.max_consecutive_nonfinite)"
                )
            return {"actor/grad_norm": float("nan"), "actor/skipped_updates": 1.0, "actor/lr": self._lr()}
        self.nonfinite_streak = 0
        self._optimizer_step()
        return {"actor/grad_norm": grad_norm.item(), "actor/skipped_updates": 0.0, "actor/lr": self._lr()}

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Hugging Face-named weights on CPU (what the rollout engine loads); LoRA adapters merged in."""
        if self.lora:
            from rexthinker_rl.lora import merged_state_dict

            return merged_state_dict(self.model)
        return {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()}

    def sync_state_dict(self) -> dict[str, torch.Tensor]:
        """What the rollout engine loads after an update: ``state_dict()``, except that under LoRA only the adapted
        weights are sent (merged), the only ones training changes: a 7B model's frozen embedding, head and vision
        tower are not re-sent every step (the engine loaded them from the same model folder)."""
        if self.lora:
            from rexthinker_rl.lora import merged_state_dict

            return merged_state_dict(self.model, adapted_only=True)
        return self.state_dict()

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: the weights as trained (base + separate adapters under LoRA)."""
        return {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()}

    def hf_model(self):
        """A plain Hugging Face model of the current policy (a merged copy under LoRA), for save_pretrained."""
        if not self.lora:
            return self.model
        import copy

        from rexthinker_rl.lora import merged_model

        return merged_model(copy.deepcopy(self.model))

    def load(self, weights: dict[str, torch.Tensor], train_state: dict[str, Any] | None = None) -> None:
        self.model.load_state_dict(weights)
        if train_state and self.optimizer is not None:
            self.optimizer.load_state_dict(train_state["optimizer"])
            self.scheduler.load_state_dict(train_state["scheduler"])
            self.nonfinite_streak = int(train_state.get("nonfinite_streak", 0))
            if "rng" in train_state:
                set_rng_state(train_state["rng"])

    def train_state(self) -> dict[str, Any]:
        """Optimizer, scheduler, the non-finite streak and this process's RNG states: all an exact resume needs."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "nonfinite_streak": self.nonfinite_streak,
            "rng": rng_state(),
        }
