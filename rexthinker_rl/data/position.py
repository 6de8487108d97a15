"""The data settings a checkpoint's sampler position depends on: recorded in every checkpoint, compared before a resume.

The sampler saves its position as ``(epoch, batch_in_epoch)``: which rows those are depends on the rows themselves
(how many survived the scan, and which), the batch size, shuffling, the data seed and how the order is drawn
(``data.order``). A resume with any of them changed would silently skip or repeat rows (another batch size), or fail
after Ray started (fewer rows). So each checkpoint
records them (``trainer_state.json``, key ``data``), and a resume compares them with the configured run before any
worker starts, refusing with one line naming the key and both values. No position is converted: with another batch
size the steps themselves would mean other batches (and ``trainer.total_steps`` another amount of data), so the run
must resume with the settings it was trained with, or start anew.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from rexthinker_rl.train.checkpoint import CheckpointError

# What each recorded value is called in the config (rows and rows_fingerprint follow from data.train_files and the
# filters: data.max_prompt_length, data.filter_overlong_prompts, the pixel bounds).
KEYS = {
    "rows": "usable rows of data.train_files",
    "rows_fingerprint": "the rows of data.train_files (their prompts and answers)",
    "rollout_batch_size": "data.rollout_batch_size",
    "shuffle": "data.shuffle",
    "seed": "data.seed",
    "order": "data.order",
}
# Values a record written before the setting existed stands for (data.order came later; until then: ours).
RECORDED_BEFORE = {"order": "ours"}


def data_settings(dataset, data_cfg) -> dict[str, Any]:
    """What the sampler's position means for ``dataset`` (the training set) under ``data_cfg``."""
    digest = hashlib.sha256()
    for prompt, answer in dataset.kept_texts():
        digest.update(json.dumps([prompt, answer]).encode())
    return {
        "train_files": str(data_cfg.train_files),
        "rows": len(dataset),
        "rows_fingerprint": digest.hexdigest()[:16],
        "rollout_batch_size": data_cfg.rollout_batch_size,
        "shuffle": data_cfg.shuffle,
        "seed": data_cfg.seed,
        "order": data_cfg.order,
    }


def check_data_position(folder: Path, settings: dict[str, Any], batches_per_epoch: int, key: str) -> None:
    """CheckpointError, before any worker starts, when ``folder`` was trained with other data settings (or, for a
    checkpoint that predates the record, when its position does not fit this data)."""
    state = json.loads((folder / "trainer_state.json").read_text())
    saved, position = state.get("data"), state.get("sampler", {})
    # A checkpoint that predates the record: its sampler position still names its order.
    recorded = {"order": position.get("order", "ours")} if saved is None else {**RECORDED_BEFORE, **saved}
    changed = [name for name in KEYS if name in recorded and recorded[name] != settings[name]]
    if changed:
        name = changed[0]
        files = f" (data.train_files was {saved['train_files']})" if saved is not None else ""
        raise CheckpointError(
            f"{key}: checkpoint {folder.name} was trained with {KEYS[name]} = {recorded[name]!r}, this run has "
            f"{settings[name]!r}{files}: its data position (epoch {position.get('epoch')}, batch "
            f"{position.get('batch_in_epoch')}) would mean other rows; resume with the data settings it was trained "
            "with, or start a new run in a new trainer.output_dir"
        )
    if not 0 <= position.get("batch_in_epoch", 0) < batches_per_epoch:
        raise CheckpointError(
            f"{key}: checkpoint {folder.name} stopped at batch {position.get('batch_in_epoch')} of an epoch, but "
            f"data.train_files makes {batches_per_epoch} batches an epoch: it was trained with other data or "
            "another data.rollout_batch_size; resume with those, or start a new run in a new trainer.output_dir"
        )
