"""The weight sync's packing: every tensor arrives with its name, dtype and values; the arrays are the tensors' own
memory (no copy in the actor's heap); tied tensors travel once; Ray's out-of-band path (pickle protocol 5, as Ray's
serializer uses) reads them back as views of the sent buffers, not as copies; and the pieces a sync sends hold every
weight once, whole blocks each."""

import pickle
from collections import namedtuple

import numpy as np
import torch

from rexthinker_rl.runtime.weight_transfer import Assembler, block_of, pieces, share

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


def _blocks() -> dict[str, torch.Tensor]:
    """A model's state dict in miniature: a tied embedding and head, two blocks whose attention an engine fuses, an
    integer buffer."""
    embed = torch.randn(32, 8)
    weights = {"model.embed_tokens.weight": embed}
    for layer in range(2):
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            weights[f"model.layers.{layer}.self_attn.{part}.weight"] = torch.randn(8, 8)
        weights[f"model.layers.{layer}.mlp.up_proj.weight"] = torch.randn(16, 8)
    weights["model.norm.weight"] = torch.randn(8)
    weights["model.position_ids"] = torch.arange(8)
    weights["lm_head.weight"] = embed
    return weights


def _received(piece) -> dict[str, torch.Tensor]:
    return dict(piece.tensors())


def test_pieces_hold_every_weight_once_cast_and_split_only_between_blocks():
    weights = _blocks()
    layer_bytes = 4 * 8 * 8 * 2 + 16 * 8 * 2  # one block in bfloat16
    split = list(pieces(weights, layer_bytes + 1, torch.bfloat16))
    assert not any(piece.rows for piece in split)  # no block is larger than a piece
    names = [name for piece in split for name in _received(piece)]
    assert sorted(names) == sorted(weights)  # each once
    assert [block_of(name) for name in names].count("model.layers.0") == 5
    blocks = [{block_of(name) for name in _received(piece)} for piece in split]
    assert all(not a & b for i, a in enumerate(blocks) for b in blocks[i + 1 :]), "a block was split"
    assert {"model.layers.0"} in blocks and {"model.layers.1"} in blocks  # each block alone: two do not fit
    for piece in split:
        for name, tensor in _received(piece).items():
            original = weights[name]
            assert tensor.dtype == (torch.bfloat16 if original.is_floating_point() else original.dtype), name
            assert torch.equal(tensor, original.to(tensor.dtype)), name
    embed = next(piece for piece in split if "model.embed_tokens.weight" in piece.arrays)
    assert embed.aliases == {"lm_head.weight": "model.embed_tokens.weight"}  # tied: sent once


def test_pieces_stay_under_their_size_and_the_receiver_puts_every_weight_back_whole():
    """At any size, each piece holds at most its size, or one block that alone is larger; a block that is one tensor
    larger than a piece (the embedding) travels in ranges of rows; the receiving end passes every weight on once,
    whole, the tied head with its embedding, and holds nothing back at the end."""
    weights = _blocks()
    for piece_bytes in (1, 100, 600, 2000, 5000):
        assembler, received = Assembler(), {}
        for piece in pieces(weights, piece_bytes):
            size = sum(array.nbytes for array in piece.arrays.values())  # each tensor once
            assert size <= piece_bytes or len({block_of(name) for name in piece.arrays}) == 1, (piece_bytes, piece)
            for name, tensor in assembler.tensors(piece):
                assert name not in received, (piece_bytes, name)
                received[name] = tensor.clone()
        assert sorted(received) == sorted(weights) and not assembler.partial, piece_bytes
        for name, tensor in weights.items():
            assert torch.equal(received[name], tensor), (piece_bytes, name)
    embed_bytes = weights["model.embed_tokens.weight"].nbytes
    assert len([p for p in pieces(weights, embed_bytes // 4) if p.rows]) == 4  # the embedding in four pieces
    whole = list(pieces(weights, 0))  # 0: the weights in one piece, not copied
    assert len(whole) == 1 and not whole[0].rows
    assert all(
        _received(whole[0])[name].data_ptr() == weights[name].data_ptr() for name in weights if weights[name].numel()
    )


def test_a_sync_cut_short_leaves_no_rows_behind():
    """The next sync of a tensor sent in rows starts it afresh: rows of one cut short are never mixed in."""
    old, new = torch.randn(8, 4), torch.randn(8, 4)
    assembler = Assembler()
    first = next(pieces({"embed.weight": old}, 32))  # two rows a piece
    assert list(assembler.tensors(first)) == [] and assembler.partial  # held: more rows to come
    received = [tensor for piece in pieces({"embed.weight": new}, 32) for _, tensor in assembler.tensors(piece)]
    assert len(received) == 1 and torch.equal(received[0], new) and not assembler.partial
