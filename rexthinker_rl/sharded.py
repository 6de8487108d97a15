"""Sharded actor backends: FSDP2 (torch ``fully_shard`` per decoder layer) and DeepSpeed ZeRO-2/3.

Each rank is one process holding a shard; the math is :class:`rexthinker_rl.policy.Policy`'s, with the hooks that
differ across ranks overridden: token and sequence counts are summed over ranks (so the token-mean loss is the one
process's), every rank runs the same number of micro-batches, and the backend's gradient reduction (a mean over
ranks) is undone by scaling the loss by the world size. Full weights are gathered on rank 0 only when asked (weight
sync, checkpoints); the optimizer state a checkpoint holds is FSDP2's full (FQN-keyed) state or, for DeepSpeed, each
rank's own partition.
"""

from __future__ import annotations

from typing import Any

import torch

from rexthinker_rl.config import Config
from rexthinker_rl.distributed import all_reduce
from rexthinker_rl.modeling import DTYPES
from rexthinker_rl.policy import NonFiniteUpdateError, Policy
from rexthinker_rl.utils import rng_state, set_rng_state


def sharding_units(model) -> list[torch.nn.Module]:
    """The modules sharded one by one: Qwen2.5-VL's decoder layers and vision blocks (its ``_no_split_modules``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    units = [module for module in base.modules() if type(module).__name__ in names]
    if not units:
        raise TypeError(f"{type(base).__name__} names no _no_split_modules to shard (is it a Qwen2/2.5-VL model?)")
    return units


def merge_lora_weights(
    weights: dict[str, torch.Tensor], lora_cfg, adapted_only: bool = False
) -> dict[str, torch.Tensor]:
    """Plain Hugging Face names -> merged weights (W + alpha / rank * B @ A) from a full peft state dict
    (``adapted_only``: just the weights that carry adapters)."""
    from rexthinker_rl.lora import PEFT_PREFIX

    scale = lora_cfg.alpha / lora_cfg.rank
    merged = {}
    for name, tensor in weights.items():
        if ".lora_" in name:
            continue
        if name.endswith(".base_layer.weight"):
            prefix = name.removesuffix(".base_layer.weight")
            down, up = weights[f"{prefix}.lora_A.default.weight"], weights[f"{prefix}.lora_B.default.weight"]
            tensor = (tensor.float() + scale * (up.float() @ down.float())).to(tensor.dtype)
        elif adapted_only:
            continue
        merged[name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")] = tensor
    return merged


class ShardedPolicy(Policy):
    """What FSDP2 and DeepSpeed share: rank bookkeeping, collectives, full-weight views and checkpoint state."""

    def __init__(
        self, config: Config, model_path: str, trainable: bool, total_updates: int, rank: int, world_size: int
    ) -> None:
        self.rank, self.world_size = rank, world_size
        super().__init__(config, model_path, trainable, total_updates)

    def _load_dtype(self) -> str:
        return "float32" if self.config.actor.mixed_precision else self.config.model.dtype

    def _load_device(self) -> str:
        return "cpu"  # the backend moves each shard to the device; the full model never sits on one GPU

    def _sum_over_ranks(self, values: list[float]) -> list[float]:
        return all_reduce(values, "sum", self._collective_device())

    def _max_over_ranks(self, value: int) -> int:
        return int(all_reduce([value], "max", self._collective_device())[0])

    def _collective_device(self) -> str:
        return self.device  # nccl only moves CUDA tensors

    # ------------------------------------------------------------------ full views (collective: every rank calls)
    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights as trained (peft names under LoRA), full, on CPU, on rank 0; {} elsewhere."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        full = self._full_state_dict()
        return merge_lora_weights(full, self.config.model.lora) if self.lora and full else full

    def sync_state_dict(self) -> dict[str, torch.Tensor]:
        if not self.lora:
            return self.state_dict()
        full = self._full_state_dict()
        return merge_lora_weights(full, self.config.model.lora, adapted_only=True) if full else full

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return self._full_state_dict()

    def hf_model(self):
        """Rank 0: a plain Hugging Face model (CPU, model.dtype) holding the current (merged) weights; None elsewhere."""
        from rexthinker_rl.modeling import load_model

        weights = self.state_dict()
        if self.rank != 0:
            return None
        model = load_model(
            self.model_path, self.config.model.dtype, "sdpa", "cpu", self.config.model.trust_remote_code
        )
        model.load_state_dict(weights)
        return model

    def train_state(self) -> dict[str, Any]:
        """Optimizer state (see the subclass), scheduler, streak and this rank's RNG states."""
        return {
            "optimizer": self._optimizer_state(),
            "scheduler": self.scheduler.state_dict(),
            "nonfinite_streak": self.nonfinite_streak,
            "rng": rng_state(),
            "world_size": self.world_size,
        }

    def load(self, weights: dict[str, torch.Tensor], train_state: dict[str, Any] | None = None) -> None:
        self._load_full_state_dict(weights)
        if train_state and self.optimizer is not None:
            self._load_optimizer_state(train_state["optimizer"])
            self.scheduler.load_state_dict(train_state["scheduler"])
            self.nonfinite_streak = int(train_state.get("nonfinite_streak", 0))
            rank_rng = train_state.get("rank_rng")
            if rank_rng and len(rank_rng) == self.world_size:
                set_rng_state(rank_rng[self.rank])

    def _optimizer_state(self) -> Any:
        raise NotImplementedError

    def _load_optimizer_state(self, state: Any) -> None:
        raise NotImplementedError

    def _load_full_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


