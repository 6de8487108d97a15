"""Weights across Ray without copies: the actor's tensors go into the object store as NumPy arrays, which Ray writes
out of band (straight from the tensor's memory into shared memory) and hands to the reader as views of that shared
memory. A dict of torch tensors would be pickled instead: a second copy of the model in the actor's heap while it is
written, and another in each engine's heap while it is read.

Measured with a 1 GiB dict between two Ray actors (docs/performance.md, "End to end vs TRL at Qwen2.5-VL-3B's
shape"): returning torch tensors peaked the writer at +2 GiB and the reader at +1 GiB of its own; as arrays, +1 GiB
of shared memory each, the same pages. Tensors that share their memory (a tied embedding and LM head) are sent once
and named twice.

A sync sends the weights in pieces (``pieces``, rollout.weight_bucket_mb), whole blocks each: the shared-memory
pages a sync touches stay resident (in the store, and counted in the resident size of every process that touched
them) after the objects are freed, so the whole model in one object kept its size in memory for the rest of the run,
beside the actor's update.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# NumPy has no bfloat16 (nor float8): such tensors travel as the same bytes under an integer type of their width.
_CARRIERS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass
class SharedWeights:
    """Named tensors as arrays (each distinct memory once), their torch dtypes, and the names that alias another."""

    arrays: dict[str, np.ndarray]
    dtypes: dict[str, torch.dtype]
    aliases: dict[str, str]
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Names whose tensor is a range of rows of a larger one (``pieces``): its first row, and the whole one's rows."""

    def tensors(self):
        """``(name, tensor)`` in the order sent; each tensor a view of the received memory (read-only: load it by
        copying, as engines do)."""
        for name, array in self.arrays.items():
            yield name, _as_tensor(array, self.dtypes[name])
        for name, target in self.aliases.items():
            yield name, _as_tensor(self.arrays[target], self.dtypes[target])


def _as_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    with warnings.catch_warnings():  # Ray's shared memory is read-only: engines copy the weights in, never write
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(array)
    return tensor if tensor.dtype == dtype else tensor.view(dtype)


def _as_array(tensor: torch.Tensor) -> np.ndarray:
    try:
        return tensor.numpy()
    except TypeError:  # a dtype NumPy lacks (bfloat16, float8): its bytes under an integer type of the same width
        return tensor.view(_CARRIERS[tensor.element_size()]).numpy()


def share(weights: dict[str, torch.Tensor], rows: dict[str, tuple[int, int]] | None = None) -> SharedWeights:
    """Pack ``weights`` (on any device; moved to CPU) for Ray without copying CPU tensors; ``rows``: see
    ``SharedWeights.rows``."""
    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, torch.dtype] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple | str, str] = {}
    for name, tensor in weights.items():
        tensor = tensor.detach().cpu()
        key = _memory_of(name, tensor)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        arrays[name] = _as_array(tensor)
        dtypes[name] = tensor.dtype
    return SharedWeights(arrays, dtypes, aliases, dict(rows or {}))


def _memory_of(name: str, tensor: torch.Tensor) -> tuple | str:
    """What two names of one tensor share (an empty tensor is its own)."""
    return (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype) if tensor.numel() else name


def block_of(name: str) -> str:
    """The unit a piece of the weights never splits: a numbered block (``model.layers.3``, ``visual.blocks.0``), else
    the tensor's module. An engine may fuse tensors of one block (vLLM loads q, k and v into one matrix) and must get
    them together: vLLM's in-place reload rebuilds a layer it got only part of."""
    parts = name.split(".")
    for index, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: index + 1])
    return ".".join(parts[:-1])


