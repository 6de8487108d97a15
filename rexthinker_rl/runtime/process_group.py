"""Joining the data-parallel process group of the actor ranks: the rendezvous address, a free port and the group.

Used by the Ray rank workers (``rexthinker_rl.runtime.workers``) and by the spawn-launched backend tests, which run
without Ray.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import ray
import torch


def node_ip() -> str:
    """This node's address as other nodes reach it (Ray's view when Ray runs here, else loopback)."""
    return ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def init_process_group(rank: int, world_size: int, master_addr: str, master_port: int, device: str) -> None:
    """Join the data-parallel group: nccl between GPUs, gloo on CPU. Under Ray each rank sees its one GPU as cuda:0.
    The torchrun variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK) are set too: a colocated vLLM
    engine (``external_launcher``) reads them and reuses this group."""
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