class FSDP2Policy(ShardedPolicy):
    """torch FSDP2: ``fully_shard`` on every decoder layer and vision block, then on the whole model."""

    def _shard(self) -> None:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        actor, dtype = self.config.actor, DTYPES[self.config.model.dtype]
        kwargs: dict[str, Any] = {"mesh": init_device_mesh(self.device, (self.world_size,))}
        if actor.mixed_precision and dtype != torch.float32:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        on_gpu = self.device == "cuda"
        if on_gpu and (actor.offload_params if self.trainable else self.config.ref.offload_params):
            # Parameters, gradients and the optimizer step live on CPU; each unit is copied in for its compute.
            kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=True)
        self._offload_optimizer = on_gpu and actor.offload_optimizer and "offload_policy" not in kwargs
        for unit in sharding_units(self.model):
            fully_shard(unit, **kwargs)
        root = self.model.get_base_model() if self.lora else self.model
        fully_shard(root, **kwargs)

    def _backward(self, loss: torch.Tensor) -> None:
        # FSDP2 reduce-scatters the mean over ranks; the loss already holds this rank's share of the global sum.
        (loss * self.world_size).backward()

    def _clip_grad_norm(self) -> torch.Tensor:
        from torch.distributed.tensor import DTensor

        norm = super()._clip_grad_norm()
        return norm.full_tensor() if isinstance(norm, DTensor) else norm

    def _optimizer_step(self) -> None:
        if self._offload_optimizer:
            _move_optimizer_state(self.optimizer, self.device)
        super()._optimizer_step()
        if self._offload_optimizer:
            _move_optimizer_state(self.optimizer, "cpu")

    def _options(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.model, options=self._options())

    def _load_full_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(self.model, weights, options=StateDictOptions(full_state_dict=True))

    def _optimizer_state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(self.model, self.optimizer, options=self._options())

    def _load_optimizer_state(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.model, self.optimizer, state, options=StateDictOptions(full_state_dict=True))


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: str) -> None:
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device, non_blocking=True)


