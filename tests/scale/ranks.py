"""Run a function on N local processes joined by gloo (torch.multiprocessing spawn), for the backend tests; and the
training script each rank of those tests runs."""

from __future__ import annotations

import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _entry(rank: int, world_size: int, port: int, fn, args, errors: Path) -> None:
    torch.set_num_threads(1)
    import rexthinker_rl  # noqa: F401  (torchvision shim before any processor import)
    from rexthinker_rl.distributed import init_process_group

    try:
        init_process_group(rank, world_size, "127.0.0.1", port, "cpu")
        fn(rank, world_size, *args)
    except BaseException:
        (errors / f"rank{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def run_ranks(fn, world_size: int, args: tuple, tmp_path: Path) -> None:
    """``fn(rank, world_size, *args)`` on ``world_size`` processes; a failure re-raises with the rank's traceback."""
    from rexthinker_rl.distributed import free_port

    errors = tmp_path / "errors"
    errors.mkdir(exist_ok=True)
    try:
        mp.start_processes(
            _entry, (world_size, free_port(), fn, args, errors), nprocs=world_size, start_method="spawn"
        )
    except mp.ProcessRaisedException as error:
        details = "\n".join(p.read_text() for p in sorted(errors.glob("rank*.txt")))
        raise AssertionError(f"a rank failed:\n{details or error}") from None


def train_two_steps(rank: int, world_size: int, model_dir: str, overrides: list[str], out: str) -> None:
    """Each rank: its share of the old log-probs, then two updates on its share of each mini-batch, with a checkpoint
    round trip between the steps (full weights and every rank's train state through ``torch.save`` and a
    ``weights_only`` load, as checkpoint.py does) into a fresh policy. Rank 0 saves the gathered full weights, the
    merged weights, the metrics and the log-probs (rows in batch order)."""
    from rexthinker_rl.config import load_config
    from rexthinker_rl.distributed import split_mini_batches, split_rows
    from rexthinker_rl.sharded import make_policy
    from tests.scale.test_backends import step_batch

    config = load_config(None, overrides)
    policy = make_policy(config, model_dir, trainable=True, total_updates=4, rank=rank, world_size=world_size)
    results = {"metrics": [], "logprobs": []}
    for step in range(2):
        if step == 1:
            policy = _checkpoint_round_trip(policy, config, model_dir, rank, world_size)
        batch = step_batch(model_dir, step)
        groups, parts = split_rows(batch, world_size)
        mine = policy.compute_logprobs(parts[rank])
        gathered = [None] * world_size
        torch.distributed.all_gather_object(gathered, (groups[rank], mine))
        old = torch.zeros(len(batch), batch.response_length)
        for rows, logprobs in gathered:
            if rows:
                old[rows, : logprobs.shape[1]] = logprobs
        batch.old_logprobs, batch.ref_logprobs = old, old + 0.01
        per_update = config.actor.global_batch_size * config.rollout.n
        results["metrics"].append(policy.update_mini_batches(split_mini_batches(batch, per_update, world_size)[rank]))
        results["logprobs"].append(old * batch.response_mask)
    weights = policy.checkpoint_state()
    merged = policy.state_dict()
    if rank == 0:
        torch.save({**results, "weights": weights, "merged": merged}, out)


def _checkpoint_round_trip(policy, config, model_dir: str, rank: int, world_size: int):
    """What a resume does: rank 0's full weights and the combined train state, saved and loaded back (weights_only),
    into a freshly built policy."""
    import io

    from rexthinker_rl.sharded import combine_train_states, make_policy

    weights, state = policy.checkpoint_state(), policy.train_state()
    states, all_weights = [None] * world_size, [None] * world_size
    torch.distributed.all_gather_object(states, state)
    torch.distributed.all_gather_object(all_weights, weights)
    buffer = io.BytesIO()
    torch.save({"weights": all_weights[0], "train_state": combine_train_states(states, config.actor.strategy)}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh = make_policy(config, model_dir, trainable=True, total_updates=4, rank=rank, world_size=world_size)
    fresh.load(saved["weights"], saved["train_state"])
    return fresh
