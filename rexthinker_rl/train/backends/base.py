"""The training-backend protocol, and the one-process backend (``actor.strategy=torch``).

A :class:`TrainBackend` is what :class:`rexthinker_rl.train.policy.Policy` is composed with (torchtitan style: the policy
wraps a plain model with a backend object; no subclass overrides its methods). It decides where the weights are loaded,
wraps the model (nothing, FSDP2 ``fully_shard``, a DeepSpeed engine), runs backward, steps the optimizer, reduces plain
numbers over ranks and gathers full weights. Its contract for a step is the same everywhere: clip the gradients to
``actor.max_grad_norm`` and apply the update unless their norm is non-finite, in which case the gradients are dropped
and nothing changes (weights, optimizer moments, schedule); the norm before clipping is returned either way. The
policy counts skipped steps and aborts after ``actor.max_consecutive_nonfinite`` of them, whatever the backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import torch

from rexthinker_rl.config import compute_device

if TYPE_CHECKING:
    from rexthinker_rl.config import Config

LrLambda = Callable[[int], float]


class TrainBackend(Protocol):
    rank: int
    world_size: int
    device: str  # where the forward and backward run
    load_device: str  # where the weights are loaded before wrap()
    load_dtype: str  # the dtype they are loaded in (float32 master weights under mixed precision)

    def wrap(self, model: torch.nn.Module, trainable: bool) -> torch.nn.Module:
        """The module the policy runs forward on (the model itself, sharded in place, or an engine around it)."""

    def attach_optimizer(self, optimizer: torch.optim.Optimizer, lr_lambda: LrLambda) -> tuple[Any, Any, Any]:
        """``(module, optimizer, scheduler)`` to train with, from our AdamW and schedule."""

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradient of ``loss``, this rank's share of the global sum (see algorithms.Normalisers)."""

    def step(self, max_grad_norm: float) -> float:
        """Clip, then step optimizer and schedule unless the norm is non-finite (then drop the gradients); the norm."""

    def all_reduce(self, values: list[float], op: str) -> list[float]:
        """Element-wise ``op`` ("sum" | "max") over every rank."""

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight, full, on CPU, on rank 0 ({} on the others). Collective."""

    def full_tensors(self, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        """Every weight, full, in ``dtype``, one at a time, on every rank (what an engine in this process loads).
        Collective: every rank iterates to the end."""

    def load_full_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        """Load full weights (as :meth:`full_state_dict` returns them) into this rank's shard."""

    def optimizer_state(self) -> Any:
        """What a checkpoint stores of the optimizer for this rank (see ``combine_train_states``)."""

    def load_optimizer_state(self, state: Any) -> None:
        """Undo :meth:`optimizer_state` (``state`` as combined over ranks)."""


def clip_and_step(
    params: list[torch.nn.Parameter], optimizer, scheduler, max_grad_norm: float, full_norm: Callable = float
) -> float:
    """The guarded step of the torch and FSDP2 backends: total norm before clipping (``full_norm`` turns the clipping
    function's result into a float: FSDP2's is a DTensor), then the update, or the gradients dropped when the norm is
    not finite (a NaN/inf gradient would poison the weights and the optimizer moments)."""
    norm = full_norm(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    if math.isfinite(norm):
        optimizer.step()
        scheduler.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    return norm


def lambda_schedule(optimizer: torch.optim.Optimizer, lr_lambda: LrLambda) -> torch.optim.lr_scheduler.LambdaLR:
    """Our learning-rate schedule (``policy.lr_lambda``) on ``optimizer``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


class TorchBackend:
    """One process, one device: the model as loaded, plain autograd and AdamW."""

    def __init__(self, config: Config, rank: int = 0, world_size: int = 1) -> None:
        if world_size != 1:
            raise ValueError(f"actor.strategy=torch runs one process, not {world_size} ranks (use fsdp2 or deepspeed)")
        self.rank, self.world_size = 0, 1
        self.device = self.load_device = compute_device(config)
        self.load_dtype = config.model.dtype
        self.model: torch.nn.Module | None = None
        self.optimizer = self.scheduler = None

    def wrap(self, model: torch.nn.Module, trainable: bool) -> torch.nn.Module:
        self.model = model
        return model

    def attach_optimizer(self, optimizer, lr_lambda: LrLambda):
        self.optimizer, self.scheduler = optimizer, lambda_schedule(optimizer, lr_lambda)
        return self.model, self.optimizer, self.scheduler

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self, max_grad_norm: float) -> float:
        return clip_and_step(trainable_parameters(self.model), self.optimizer, self.scheduler, max_grad_norm)

    def all_reduce(self, values: list[float], op: str) -> list[float]:
        return list(values)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().cpu() for name, tensor in self.model.state_dict().items()}

    def full_tensors(self, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in self.model.state_dict().items():
            yield name, tensor.detach().to(dtype)

    def load_full_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(weights)

    def optimizer_state(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


def distributed_all_reduce(values: list[float], op: str, device: str) -> list[float]:
    """Element-wise ``op`` ("sum" | "max") of ``values`` over every rank (float64, so token counts stay exact)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    reduce_op = torch.distributed.ReduceOp.SUM if op == "sum" else torch.distributed.ReduceOp.MAX
    torch.distributed.all_reduce(tensor, op=reduce_op)
    return tensor.tolist()


def sharded_load_dtype(config: Config) -> str:
    """Sharded backends keep float32 master weights under mixed precision (compute in model.dtype)."""
    return "float32" if config.actor.mixed_precision else config.model.dtype
