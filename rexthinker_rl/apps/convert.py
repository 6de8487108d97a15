"""Checkpoint -> standard Hugging Face folder: ``rexthinker-convert CHECKPOINT OUT``.

CHECKPOINT is one of ours (``checkpoints/global_step_N``) or an EasyR1 actor checkpoint as Rex-Thinker's training writes
it (``global_step_N/actor`` or the ``global_step_N`` above it: rank files of DTensors and a ``huggingface/`` folder),
merged as Rex-Thinker's own converter merges it (``rexthinker_rl.model.easyr1_checkpoint``). The output holds
model.safetensors, config.json, generation config, tokenizer, processor and chat template, and loads with
``from_pretrained`` (and vLLM) like any Qwen2.5-VL checkpoint. No network. The folder is written under a temp name and
renamed into place. A LoRA checkpoint (base + adapters) is merged: the output is a plain model. An existing OUT is
replaced only with ``--overwrite`` and only when it is a model folder (``rexthinker_rl.run.outputs``): a data or run folder
is refused before anything is loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import load_file

from rexthinker_rl.apps.console import console_entry
from rexthinker_rl.config import ConfigError, load_config
from rexthinker_rl.model.easyr1_checkpoint import actor_folder, convert_easyr1
from rexthinker_rl.model.loading import load_model, load_processor, save_hf_folder
from rexthinker_rl.model.lora import is_lora_state, merge_into
from rexthinker_rl.run.outputs import OutputError, check_new_folder, is_model_folder, writing
from rexthinker_rl.train.checkpoint import CheckpointError, list_checkpoints, verify


def convert_checkpoint(
    checkpoint: str | Path, out: str | Path, overwrite: bool = False, trust_remote_code: bool = False
) -> Path:
    """Write the actor of ``checkpoint`` (a global_step_N folder, ours or EasyR1's) as a Hugging Face folder at
    ``out``. ``trust_remote_code`` applies to an EasyR1 checkpoint (ours take model.trust_remote_code from their
    config.yaml)."""
    easyr1 = actor_folder(checkpoint)
    if easyr1 is not None:
        return convert_easyr1(easyr1, out, overwrite, trust_remote_code)
    folder, target = Path(checkpoint), Path(out)
    check_new_folder(target, overwrite, is_model_folder, "Hugging Face model folder", "OUT", inputs=[folder])
    _check_is_checkpoint(folder)
    config = load_config(folder / "config.yaml")
    model_cfg, data = config.model, config.data
    # The base model and tokenizer are inputs too: OUT must not be (or hold) them.
    inputs = [folder, model_cfg.path, model_cfg.tokenizer_path]
    check_new_folder(target, overwrite, is_model_folder, "Hugging Face model folder", "OUT", inputs=inputs)
    # The base folder supplies the architecture, tokenizer and processor; the checkpoint supplies every weight.
    model = load_model(model_cfg.path, model_cfg.dtype, "sdpa", "cpu", model_cfg.trust_remote_code)
    weights = load_file(folder / "actor" / "model.safetensors")
    if is_lora_state(weights):
        try:
            model = merge_into(model, weights, model_cfg.lora)
        except ValueError as error:
            raise CheckpointError(f"{folder}: {error}") from error
        weights = model.state_dict()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [name for name in missing if not name.endswith("lm_head.weight")]:
        raise CheckpointError(
            f"{folder}: weights do not fit {model_cfg.path} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    processor = load_processor(
        model_cfg.tokenizer_path or model_cfg.path, data.min_pixels, data.max_pixels, model_cfg.trust_remote_code
    )
    return save_hf_folder(model, processor, target, overwrite, "OUT")


def _check_is_checkpoint(folder: Path) -> None:
    """A ``global_step_N`` folder that verifies; a run folder, its ``checkpoints/`` or a model folder is named as what
    it is, with the folder to pass instead."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder; pass a checkpoints/global_step_N folder of a run")
    checkpoints = folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder
    steps = list_checkpoints(checkpoints)
    if steps:
        what = "a run folder" if checkpoints != folder else "a run's checkpoints folder"
        final = "; its final/ is already a Hugging Face folder" if (folder / "final").is_dir() else ""
        raise CheckpointError(
            f"{folder} is {what}, not one checkpoint: pass one of its checkpoints, e.g. {steps[0]}, the newest{final}"
        )
    if is_model_folder(folder):
        raise CheckpointError(f"{folder} is already a Hugging Face model folder: nothing to convert")
    problem = verify(folder)
    if problem is not None:
        raise CheckpointError(f"{folder}: not a usable checkpoint ({problem})")


@console_entry("rexthinker-convert")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert a training checkpoint to a Hugging Face folder.")
    parser.add_argument(
        "checkpoint", help="a checkpoints/global_step_N folder, or an EasyR1 global_step_N(/actor) one"
    )
    parser.add_argument("out", help="output folder (new or empty; an existing model folder needs --overwrite)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT when it is a model folder (nothing else)"
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="an EasyR1 checkpoint's huggingface/ folder may run its own model code (off by default)",
    )
    args = parser.parse_args(argv)
    try:
        with writing(args.out, "OUT"):
            path = convert_checkpoint(args.checkpoint, args.out, args.overwrite, args.trust_remote_code)
    except (CheckpointError, ConfigError, FileNotFoundError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"Hugging Face folder written to {path}")


if __name__ == "__main__":
    main()
