"""The separate placement's weight sync holds a few pieces in the object store, not the model: over Ray, through
``ActorRanks.weight_pieces`` as ``SeparateRuntime.sync_weights`` drives it, on a local cluster the trainer starts.

Shared-memory pages a process writes stay in its resident size (and in the machine's used memory) after the object is
freed, unless the store reuses them for the next object. The sender below writes three syncs of 16 pieces of 16 MiB.
At most three pieces are alive at once (the one the engine loads, one made and not yet taken, one being written:
backpressure 1), so its shared resident size should stay within twice that, 96 MiB (measured here: 64-80, flat from the
first sync on). Sent whole it would be 256 MiB; with Ray's default of freeing once a second it measured 256 after one
sync and 544 after six.
"""

import sys

import pytest
import torch

from rexthinker_rl.config import load_config
from rexthinker_rl.runtime.ranks import ActorRanks
from rexthinker_rl.runtime.weight_transfer import Assembler, pieces

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")]

PIECE = 16 * 2**20
BLOCKS = 16


def _shared_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("RssShmem:"))


class Sender:
    """An actor rank's sync verb over a model of 16 blocks of one 16 MiB tensor each."""

    def __init__(self) -> None:
        self.weights = {f"model.layers.{i}.mlp.weight": torch.full((PIECE // 4,), float(i)) for i in range(BLOCKS)}

    def get_weight_pieces(self, piece_bytes: int):
        yield from pieces(self.weights, piece_bytes)

    def shared_mib(self) -> float:
        return _shared_mib()


class Engine:
    def __init__(self) -> None:
        self.assembler, self.loaded = Assembler(), {}

    def load_weights(self, weights) -> None:
        for name, tensor in self.assembler.tensors(weights):
            self.loaded[name] = float(tensor[0])

    def loaded_names(self) -> dict[str, float]:
        return self.loaded


def test_a_sync_holds_a_few_pieces_in_shared_memory_not_the_model():
    import ray

    from rexthinker_rl.runtime.ray_cluster import start_cluster, stop_cluster

    started = start_cluster("", weight_bytes=BLOCKS * PIECE)
    try:
        sender, engine = ray.remote(Sender).remote(), ray.remote(Engine).remote()
        ranks = ActorRanks(load_config(None, [f"rollout.weight_bucket_mb={PIECE // 2**20}"]), [sender])
        before = ray.get(sender.shared_mib.remote())
        for _ in range(3):
            for piece in ranks.weight_pieces():
                ray.get(engine.load_weights.remote(piece))
        grown = ray.get(sender.shared_mib.remote()) - before
        loaded = ray.get(engine.loaded_names.remote())
    finally:
        if started is not None:
            stop_cluster(started)
    assert loaded == {f"model.layers.{i}.mlp.weight": float(i) for i in range(BLOCKS)}
    sync_mib = BLOCKS * PIECE / 2**20
    assert grown <= 6 * PIECE / 2**20, (
        f"the sender's shared memory grew {grown:.0f} MiB over 3 syncs of {sync_mib:.0f}"
    )
