"""Run a function on N local processes joined by gloo (torch.multiprocessing spawn), for the backend tests; and the
training script each rank of those tests runs."""

from __future__ import annotations

import math
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _entry(rank: int, world_size: int, port: int, fn, args, errors: Path) -> None:
    torch.set_num_threads(1)
    import rexthinker_rl  # noqa: F401  (torchvision shim before any processor import)
    from rexthinker_rl.runtime.process_group import init_process_group

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
    from rexthinker_rl.runtime.process_group import free_port

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
    ``weights_only`` load, as checkpoint.py does) into a fresh policy, which must then train bit for bit as the
    uninterrupted one (both take the second step). Rank 0 saves the gathered full weights after the first update and
    at the end, the merged weights, the metrics, the log-probs (rows in batch order) and the resumed-vs-uninterrupted
    gap."""
    from rexthinker_rl.config import load_config
    from rexthinker_rl.train.policy import make_policy

    config = load_config(None, overrides)
    policy = make_policy(config, model_dir, trainable=True, total_updates=4, rank=rank, world_size=world_size)
    results = {"metrics": [], "logprobs": []}
    for step in range(2):
        resumed = _checkpoint_round_trip(policy, config, model_dir, rank, world_size) if step == 1 else policy
        batch, shares = _step_inputs(resumed, config, model_dir, step, rank, world_size)
        results["logprobs"].append(batch.old_logprobs * batch.response_mask)
        if step == 0:
            first = policy.update(shares[:1])
            results["after_first_update"] = policy.checkpoint_state()
            parts = [first, policy.update(shares[1:])]
            results["metrics"].append({key: sum(part[key] for part in parts) / 2 for key in first})
            continue
        results["metrics"].append(resumed.update(shares))
        policy.update(shares)  # the same step without the round trip
        ours, theirs = resumed.checkpoint_state(), policy.checkpoint_state()
        results["resume_gap"] = max(((ours[n] - t).abs().max().item() for n, t in theirs.items()), default=0.0)
        policy = resumed
    weights = policy.checkpoint_state()
    merged = policy.state_dict()
    nonfinite = _non_finite_steps(policy, config, model_dir, rank, world_size)
    if rank == 0:
        torch.save({**results, "weights": weights, "merged": merged, "nonfinite": nonfinite}, out)


def _step_inputs(policy, config, model_dir: str, step: int, rank: int, world_size: int):
    """The step's batch with the old log-probs (each rank computes its share, all gather them) and the reference's,
    and this rank's share of each mini-batch."""
    from rexthinker_rl.algo.batch import split_mini_batches, split_rows
    from tests.scale.test_backends import step_batch

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
    return batch, split_mini_batches(batch, config, world_size)[rank]


def _non_finite_steps(policy, config, model_dir: str, rank: int, world_size: int) -> dict:
    """Two updates in a row whose advantages are NaN (so are the gradients): the first is skipped and counted with
    weights, optimizer state and schedule untouched; the second aborts (``actor.max_consecutive_nonfinite=2``). The
    same contract on every backend (``backends.base``)."""
    from rexthinker_rl.algo.batch import split_mini_batches
    from rexthinker_rl.train.policy import NonFiniteUpdateError
    from tests.scale.test_backends import step_batch

    batch = step_batch(model_dir, 2)
    batch.advantages = torch.full_like(batch.advantages, float("nan"))
    share = split_mini_batches(batch, config, world_size)[rank][:1]
    before = (policy.checkpoint_state(), policy.train_state())
    metrics = policy.update(share)
    after = (policy.checkpoint_state(), policy.train_state())
    try:
        policy.update(share)
        aborted = ""
    except NonFiniteUpdateError as error:
        aborted = str(error)
    return {
        "skipped": metrics["actor/skipped_updates"],
        "grad_norm_is_nan": math.isnan(metrics["actor/grad_norm"]),
        "weights_unchanged": _difference(before[0], after[0]) == "",
        # DeepSpeed's state records that its last step overflowed (it did: that is the skip); the rest must hold.
        "optimizer_unchanged": _difference(_without_overflow(before[1]), _without_overflow(after[1])),
        "schedule_unchanged": before[1]["scheduler"] == after[1]["scheduler"],
        "aborted": aborted,
    }


def _without_overflow(train_state: dict) -> dict:
    optimizer = train_state["optimizer"]
    return {key: value for key, value in optimizer.items() if key != "overflow"}


def _difference(a, b, path: str = "") -> str:
    """Where two nested dicts/lists of tensors and plain values first differ ("" when equal)."""
    if isinstance(a, dict):
        for key in a:
            if key not in b:
                return f"{path}.{key} missing"
            found = _difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return ""
    if isinstance(a, list | tuple):
        if len(a) != len(b):
            return f"{path}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return ""
    same = torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
    return "" if same else f"{path}: {a!r:.200} != {b!r:.200}"


def _checkpoint_round_trip(policy, config, model_dir: str, rank: int, world_size: int):
    """What a resume does: rank 0's full weights and the combined train state, saved and loaded back (weights_only),
    into a freshly built policy."""
    import io

    from rexthinker_rl.train.backends import combine_train_states
    from rexthinker_rl.train.policy import make_policy

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
