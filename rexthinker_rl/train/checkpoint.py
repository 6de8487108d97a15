"""Atomic checkpoints with a manifest, a tracker file, save_limit, and discovery of the newest complete one.

Layout of ``<output_dir>/checkpoints``::

    global_step_N/
        actor/model.safetensors     weights (Hugging Face names)
        actor/train_state.pt        optimizer, scheduler, the actor's RNG states (loaded with weights_only=True)
        trainer_state.json          step, data-sampler position, metric history
        rng_state.pt                the controller's RNG states (weights_only=True)
        config.yaml                 the resolved config
        manifest.json               sha256 and size of every file above, and the model's shape (written last)
    latest_checkpointed_iteration.txt   the newest complete step (updated after the folder is in place)

A checkpoint is written into a hidden temp folder and renamed into place, so a crash leaves either the previous state or
the new one, never half a checkpoint under a real name (a pruned one is renamed away before it is deleted); loading
re-checks the manifest and skips a corrupt folder, and reads ``.pt`` files as tensors and plain data only. Before any
worker starts, :func:`check_compatible` compares the shape recorded in the manifest (layers, widths, vocabulary, LoRA
adapters) with the configured model, so a resume onto another model fails with one line instead of deep in a worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from rexthinker_rl.run.lock import LOCK_FILE
from rexthinker_rl.run.outputs import OutputError, check_new_folder, check_writable, is_model_folder
from rexthinker_rl.utils import atomic_write_text

TRACKER = "latest_checkpointed_iteration.txt"
STEP_DIR = re.compile(r"^global_step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says which file and why (``details``: one more line
    each, e.g. one per checkpoint)."""

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