class DeepSpeedPolicy(ShardedPolicy):
    """DeepSpeed ZeRO-2/3 (``actor.zero_stage``) with our AdamW and schedule; DeepSpeed clips and steps."""

    def _ds_config(self) -> dict[str, Any]:
        actor, dtype = self.config.actor, self.config.model.dtype
        zero: dict[str, Any] = {"stage": actor.zero_stage}
        if self.device == "cuda" and actor.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if self.device == "cuda" and actor.offload_params and actor.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
        return {
            "train_micro_batch_size_per_gpu": 1,  # DeepSpeed's bookkeeping only: we feed our own micro-batches
            "gradient_accumulation_steps": 1,
            # Our loop calls backward once per micro-batch and step once per mini-batch; DeepSpeed reduces in step.
            "managed_gradient_accumulation": False,
            "gradient_clipping": actor.max_grad_norm if self.trainable else 0.0,
            "zero_optimization": zero,
            "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": dtype == "bfloat16"},
            "fp16": {"enabled": dtype == "float16"},
            "wall_clock_breakdown": False,
        }

    def _shard(self) -> None:
        if not self.trainable:  # a frozen model: ZeRO-3 partitions it, no optimizer
            import deepspeed

            self.engine, *_ = deepspeed.initialize(model=self.model, config=self._ds_config())
            self.model = self.engine

    def _build_optimizer(self, total_updates: int) -> None:
        import deepspeed

        super()._build_optimizer(total_updates)
        lr_lambda = self._lr_lambda(total_updates)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.model,
            optimizer=self.optimizer,
            lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda),
            config=self._ds_config(),
        )
        self.model = self.engine

    def _backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed averages gradients over ranks; scale_wrt_gas=False: we normalise by global counts ourselves.
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)

    def _step(self) -> dict[str, float]:
        self.engine.step()  # clips to actor.max_grad_norm, steps AdamW and the schedule
        grad_norm = float(self.engine.get_global_grad_norm() or 0.0)
        if not torch.isfinite(torch.tensor(grad_norm)):
            # DeepSpeed has applied the step already (no skip outside fp16 loss scaling): the weights are lost.
            raise NonFiniteUpdateError(
                "non-finite gradient norm under actor.strategy=deepspeed, which cannot skip the step; resume from the "
                "last checkpoint with a lower actor.lr (or use actor.strategy=fsdp2, which skips such steps)"
            )
        return {"actor/grad_norm": grad_norm, "actor/skipped_updates": 0.0, "actor/lr": self._lr()}

    def _lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def _named_full_parameters(self):
        module = self.engine.module
        params = dict(module.named_parameters(remove_duplicate=False))
        buffers = dict(module.named_buffers())
        return module, params, buffers

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        from deepspeed import zero

        module, params, buffers = self._named_full_parameters()
        out: dict[str, torch.Tensor] = {}
        for name in module.state_dict():
            if name in params:
                with zero.GatheredParameters([params[name]], modifier_rank=None):  # a no-op below ZeRO-3
                    if self.rank == 0:
                        out[name] = params[name].detach().cpu().clone()
            elif self.rank == 0:
                out[name] = buffers[name].detach().cpu().clone()
        return out

    def _load_full_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        from deepspeed import zero

        _, params, _ = self._named_full_parameters()
        missing = sorted(set(params) - set(weights))
        if missing:
            raise KeyError(f"checkpoint weights lack {len(missing)} parameters, e.g. {missing[:3]}")
        for name, param in params.items():
            with zero.GatheredParameters([param], modifier_rank=0), torch.no_grad():
                if self.rank == 0:
                    param.copy_(weights[name])
        if self.optimizer is not None:  # the float32 master partitions follow the loaded weights
            self.optimizer._restore_from_bit16_weights()

    def _optimizer_state(self) -> dict[str, Any]:
        """This rank's partition of the optimizer (moments, float32 master weights), tensors and plain data only."""
        return _plain(self.optimizer.state_dict())

    def _load_optimizer_state(self, state: Any) -> None:
        ranks = state.get("rank_optimizer") if isinstance(state, dict) else None
        if not ranks or len(ranks) != self.world_size:
            saved = len(ranks) if ranks else "no"
            raise ValueError(
                f"the checkpoint holds {saved} DeepSpeed optimizer partitions; this run has {self.world_size} ranks "
                "(resume with the same trainer.nnodes x trainer.n_gpus_per_node, or checkpoint.save_optimizer=false)"
            )
        live = self.optimizer.state_dict()
        live.update(ranks[self.rank])
        self.optimizer.load_state_dict([live] * self.world_size, load_from_fp32_weights=True)


def _plain(value: Any) -> Any:
    """``value`` without the objects ``torch.load(weights_only=True)`` refuses (DeepSpeed's loss scaler, enums)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if _is_plain(item)}
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    return value


def _is_plain(value: Any) -> bool:
    if isinstance(value, dict | list | tuple):
        return True
    return isinstance(value, torch.Tensor) or type(value) in (int, float, bool, str, type(None))


def combine_train_states(states: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
    """One checkpoint's train state from every rank's: rank 0's, plus each rank's RNG states and, for DeepSpeed,
    each rank's optimizer partition (FSDP2's optimizer state is already full on rank 0)."""
    combined = {**states[0], "rank_rng": [state["rng"] for state in states]}
    if strategy == "deepspeed":
        combined["optimizer"] = {"rank_optimizer": [state["optimizer"] for state in states]}
    return combined


BACKENDS: dict[str, type[ShardedPolicy]] = {"fsdp2": FSDP2Policy, "deepspeed": DeepSpeedPolicy}


def make_policy(
    config: Config, model_path: str, trainable: bool, total_updates: int = 1, rank: int = 0, world_size: int = 1
) -> Policy:
    """The policy for ``actor.strategy``: one process (torch), or this rank's shard (fsdp2 | deepspeed)."""
    if config.actor.strategy == "torch":
        return Policy(config, model_path, trainable, total_updates)
    return BACKENDS[config.actor.strategy](config, model_path, trainable, total_updates, rank, world_size)
