"""Loading a Qwen2.5-VL checkpoint (model and processor) the one way every component uses: trainer, workers, eval, tests.

The tiny offline model and a user's Qwen2.5-VL-7B go through exactly this code.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import torch

from rexthinker_rl.model.cpu_matmul import use_cpu_linear
from rexthinker_rl.model.tiny import VISION_SPECIAL_TOKENS
from rexthinker_rl.run.outputs import check_new_folder, is_model_folder, staging_folder, swap_folder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")  # auto: see resolve_attn_implementation


def vision_tower(model):
    """The model's vision encoder (patch embedding, blocks and the merger into the language model), or None."""
    inner = getattr(model, "model", model)
    return getattr(inner, "visual", None) or getattr(model, "visual", None)


def resolve_attn_implementation(requested: str, device: torch.device | str) -> str:
    """``auto`` picks flash_attention_2 on CUDA when flash-attn is installed, else sdpa."""
    if requested != "auto":
        return requested
    on_cuda = torch.device(device).type == "cuda"
    return "flash_attention_2" if on_cuda and importlib.util.find_spec("flash_attn") else "sdpa"


def check_model_path(path: str) -> None:
    """A local folder must hold a config.json; anything else is treated as a hub id (needs network)."""
    folder = Path(path)
    if not path:
        raise ValueError("model.path is empty: set it to a Qwen2.5-VL folder (e.g. model.path=/models/Qwen2.5-VL-7B)")
    if folder.exists() and not (folder / "config.json").is_file():
        if any(folder.glob("model_world_size_*_rank_0.pt")) or any(folder.glob("actor/model_world_size_*_rank_0.pt")):
            raise FileNotFoundError(
                f"model.path={path} is an EasyR1 actor checkpoint: convert it first with `rexthinker-convert {path} "
                "OUT` and use OUT (rexthinker-train converts it by itself)"
            )
        raise FileNotFoundError(f"model.path={path}: folder has no config.json (not a Hugging Face checkpoint folder)")
    if not folder.exists() and (folder.is_absolute() or path.startswith(".")):  # a local path, not a hub id
        raise FileNotFoundError(f"model.path={path}: no such folder; point it at a Hugging Face checkpoint folder")


# A folder's tokenizer: one of these file sets (transformers builds an EMPTY tokenizer, silently, from none of them).
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"), ("tokenizer.model",))


def check_processor_files(path: str) -> None:
    """A local model folder holds what the processor is built from: an image-processor config and a tokenizer. Each
    missing one is named (transformers would say "Can't load image processor ... huggingface.co", or build an empty
    tokenizer that fails much later as "Mismatch in image token count")."""
    folder = Path(path)
    if not folder.is_dir():
        return
    image = (folder / "preprocessor_config.json").is_file() or _bundled_image_processor(
        folder / "processor_config.json"
    )
    missing = [] if image else ["an image processor config (preprocessor_config.json)"]
    if not any(all((folder / name).is_file() for name in names) for names in TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json, or vocab.json + merges.txt)")
    if missing:
        raise FileNotFoundError(
            f"model folder {path} lacks {' and '.join(missing)}, which the processor is built from: copy the missing "
            "files from its base model's folder (e.g. Qwen2.5-VL-7B-Instruct's), or point model.tokenizer_path at a "
            "folder that has them"
        )


def _bundled_image_processor(file: Path) -> bool:
    """transformers 5 may keep the image processor's settings inside processor_config.json."""
    try:
        return file.is_file() and "image_processor" in json.loads(file.read_text())
    except (OSError, ValueError):
        return False


def load_processor(path: str, min_pixels: int, max_pixels: int, trust_remote_code: bool = False):
    """The checkpoint's processor with our pixel bounds (they decide the resized frame the boxes live in)."""
    from transformers import AutoProcessor

    check_model_path(path)
    check_processor_files(path)
    processor = AutoProcessor.from_pretrained(
        path,
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        trust_remote_code=trust_remote_code,
    )
    processor.tokenizer.padding_side = "left"
    return processor


def load_model(
    path: str,
    dtype: str = "float32",
    attn_implementation: str = "auto",
    device: torch.device | str = "cpu",
    trust_remote_code: bool = False,
):
    """A Qwen2.5-VL (or Qwen2-VL) for conditional generation, in ``dtype`` on ``device``, in train mode off; its
    nn.Linear layers are CpuLinear (a bfloat16 backward on CPU in float32 slices: ``model/cpu_matmul.py``)."""
    from transformers import AutoModelForImageTextToText

    check_model_path(path)
    model = AutoModelForImageTextToText.from_pretrained(
        path,
        dtype=DTYPES[dtype],
        attn_implementation=resolve_attn_implementation(attn_implementation, device),
        trust_remote_code=trust_remote_code,
    )
    use_cpu_linear(model)
    return model.to(device).eval()


def stored_parameter_count(path: str) -> int:
    """Elements of every tensor in the model folder's safetensors files (their headers only); 0 where there are none."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(file), "pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())  # noqa: SIM118
    return total


def model_skeleton(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """The model of ``path`` (its class, config and generation config) with no weights: every parameter on the meta
    device, for ``load_state_dict(weights, assign=True)``. Saving a LoRA run's merged model this way holds no second
    copy of the weights (a 7B's is 15 GB in float32)."""
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

    check_model_path(path)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(
            config, dtype=DTYPES[dtype], attn_implementation="sdpa", trust_remote_code=trust_remote_code
        )
    generation = Path(path) / "generation_config.json"
    if generation.is_file():  # from_pretrained reads it, from_config does not; a JSON file runs no code
        model.generation_config = GenerationConfig.from_dict(json.loads(generation.read_text()))
    return model.eval()


def save_hf_folder(
    model, processor, out: str | Path, overwrite: bool = False, key: str = "out", hint: str = "pass --overwrite"
) -> Path:
    """Write model + processor (tokenizer, chat template) as a Hugging Face folder: into a temp folder, then swapped in
    for ``out``, so a crash never leaves a half-written model under the real name. An existing ``out`` is replaced only
    with ``overwrite`` and only when it is a model folder (``rexthinker_rl.run.outputs``); a failed write (disk full)
    removes its temp folder and leaves an existing ``out`` as it was."""
    target = check_new_folder(out, overwrite, is_model_folder, "Hugging Face model folder", key, hint)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # this writer's own, left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = staging_folder(target)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return swap_folder(tmp, target)


# rollout.suppress_tokens -> the special tokens never sampled. image_pad is EasyR1's (vllm_rollout_spmd.py
# _get_logit_bias: the processor's image token only); vision adds the video and vision start/end/pad tokens.
SUPPRESSED_TOKENS: dict[str, tuple[str, ...]] = {
    "vision": tuple(VISION_SPECIAL_TOKENS),
    "image_pad": ("<|image_pad|>",),
    "none": (),
}


def suppressed_token_ids(tokenizer, choice: str = "vision") -> list[int]:
    """Ids of the ``rollout.suppress_tokens`` set present in this tokenizer (never to be sampled)."""
    vocab = tokenizer.get_vocab()
    return [vocab[token] for token in SUPPRESSED_TOKENS[choice] if token in vocab]


def vision_token_ids(tokenizer) -> list[int]:
    """Ids of the vision placeholder tokens present in this tokenizer."""
    return suppressed_token_ids(tokenizer, "vision")
