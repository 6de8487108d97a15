"""EasyR1 actor checkpoints (what Rex-Thinker's training writes) read safely and merged into a Hugging Face folder.

An EasyR1 actor folder (``.../global_step_N/actor``) holds ``model_world_size_{W}_rank_{r}.pt`` for every rank, each
that rank's FSDP sharded state dict (``torch.distributed.checkpoint.state_dict.get_state_dict``: one DTensor per
parameter, sharded over a ``("fsdp",)`` or ``("ddp", "fsdp")`` device mesh), next to a ``huggingface/`` folder with
the config, generation config and processor. Rex-Thinker's ``tools/convert_easy_r1_ckpt_to_hugginface.py`` merges the
shards by concatenating each parameter's local pieces along its placement's dimension (a replicated parameter: rank
0's; a plain tensor: along dimension 0) and casts every tensor to bfloat16; :func:`merge_actor` does the same.

Unlike the original (``weights_only=False``), the rank files are read with ``torch.load(weights_only=True)`` allowing
only the DTensor classes (:data:`DTENSOR_CLASSES`): a file naming anything else is refused, in one line, unrun. The
names are those of the transformers the checkpoint was written with (for Qwen2.5-VL in transformers 4.51:
``model.layers.*``, ``visual.*``, ``lm_head.weight``); :func:`current_name` maps them to today's module names as
transformers' own conversion mapping for Qwen2.5-VL does, and ``save_pretrained`` writes them back in the on-disk
layout, so the folder's tensors equal the original converter's.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from rexthinker_rl.train.checkpoint import CheckpointError, load_restricted
from rexthinker_rl.utils import atomic_write_text

RANK_FILE = re.compile(r"^model_world_size_(\d+)_rank_(\d+)\.pt$")
MESH_NAMES = (("fsdp",), ("ddp", "fsdp"))  # the meshes EasyR1's FSDP workers build (and the original converter reads)
# transformers' conversion mapping for Qwen2-VL / Qwen2.5-VL ForConditionalGeneration (conversion_mapping.py): the
# vision tower moved under model.visual and the language model under model.language_model.
_RENAMES = ((re.compile(r"^visual"), "model.visual"), (re.compile(r"^model(?!\.(language_model|visual))"), "model.language_model"))  # fmt: skip


def dtensor_classes() -> list[type]:
    """Every class a pickled DTensor names: the tensor, its spec and metadata, placements and the device mesh."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
    from torch.distributed.tensor import _dtensor_spec as spec

    extra = [getattr(spec, name) for name in ("ShardOrderEntry",) if hasattr(spec, name)]  # newer torch only
    return [DTensor, spec.DTensorSpec, spec.TensorMeta, Shard, Replicate, Partial, DeviceMesh, *extra]


def actor_folder(path: str | Path) -> Path | None:
    """The EasyR1 actor folder at ``path`` (the actor folder itself, or the global_step_N folder holding it), or None."""
    if not str(path):
        return None
    for folder in (Path(path), Path(path) / "actor"):
        if folder.is_dir() and any(RANK_FILE.match(item.name) for item in folder.iterdir()):
            return folder
    return None


def rank_files(folder: Path) -> list[Path]:
    """The rank files of one world size, rank 0 first; every rank's file must be there."""
    sizes = sorted({int(match.group(1)) for item in folder.iterdir() if (match := RANK_FILE.match(item.name))})
    if len(sizes) != 1:
        raise CheckpointError(f"{folder}: rank files of world sizes {sizes}; keep one training run's files per folder")
    files = [folder / f"model_world_size_{sizes[0]}_rank_{rank}.pt" for rank in range(sizes[0])]
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise CheckpointError(f"{folder}: {len(missing)} of {sizes[0]} rank files missing ({', '.join(missing[:3])})")
    return files


def load_rank_file(path: Path) -> dict[str, Any]:
    """One rank's state dict: tensors, DTensors and plain data only (``weights_only=True``), memory-mapped."""
    import torch.distributed.tensor  # noqa: F401  (DTensor and its placements must be importable to unpickle)

    mesh_log = logging.getLogger("torch.distributed.device_mesh")
    level, mesh_log.level = mesh_log.level, logging.ERROR  # "unpickled before the PGs were created": expected here
    try:
        state = load_restricted(
            path, "tensors, DTensors and plain data", "an EasyR1 model file holds only those",
            dtensor_classes(), map_location="cpu", mmap=zipfile.is_zipfile(path),
        )  # fmt: skip
    except CheckpointError:
        raise
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable torch.save file ({str(error).splitlines()[0]})") from None
    finally:
        mesh_log.setLevel(level)
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise CheckpointError(f"{path}: not a state dict (a dict of parameter name -> tensor)")
    return state


def _placement(tensor: Any, mesh_names: tuple[str, ...], key: str, path: Path):
    """The one placement a DTensor is sharded by, the replicated ddp dimension of an HSDP mesh dropped."""
    placements = tuple(tensor.placements)[1:] if mesh_names[0] == "ddp" else tuple(tensor.placements)
    if len(placements) != 1:
        raise CheckpointError(f"{path}: {key} is placed {placements}: only FSDP (no tensor parallelism) is supported")
    if placements[0].is_partial():
        raise CheckpointError(
            f"{path}: {key} holds partial sums (placement {placements[0]}), which no merge completes"
        )
    return placements[0]