def pieces(
    weights: dict[str, torch.Tensor], piece_bytes: int, dtype: torch.dtype | None = None
) -> Iterator[SharedWeights]:
    """``weights`` shared (``share``) in pieces of about ``piece_bytes`` each (0: one piece), whole blocks
    (:func:`block_of`) in order, floating-point tensors cast to ``dtype`` one piece at a time. Names that share a tensor
    (a tied embedding and LM head) go in the same piece, so the tensor still travels once. A block larger than a piece
    goes alone; if it is one tensor (an embedding, an LM head) it goes in ranges of rows, which the receiver's
    :class:`Assembler` puts back together: at Qwen2.5-VL-3B's shape the embedding is 1.2 GB in float32."""
    piece: dict[str, torch.Tensor] = {}
    size = 0
    for block in _blocks(weights):
        block_bytes = sum(_cast_bytes(weights[names[0]], dtype) for names in block)
        if piece and piece_bytes > 0 and size + block_bytes > piece_bytes:
            yield share(piece)
            piece, size = {}, 0
        tensor = weights[block[0][0]]
        if piece_bytes > 0 and block_bytes > piece_bytes and len(block) == 1 and tensor.dim() and len(tensor) > 1:
            step = max(1, piece_bytes * len(tensor) // block_bytes)
            for start in range(0, len(tensor), step):
                part = _cast(tensor[start : start + step], dtype)
                yield share(dict.fromkeys(block[0], part), dict.fromkeys(block[0], (start, len(tensor))))
            continue
        for names in block:
            piece.update(dict.fromkeys(names, _cast(weights[names[0]], dtype)))
        size += block_bytes
    if piece:
        yield share(piece)


def _blocks(weights: dict[str, torch.Tensor]) -> list[list[list[str]]]:
    """The names of ``weights`` by block (in order of first appearance), and within a block by tensor."""
    names_of: dict[tuple | str, list[str]] = {}
    for name, tensor in weights.items():
        names_of.setdefault(_memory_of(name, tensor), []).append(name)
    blocks: dict[str, list[list[str]]] = {}
    for names in names_of.values():
        blocks.setdefault(block_of(names[0]), []).append(names)
    return list(blocks.values())


class Assembler:
    """The receiving end of :func:`pieces`: whole tensors pass through as they arrive; a tensor sent in ranges of rows
    is held (a copy in the receiver's heap) until its last rows arrive, then passed on with its aliases."""

    def __init__(self) -> None:
        self.partial: dict[str, tuple[torch.Tensor, int]] = {}

    def tensors(self, weights: SharedWeights) -> Iterator[tuple[str, torch.Tensor]]:
        """``weights.tensors()``, with row ranges held back until the tensor they belong to is whole."""
        whole: dict[str, torch.Tensor] = {}
        for name, tensor in weights.tensors():  # the sent tensors first, then their aliases
            target = weights.aliases.get(name, name)
            if target not in weights.rows:
                yield name, tensor
            elif target in whole:
                yield name, whole[target]
            elif name == target:
                start, total = weights.rows[name]
                buffer, filled = self.partial.pop(name) if start and name in self.partial else (None, 0)
                if buffer is None:  # the first rows (a sync cut short before leaves nothing behind)
                    buffer = torch.empty((total, *tensor.shape[1:]), dtype=tensor.dtype)
                buffer[start : start + len(tensor)] = tensor
                if filled + len(tensor) < total:
                    self.partial[name] = (buffer, filled + len(tensor))
                else:
                    whole[name] = buffer
                    yield name, buffer


def _sent_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """What ``tensor`` travels as: ``dtype`` if it is floating point, else its own."""
    return dtype if dtype is not None and tensor.is_floating_point() else tensor.dtype


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor.detach().to(_sent_dtype(tensor, dtype))


def _cast_bytes(tensor: torch.Tensor, dtype: torch.dtype | None) -> int:
    return tensor.numel() * _sent_dtype(tensor, dtype).itemsize


@dataclass
class SharedTree:
    """A structure of dicts, lists and tuples whose tensors travel as arrays (``share``): an optimizer's state and
    the other parts of a checkpoint, which pickled would be copied once more into the sender's heap (at Qwen2.5-VL-3B's
    shape: 4.3 GB of AdamW moments beside the 8.7 GB the actor holds)."""

    skeleton: Any  # the structure, each tensor replaced by its _Slot
    weights: SharedWeights

    def tree(self) -> Any:
        """The structure with its tensors back: views of the received memory (read-only: save or copy them)."""
        tensors = dict(self.weights.tensors())
        return _map_leaves(self.skeleton, lambda leaf: tensors[leaf.name] if isinstance(leaf, _Slot) else leaf)


@dataclass(frozen=True)
class _Slot:
    name: str


def share_tree(tree: Any) -> SharedTree:
    tensors: dict[str, torch.Tensor] = {}

    def slot(leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor):
            return leaf
        tensors[name := str(len(tensors))] = leaf
        return _Slot(name)

    skeleton = _map_leaves(tree, slot)
    return SharedTree(skeleton, share(tensors))


def _map_leaves(node: Any, leaf: Callable[[Any], Any]) -> Any:
    """``node`` with every leaf (anything but a dict, list or tuple) replaced by ``leaf(it)``, in order."""
    if isinstance(node, dict):
        return {key: _map_leaves(value, leaf) for key, value in node.items()}
    if isinstance(node, (list, tuple)):
        values = [_map_leaves(value, leaf) for value in node]
        return type(node)(*values) if hasattr(node, "_fields") else type(node)(values)  # a named tuple takes arguments
    return leaf(node)
