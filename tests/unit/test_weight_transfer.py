"""The weight sync's packing: every tensor arrives with its name, dtype and values; the arrays are the tensors' own
memory (no copy in the actor's heap); tied tensors travel once; and Ray's out-of-band path (pickle protocol 5, as
Ray's serializer uses) reads them back as views of the sent buffers, not as copies."""

import pickle
from collections import namedtuple

import numpy as np
import torch

from rexthinker_rl.runtime.weight_transfer import share

Step = namedtuple("Step", "count moment")  # a named tuple in a train state (module level: pickled by name)


def _weights() -> dict[str, torch.Tensor]:
    embed = torch.randn(6, 4)
    return {
        "embed.weight": embed,
        "lm_head.weight": embed,  # tied, as Qwen2.5-VL-3B's
        "layer.weight": torch.randn(4, 4).to(torch.bfloat16),
        "layer.bias": torch.randn(4, dtype=torch.float64),
        "norm.weight": torch.randn(3, 8)[:, ::2],  # not contiguous
        "fp8.weight": torch.randn(5).to(torch.float8_e4m3fn),
        "empty.a": torch.empty(0),
        "empty.b": torch.empty(0),
    }


def test_every_tensor_arrives_with_its_name_dtype_and_values():
    weights = _weights()
    received = dict(share(weights).tensors())
    assert sorted(received) == sorted(weights)
    for name, tensor in weights.items():
        assert received[name].dtype == tensor.dtype, name
        assert received[name].shape == tensor.shape, name
        assert torch.equal(received[name].to(torch.float64), tensor.to(torch.float64)), name


def test_the_arrays_are_the_tensors_memory_and_tied_tensors_go_once():
    weights = _weights()
    shared = share(weights)
    assert shared.aliases == {"lm_head.weight": "embed.weight"}
    assert "lm_head.weight" not in shared.arrays
    for name, array in shared.arrays.items():
        tensor = weights[name]
        if tensor.numel():
            assert array.__array_interface__["data"][0] == tensor.data_ptr(), f"{name} was copied"


def test_out_of_band_pickling_reads_views_of_the_sent_buffers():
    weights = _weights()
    shared = share(weights)
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(shared, protocol=5, buffer_callback=buffers.append)
    contiguous = [a for a in shared.arrays.values() if a.flags.c_contiguous]  # the parameters' case
    assert sorted(b.raw().nbytes for b in buffers) == sorted(a.nbytes for a in contiguous), "sent in band"
    frozen = [bytes(buffer.raw()) for buffer in buffers]  # like Ray's object store: read-only memory
    received = pickle.loads(payload, buffers=frozen)
    array = received.arrays["embed.weight"]
    assert not array.flags.writeable and any(np.shares_memory(array, np.frombuffer(b, np.uint8)) for b in frozen)
    tensors = dict(received.tensors())
    assert torch.equal(tensors["lm_head.weight"], tensors["embed.weight"])
    assert torch.equal(tensors["embed.weight"], weights["embed.weight"])
    assert torch.equal(tensors["layer.weight"], weights["layer.weight"])


def test_parameters_with_gradients_are_sent_detached():
    parameter = torch.nn.Parameter(torch.randn(2, 2))
    received = dict(share({"w": parameter}).tensors())
    assert not received["w"].requires_grad and torch.equal(received["w"], parameter.detach())


def test_a_train_state_arrives_whole_with_its_tensors_out_of_band():
    """An optimizer state and RNG states (dicts, lists, tuples, a named tuple, numbers, NumPy arrays, tensors of any
    dtype) cross pickle protocol 5 as Ray sends them: the structure comes back equal, every tensor's bytes out of
    band (none in the pickled payload)."""
    from rexthinker_rl.runtime.weight_transfer import share_tree

    moment = torch.randn(64, 32)
    state = {
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": moment, "exp_avg_sq": moment.square().bfloat16()}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.99), "params": [0]}],
        },
        "rng": {"torch": torch.randint(0, 255, (100,), dtype=torch.uint8), "python": (3, (1, 2, 3), None)},
        "numpy": np.arange(4),
        "named": Step(torch.tensor(7), moment),  # the same tensor twice: sent once
        "streak": 2,
    }
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(share_tree(state), protocol=5, buffer_callback=buffers.append)
    assert len(payload) < moment.numel()  # a quarter of one moment's 8 KiB: the tensors are not in the payload
    back = pickle.loads(payload, buffers=[bytes(b.raw()) for b in buffers]).tree()
    assert back.keys() == state.keys() and back["streak"] == 2 and np.array_equal(back["numpy"], state["numpy"])
    adam = back["optimizer"]["state"][0]
    assert torch.equal(adam["exp_avg"], moment) and adam["exp_avg_sq"].dtype == torch.bfloat16
    assert torch.equal(adam["exp_avg_sq"], state["optimizer"]["state"][0]["exp_avg_sq"])
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"]) and back["rng"]["python"] == (3, (1, 2, 3), None)
    assert (
        type(back["named"]) is Step and back["named"].count.item() == 7 and torch.equal(back["named"].moment, moment)
    )
