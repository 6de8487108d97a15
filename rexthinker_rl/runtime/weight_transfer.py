"""Weights across Ray without copies: the actor's tensors go into the object store as NumPy arrays, which Ray writes
out of band (straight from the tensor's memory into shared memory) and hands to the reader as views of that shared
memory. A dict of torch tensors would be pickled instead: a second copy of the model in the actor's heap while it is
written, and another in each engine's heap while it is read.

Measured with a 1 GiB dict between two Ray actors (docs/performance.md, "End to end vs TRL at Qwen2.5-VL-3B's
shape"): returning torch tensors peaked the writer at +2 GiB and the reader at +1 GiB of its own; as arrays, +1 GiB
of shared memory each, the same pages. Tensors that share their memory (a tied embedding and LM head) are sent once
and named twice.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
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


def share(weights: dict[str, torch.Tensor]) -> SharedWeights:
    """Pack ``weights`` (on any device; moved to CPU) for Ray without copying CPU tensors."""
    arrays: dict[str, np.ndarray] = {}
    dtypes: dict[str, torch.dtype] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in weights.items():
        tensor = tensor.detach().cpu()
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        arrays[name] = _as_array(tensor)
        dtypes[name] = tensor.dtype
    return SharedWeights(arrays, dtypes, aliases)


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