@dataclass
class Checkpoint:
    step: int
    weights: dict[str, torch.Tensor]
    train_state: dict[str, Any] | None
    trainer_state: dict[str, Any]
    path: Path
    rng_state: dict[str, Any] | None = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unshared(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` on CPU, contiguous, with no two sharing storage (safetensors refuses shared tensors: tied weights
    share theirs). Only a tensor whose storage was seen before is copied: a 7B model's weights are not all cloned
    before being written (15 GB of host memory in float32)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in weights.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if storage in seen else tensor
        seen.add(storage)
    return out


def save_checkpoint(
    root: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    train_state: dict[str, Any] | None,
    trainer_state: dict[str, Any],
    config_yaml: str,
    save_limit: int = -1,
    rng_state: dict[str, Any] | None = None,
    model_shape: dict[str, Any] | None = None,
) -> Path:
    """Write ``global_step_<step>`` atomically, update the tracker, then prune to ``save_limit``; ``model_shape``
    (:func:`model_signature`) goes into the manifest for :func:`check_compatible`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"global_step_{step}"
    tmp = root / f".tmp_global_step_{step}"
    for stale in [*root.glob(".tmp_global_step_*"), *root.glob(".trash_*")]:  # left by a crash mid-save or mid-delete
        shutil.rmtree(stale, ignore_errors=True)
    try:
        (tmp / "actor").mkdir(parents=True)
        save_file(_unshared(weights), tmp / "actor" / "model.safetensors")
        if train_state is not None:
            torch.save(train_state, tmp / "actor" / "train_state.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state))
        if rng_state is not None:
            torch.save(rng_state, tmp / "rng_state.pt")
        (tmp / "config.yaml").write_text(config_yaml)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(tmp)): {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in files}
        record = {"step": step, "files": manifest} | ({"model": model_shape} if model_shape is not None else {})
        (tmp / "manifest.json").write_text(json.dumps(record, indent=1))
        _fsync_tree(tmp)
        if final.exists():
            _discard(final)
        os.replace(tmp, final)
        atomic_write_text(root / TRACKER, str(step))
    except (OSError, RuntimeError, SafetensorError) as error:
        # torch.save reports a failed write as RuntimeError and safetensors as SafetensorError, not OSError.
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"could not save checkpoint {final}: {error} ({_free_space(root)}); the previous checkpoints and "
            f"{TRACKER} are unchanged"
        ) from error
    _prune(root, save_limit)
    return final


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free on that disk"
    except OSError:
        return "free space unknown"


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder, renaming it out of the ``global_step_*`` names first: a crash mid-delete must not
    leave half a checkpoint under a real name."""
    trash = folder.with_name(f".trash_{folder.name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _prune(root: Path, save_limit: int) -> None:
    if save_limit <= 0:
        return
    for old in list_checkpoints(root)[save_limit:]:
        _discard(old)


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under ``root``, newest step first (temp folders excluded)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def verify(folder: Path) -> str | None:
    """None when every file in the manifest is present with its checksum; else what is wrong."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return "no manifest.json (incomplete write)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"manifest.json is not valid JSON ({error})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(_is_entry(entry) for entry in files.values()):
        return (
            f"manifest.json holds no file list (a JSON object of files with sha256 and bytes; found {manifest!r:.60})"
        )
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
            return f"{name} does not match its checksum"
    return None


def _is_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("bytes"), int) and isinstance(entry.get("sha256"), str)


def find_resumable(root: Path) -> Path | None:
    """The newest checkpoint, verified; None when there is none. When the newest ones fail their check, refuses
    (CheckpointError naming each and why): starting over, or from an older one, would replace them."""
    unusable = []
    for folder in list_checkpoints(root):
        problem = verify(folder)
        if problem is None and not unusable:
            return folder
        if problem is None:
            raise CheckpointError(
                f"trainer.resume=auto: the newest checkpoints under {root} cannot be used, and resuming from the newest "
                f"usable one ({folder.name}) would replace them as the run reaches their steps: repair or move them, or "
                f"resume from it explicitly with trainer.resume={folder}; unusable:",
                unusable,
            )
        unusable.append(f"{folder.name}: {problem}")
    if unusable:
        raise CheckpointError(
            f"trainer.resume=auto: no checkpoint under {root} can be used, and starting over would replace them and "
            "the run's metrics: repair or move them, or choose a new trainer.output_dir; unusable:",
            unusable,
        )
    return None


def load_checkpoint(folder: Path, verified: bool = False) -> Checkpoint:
    """The checkpoint's contents; ``verified``: its manifest was checked moments ago (skip hashing it again)."""
    problem = None if verified else verify(folder)
    if problem is not None:
        raise CheckpointError(f"checkpoint {folder} is not usable: {problem}")
    train_state = _load_tensors_only(folder / "actor" / "train_state.pt")
    trainer_state = json.loads((folder / "trainer_state.json").read_text())
    weights = load_file(folder / "actor" / "model.safetensors")
    rng = _load_tensors_only(folder / "rng_state.pt")
    return Checkpoint(trainer_state["step"], weights, train_state, trainer_state, folder, rng)


def _load_tensors_only(path: Path) -> Any:
    """A ``.pt`` file this trainer wrote, or None when there is none."""
    if not path.is_file():
        return None
    return load_restricted(
        path, "tensors and plain data", "it was not written by this trainer or has been tampered with"
    )


def load_restricted(path: Path, holds: str, expected: str, allowed: list | None = None, **load_options) -> Any:
    """``torch.load`` restricted to tensors, plain data and the classes in ``allowed``: a pickle that names any other
    callable is refused, unrun, in one line naming the file, what it may hold (``holds``) and what was expected of it.
    ``load_options`` go to ``torch.load`` (``map_location``, ``mmap``)."""
    try:
        with torch.serialization.safe_globals(allowed or []):
            return torch.load(path, weights_only=True, **load_options)
    except pickle.UnpicklingError as error:
        # torch's own message ends by suggesting weights_only=False; for a file that may be tampered with, never.
        reason = str(error).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than {holds} ({reason}); {expected}"
        ) from None


def resolve_resume(resume: str, root: Path) -> Path | None:
    """``auto`` -> newest complete checkpoint under root (or None); ``none`` -> None; else that path, which must verify."""
    if resume == "none":
        return None
    if resume == "auto":
        return find_resumable(root)
    folder = Path(resume)
    if not folder.is_dir():
        raise CheckpointError(f"trainer.resume={resume}: no such checkpoint folder")
    problem = verify(folder)
    if problem is not None:
        raise CheckpointError(f"trainer.resume={resume}: not a usable checkpoint ({problem})")
    return folder


# ------------------------------------------------------------------------------------------------- compatibility
_TEXT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")
_VISION_KEYS = ("depth", "hidden_size", "out_hidden_size", "patch_size", "num_heads", "intermediate_size")


def model_signature(model_path: str, tokenizer_size: int, lora_cfg: Any) -> dict[str, Any]:
    """What must match for a checkpoint's weights to fit: the model's layer shapes, vocabulary, and LoRA adapters."""
    config_file = Path(model_path) / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    text, vision = config.get("text_config", config), config.get("vision_config", {})
    signature: dict[str, Any] = {"model_type": config.get("model_type"), "vocab_size": text.get("vocab_size")}
    signature |= {f"text.{key}": text.get(key) for key in _TEXT_KEYS}
    signature |= {f"vision.{key}": vision.get(key) for key in _VISION_KEYS}
    signature |= {"tokenizer_size": tokenizer_size, "lora.rank": lora_cfg.rank}
    if lora_cfg.rank > 0:  # alpha and targets change what the stored adapters mean
        signature |= {"lora.alpha": lora_cfg.alpha, "lora.target_modules": sorted(lora_cfg.target_modules)}
    return signature


def _stored_signature(folder: Path) -> dict[str, Any] | None:
    """The shape a checkpoint was trained with: from its manifest, else (older checkpoints) from the config.yaml it
    saved, when the model folder it names still exists; None when neither says."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if "model" in manifest:
        return manifest["model"]
    saved = OmegaConf.load(folder / "config.yaml").model
    path = saved.get("tokenizer_path") or saved.path
    if not saved.path or not (Path(saved.path) / "config.json").is_file():
        return None
    from transformers import AutoTokenizer

    size = len(AutoTokenizer.from_pretrained(path, trust_remote_code=bool(saved.trust_remote_code)))
    return model_signature(saved.path, size, saved.lora)


def check_compatible(folder: Path, signature: dict[str, Any], key: str) -> None:
    """CheckpointError, before any worker starts, when ``folder`` was trained with another model shape."""
    stored = _stored_signature(folder)
    if stored is None:
        return
    differences = [
        f"{name} {stored.get(name)!r} vs {value!r}" for name, value in signature.items() if stored.get(name) != value
    ]
    if differences:
        raise CheckpointError(
            f"{key}: checkpoint {folder} was trained with another model (checkpoint vs configured: "
            f"{'; '.join(differences)}); set model.path, model.tokenizer_path and model.lora.* to what it was trained "
            "with, or start a new run in a new trainer.output_dir"
        )


def check_run_folder(run_dir: Path, resume: str) -> None:
    """Before a run writes into ``run_dir``: it is new, empty or a run folder (config.yaml), its ``final/`` (if any) is
    a model folder, and ``trainer.resume=none`` does not train over an earlier run's checkpoints."""
    if run_dir.is_file():
        raise OutputError(f"trainer.output_dir={run_dir} is a file; give a folder")
    check_writable(run_dir, "trainer.output_dir")
    entries = [p for p in run_dir.iterdir() if p.name != LOCK_FILE] if run_dir.is_dir() else []
    if entries and not (run_dir / "config.yaml").is_file():
        names = ", ".join(sorted(p.name for p in entries)[:4])
        raise OutputError(
            f"trainer.output_dir={run_dir} is not empty and not a run folder (no config.yaml; holds {names}); a run "
            "writes and prunes files there: choose a new or empty folder"
        )
    check_new_folder(run_dir / "final", True, is_model_folder, "Hugging Face model folder", "trainer.output_dir/final")
    existing = list_checkpoints(run_dir / "checkpoints")
    if resume == "none" and existing:
        raise OutputError(
            f"trainer.resume=none but trainer.output_dir={run_dir} holds a run ({existing[0].name}, ...): training "
            "there would prune its checkpoints and replace its metrics; continue it with trainer.resume=auto, or choose "
            "a new trainer.output_dir"
        )
