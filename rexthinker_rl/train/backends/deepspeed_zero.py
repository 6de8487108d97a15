"""DeepSpeed ZeRO-2/3 (``actor.zero_stage``) with our AdamW and schedule; DeepSpeed clips and steps.

DeepSpeed averages gradients over ranks, so backward scales this rank's share of the global loss by the world size.
A non-finite step is skipped like on the other backends: DeepSpeed's ZeRO optimizers check the global gradient norm
in ``step()`` and, when it is not finite, drop the gradients and leave weights, moments and schedule as they were
(``engine.was_step_applied()`` is then False); ``bf16.check_grad_overflow`` asks ZeRO-2 to do so in bfloat16 as well.
A checkpoint holds each rank's own optimizer partition. ``import deepspeed`` happens here only: it is an optional
extra, imported when this backend is built.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from rexthinker_rl.config import compute_device
from rexthinker_rl.train.backends.base import LrLambda, distributed_all_reduce, lambda_schedule, sharded_load_dtype

if TYPE_CHECKING:
    from rexthinker_rl.config import Config


class DeepSpeedBackend:
    def __init__(self, config: Config, rank: int = 0, world_size: int = 1) -> None:
        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = compute_device(config)
        self.load_device = "cpu"
        self.load_dtype = sharded_load_dtype(config)
        self.engine = self.optimizer = self.scheduler = None
        self.trainable = False

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
            "bf16": {"enabled": dtype == "bfloat16", "check_grad_overflow": True},
            "fp16": {"enabled": dtype == "float16"},
            "wall_clock_breakdown": False,
        }

    def wrap(self, model: torch.nn.Module, trainable: bool):
        import deepspeed

        self.trainable = trainable
        if trainable:  # the engine is built with the optimizer (attach_optimizer)
            self.engine = model
            return model
        self.engine, *_ = deepspeed.initialize(model=model, config=self._ds_config())  # ZeRO-3 partitions it
        return self.engine

    def attach_optimizer(self, optimizer, lr_lambda: LrLambda):
        import deepspeed

        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=self.engine,
            optimizer=optimizer,
            lr_scheduler=lambda optimizer: lambda_schedule(optimizer, lr_lambda),
            config=self._ds_config(),
        )
        return self.engine, self.optimizer, self.scheduler

    def backward(self, loss: torch.Tensor) -> None:
        # DeepSpeed averages gradients over ranks; scale_wrt_gas=False: we normalise by global counts ourselves.
        self.engine.backward(loss * self.world_size, scale_wrt_gas=False)

    def step(self, max_grad_norm: float) -> float:
        self.engine.step()  # clips to actor.max_grad_norm (gradient_clipping), steps AdamW and the schedule
        norm = float(self.engine.get_global_grad_norm() or 0.0)
        if not math.isfinite(norm) and self.engine.was_step_applied():
            raise RuntimeError(
                "DeepSpeed applied a step with a non-finite gradient norm (this DeepSpeed version does not skip "
                "such steps); use actor.strategy=fsdp2"
            )
        return norm

    def all_reduce(self, values: list[float], op: str) -> list[float]:
        return distributed_all_reduce(values, op, self.device)

    def _named_full_parameters(self):
        module = self.engine.module
        return module, dict(module.named_parameters(remove_duplicate=False)), dict(module.named_buffers())

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, tensor in self.full_tensors(None):
            if self.rank == 0:
                out[name] = tensor.cpu()
        return out

    def full_tensors(self, dtype: torch.dtype | None) -> Iterator[tuple[str, torch.Tensor]]:
        """Each parameter gathered in turn (a no-op below ZeRO-3) and copied out, so the gathered storage is freed."""
        from deepspeed import zero

        module, params, buffers = self._named_full_parameters()
        for name in module.state_dict():
            if name in params:
                with zero.GatheredParameters([params[name]], modifier_rank=None):
                    yield name, params[name].detach().to(dtype or params[name].dtype, copy=True)
            else:
                yield name, buffers[name].detach().to(dtype or buffers[name].dtype, copy=True)

    def load_full_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
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

    def optimizer_state(self) -> dict[str, Any]:
        """This rank's partition of the optimizer (moments, float32 master weights), tensors and plain data only."""
        return _plain(self.optimizer.state_dict())

    def load_optimizer_state(self, state: Any) -> None:
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