def merge_actor(folder: Path, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """The full state dict of an EasyR1 actor folder, as the checkpoint names it, every tensor in ``dtype``."""
    files = rank_files(folder)
    first = load_rank_file(files[0])
    from torch.distributed.tensor import DTensor

    pivot = first[sorted(first)[0]] if first else None
    mesh_names = tuple(pivot.device_mesh.mesh_dim_names or ()) if isinstance(pivot, DTensor) else ("fsdp",)
    if mesh_names not in MESH_NAMES:
        raise CheckpointError(
            f"{files[0]}: device mesh {mesh_names}; EasyR1's are {' or '.join(map(str, MESH_NAMES))}"
        )
    shards = pivot.device_mesh.mesh.shape[-1] if isinstance(pivot, DTensor) else len(files)
    states = [first] + [load_rank_file(path) for path in files[1:shards]]  # HSDP: the other ranks hold replicas
    merged: dict[str, torch.Tensor] = {}
    for key in first:
        pieces, placement = [], None
        for path, state in zip(files, states, strict=False):
            if key not in state:
                raise CheckpointError(f"{path}: no {key} (rank 0 has it): the rank files are not of one checkpoint")
            tensor = state[key]
            if isinstance(tensor, DTensor):
                placement = _placement(tensor, mesh_names, key, path)
                tensor = tensor.to_local()
            pieces.append(tensor.to(dtype))
        if placement is not None and placement.is_replicate():
            merged[key] = pieces[0]
        elif pieces[0].dim() == 0:
            raise CheckpointError(f"{files[0]}: {key} is a scalar on every rank: nothing to concatenate")
        else:
            merged[key] = torch.cat(pieces, dim=placement.dim if placement is not None else 0).contiguous()
    return merged


def current_name(key: str) -> str:
    """A Qwen2.5-VL parameter name of transformers 4.51 (``model.layers.0...``, ``visual.blocks.0...``) as today's
    module tree names it (``model.language_model.layers.0...``, ``model.visual.blocks.0...``); others unchanged."""
    for pattern, replacement in _RENAMES:
        key = pattern.sub(replacement, key, count=1)
    return key


def convert_easyr1(actor: Path, out: str | Path, overwrite: bool = False, trust_remote_code: bool = False) -> Path:
    """Merge the EasyR1 actor folder ``actor`` and write it, with its ``huggingface/`` config and processor, as a
    Hugging Face folder at ``out`` (atomically; an existing ``out`` only with ``overwrite`` and only a model folder).
    ``trust_remote_code`` is model.trust_remote_code: the config and processor load code from the folder only with it."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from rexthinker_rl.model.loading import save_hf_folder
    from rexthinker_rl.run.outputs import check_new_folder, is_model_folder

    check_new_folder(out, overwrite, is_model_folder, "Hugging Face model folder", "OUT", inputs=[actor])
    config_folder = actor / "huggingface"
    if not (config_folder / "config.json").is_file():
        raise CheckpointError(f"{actor}: no huggingface/config.json (EasyR1 writes the model's config there)")
    weights = {current_name(key): tensor for key, tensor in merge_actor(actor).items()}
    config = AutoConfig.from_pretrained(config_folder, trust_remote_code=trust_remote_code)
    with init_empty_weights(include_buffers=False):  # parameters on meta, then the checkpoint's tensors in place
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    missing, unexpected = model.load_state_dict(weights, strict=False, assign=True)
    missing = [name for name in missing if not (tied and name == "lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(
            f"{actor}: the merged weights do not fit huggingface/config.json (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )
    if tied:
        model.tie_weights()
    try:
        processor = AutoProcessor.from_pretrained(config_folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{config_folder}: no processor to save with the model ({error})") from None
    return save_hf_folder(model, processor, out, overwrite, "OUT")


def model_for_run(path: str, run_dir: Path, trust_remote_code: bool = False) -> str:
    """The model folder a run starts from: ``path`` itself, or for an EasyR1 checkpoint the Hugging Face folder it is
    converted to once, ``<run_dir>/easyr1_model`` (reused while the checkpoint's rank files are unchanged, as on a
    resume)."""
    actor = actor_folder(path)
    if actor is None:
        return path
    target, record_file = run_dir / "easyr1_model", run_dir / "easyr1_model.json"
    source = {"actor": str(actor.resolve()), "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in
                                                       rank_files(actor)}}  # fmt: skip
    if (target / "config.json").is_file() and record_file.is_file() and json.loads(record_file.read_text()) == source:
        return str(target)
    print(f"model.path={path}: an EasyR1 actor checkpoint; converting it once to {target}", flush=True)
    # Replaces only a model folder: an earlier conversion of this run.
    convert_easyr1(actor, target, overwrite=True, trust_remote_code=trust_remote_code)
    atomic_write_text(record_file, json.dumps(source, indent=2))
    return str(target)
