"""torch FSDP2: ``fully_shard`` on every decoder layer and vision block, then on the whole model.

Each rank holds a shard; FSDP2 reduce-scatters the *mean* of the gradients over ranks, and the policy's loss already
holds this rank's share of the global sum, so backward scales it by the world size. Full weights are gathered with
``torch.distributed.checkpoint``'s state-dict helpers (on rank 0, on CPU) or tensor by tensor (``full_tensors``, every
rank); a checkpoint holds FSDP2's full, FQN-keyed optimizer state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from rexthinker_rl.config import compute_device
from rexthinker_rl.model.loading import DTYPES
from rexthinker_rl.train.backends.base import (
    LrLambda,
    clip_and_step,
    distributed_all_reduce,
    lambda_schedule,
    sharded_load_dtype,
    trainable_parameters,
)

if TYPE_CHECKING:
    from rexthinker_rl.config import Config

FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)


def sharding_units(model) -> list[torch.nn.Module]:
    """The modules sharded one by one: Qwen2.5-VL's decoder layers and vision blocks (its ``_no_split_modules``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    units = [module for module in base.modules() if type(module).__name__ in names]
    if not units:
        raise TypeError(f"{type(base).__name__} names no _no_split_modules to shard (is it a Qwen2/2.5-VL model?)")
    return units


def full_norm(norm: torch.Tensor) -> float:
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


class FSDP2Backend:
    def __init__(self, config: Config, rank: int = 0, world_size: int = 1) -> None:
        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = compute_device(config)
        self.load_device = "cpu"  # each shard moves to the device; the full model never sits on one GPU
        self.load_dtype = sharded_load_dtype(config)
        self.model: torch.nn.Module | None = None
        self.optimizer = self.scheduler = None
        self.offload_optimizer = False

    def wrap(self, model: torch.nn.Module, trainable: bool) -> torch.nn.Module:
        actor, dtype = self.config.actor, DTYPES[self.config.model.dtype]
        kwargs: dict[str, Any] = {"mesh": init_device_mesh(self.device, (self.world_size,))}
        if actor.mixed_precision and dtype != torch.float32:
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        on_gpu = self.device == "cuda"
        if on_gpu and (actor.offload_params if trainable else self.config.ref.offload_params):
            # Parameters, gradients and the optimizer step live on CPU; each unit is copied in for its compute.
            kwargs["offload_policy"] = CPUOffloadPolicy(pin_memory=True)
        self.offload_optimizer = on_gpu and actor.offload_optimizer and "offload_policy" not in kwargs
        for unit in sharding_units(model):
            fully_shard(unit, **kwargs)
        fully_shard(model.get_base_model() if hasattr(model, "get_base_model") else model, **kwargs)
        self.model = model  # sharded in place
        return model

    def attach_optimizer(self, optimizer, lr_lambda: LrLambda):
        self.optimizer, self.scheduler = optimizer, lambda_schedule(optimizer, lr_lambda)
        return self.model, self.optimizer, self.scheduler

    def backward(self, loss: torch.Tensor) -> None:
        # FSDP2 reduce-scatters the mean over ranks; the loss already holds this rank's share of the global sum.
        (loss * self.world_size).backward()

    def step(self, max_grad_norm: float) -> float:
        if self.offload_optimizer:
            _move_optimizer_state(self.optimizer, self.device)
        norm = clip_and_step(
            trainable_parameters(self.model), self.optimizer, self.scheduler, max_grad_norm, full_norm=full_norm
        )
        if self.offload_optimizer:
            _move_optimizer_state(self.optimizer, "cpu")
        return norm

    def all_reduce(self, values: list[float], op: str) -> list[float]:
        return distributed_all_reduce(values, op, self.device)  # nccl only moves CUDA tensors

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return get_model_state_dict(self.model, options=FULL_ON_RANK0)

    def full_tensors(self, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in self.model.state_dict().items():
            full = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
            yield name, full.to(dtype)

    def load_full_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        set_model_state_dict(self.model, weights, options=StateDictOptions(full_state_dict=True))

    def optimizer_state(self) -> dict[str, Any]:
        return get_optimizer_state_dict(self.model, self.optimizer, options=FULL_ON_RANK0)

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(self.model, self.optimizer, state, options=options)


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: str) -> None:
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device, non_blocking=True)
