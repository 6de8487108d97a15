"""The weight sync's packing: every tensor arrives with its name, dtype and values; the arrays are the tensors' own
memory (no copy in the actor's heap); tied tensors travel once; and Ray's out-of-band path (pickle protocol 5, as
Ray's serializer uses) reads them back as views of the sent buffers, not as copies."""

import pickle

import numpy as np
import torch

from rexthinker_rl.runtime.weight_transfer import share


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
