"""Data-parallel plumbing without Ray: the process group, collectives on plain numbers, and how the controller splits a
batch across ranks (balanced by length, every rank given the same number of mini-batches).
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch

from rexthinker_rl.batch import SequenceBatch, balanced_partition


def node_ip() -> str:
    """This node's address as other nodes reach it (Ray's view when Ray runs here, else loopback)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:  # the spawn-launched tests run without Ray
        pass
    return "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def init_process_group(rank: int, world_size: int, master_addr: str, master_port: int, device: str) -> None:
    """Join the data-parallel group: nccl between GPUs, gloo on CPU. Under Ray each rank sees its one GPU as cuda:0."""
    if torch.distributed.is_initialized():
        return
    env = {"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port), "RANK": str(rank)}
    os.environ.update({**env, "WORLD_SIZE": str(world_size), "LOCAL_RANK": os.environ.get("LOCAL_RANK", "0")})
    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.distributed.init_process_group(
        "nccl" if device == "cuda" else "gloo",
        init_method=f"tcp://{master_addr}:{master_port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(minutes=30),
    )


def all_reduce(values: list[float], op: str, device: str) -> list[float]:
    """Element-wise ``op`` ("sum" | "max") of ``values`` over every rank (float64, so token counts stay exact)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    reduce_op = torch.distributed.ReduceOp.SUM if op == "sum" else torch.distributed.ReduceOp.MAX
    torch.distributed.all_reduce(tensor, op=reduce_op)
    return tensor.tolist()


def split_rows(batch: SequenceBatch, world_size: int) -> tuple[list[list[int]], list[SequenceBatch]]:
    """Rows of ``batch`` for each rank, balanced by real length with equal row counts (+-1), and the sub-batches
    (a placeholder for a rank without rows)."""
    groups = balanced_partition(batch.real_lengths(), world_size)
    return groups, [batch.select(rows) if rows else batch.placeholder() for rows in groups]


def split_mini_batches(batch: SequenceBatch, per_update: int, world_size: int) -> list[list[SequenceBatch]]:
    """For each rank, its share of every mini-batch of ``per_update`` rows: rank r steps on the same mini-batches as
    one process would, holding only its rows of each."""
    shares: list[list[SequenceBatch]] = [[] for _ in range(world_size)]
    for mini_batch in batch.chunks(per_update):
        for rank, part in enumerate(split_rows(mini_batch, world_size)[1]):
            shares[rank].append(part)
    return shares


def gather_logprobs(batch: SequenceBatch, groups: list[list[int]], parts: list[torch.Tensor]) -> torch.Tensor:
    """Reassemble per-rank (rows_r, R) log-probs into (batch, R) in the batch's row order."""
    out = torch.zeros(len(batch), batch.response_length)
    for rows, part in zip(groups, parts, strict=True):
        if rows:
            out[rows] = part
    return out
