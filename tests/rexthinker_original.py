"""Rex-Thinker's data and evaluation code paths, re-implemented for the tests from reading the original
(IDEA-Research/Rex-Thinker; files and lines cited). The tests hold our tools equal to these. Written here, not copied;
nothing outside the tests imports this module.
"""

from __future__ import annotations

import io
import json
import math
import re

import jinja2
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = 28) -> tuple[int, int]:
    """qwen-vl-utils' smart_resize, which convert_dataset.py and eval.py import: ``(height, width)``; both sides
    rounded to the factor (at least one factor), then scaled down (floor) or up (ceil) into the pixel bounds."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def map_boxes(boxes, width: int, height: int, min_pixels: int = 16 * 28 * 28, max_pixels: int = 1280 * 28 * 28):
    """convert_dataset.py lines 61-100 (also tools/inference_tools.py 282-317, evaluation/eval.py 99-123): each
    coordinate becomes int(x / width * resized_width) (truncation), then is clamped to [0, resized size - 1]."""
    resized_height, resized_width = smart_resize(height, width, min_pixels, max_pixels)
    out = []
    for x0, y0, x1, y1 in boxes:
        x0 = int(x0 / width * resized_width)
        x1 = int(x1 / width * resized_width)
        y0 = int(y0 / height * resized_height)
        y1 = int(y1 / height * resized_height)
        out.append(
            [
                max(0, min(x0, resized_width - 1)),
                max(0, min(y0, resized_height - 1)),
                max(0, min(x1, resized_width - 1)),
                max(0, min(y1, resized_height - 1)),
            ]
        )
    return out


def convert_row(record: dict, image_bytes: bytes) -> dict:
    """One parquet row of convert_dataset.py for a record with candidates: lines 199-217 (hint under the first
    candidate's category, every candidate box mapped, the single ``ans`` box as the answer, the problem text), 103-150
    (the answer: fenced ``json.dumps`` of [{"bbox_2d", "label"}]), 16-31 and 51-55 (the image as RGB PNG bytes, and
    "<image>" before the problem)."""
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    width, height = image.size
    candidates = record["candidate_boxes"]
    hint = json.dumps({f"{candidates[0]['category']}": map_boxes([c["bbox"] for c in candidates], width, height)})
    answer = [{"bbox_2d": box, "label": record["referring"]} for box in map_boxes([record["ans"]], width, height)]
    problem = (
        f"Hint: Object and its coordinates in this image: {hint}\nPlease detect {record['referring']} in this image."
    )
    png = io.BytesIO()
    image.save(png, format="PNG")
    return {"images": png.getvalue(), "problem": "<image>" + problem, "answer": f"```json\n{json.dumps(answer)}\n```"}


def write_parquet(rows: list[dict], path) -> None:
    """The original's parquet (convert_dataset.py lines 242-244: pandas -> pyarrow): images as raw binary."""
    table = pa.table(
        {
            "images": pa.array([row["images"] for row in rows], pa.binary()),
            "problem": pa.array([row["problem"] for row in rows], pa.string()),
            "answer": pa.array([row["answer"] for row in rows], pa.string()),
        }
    )
    pq.write_table(table, path)


def eval_predictions(output: str, input_width: int, input_height: int, width: int, height: int) -> list:
    """evaluation/eval.py lines 84-96 (every bracketed list, numbers with a dot as floats, others as ints) and 184-210
    (each list unpacked as x0, y0, x1, y1 and scaled by original / input size; any failure -> no boxes at all)."""
    try:
        lists = [
            [float(num) if "." in num else int(num) for num in match.split(",")]
            for match in re.findall(r"\[([0-9\.]+(?:, ?[0-9\.]+)*)\]", output)
        ]
        boxes = []
        for box in lists:
            x0, y0, x1, y1 = box
            boxes.append(
                [
                    x0 / input_width * width,
                    y0 / input_height * height,
                    x1 / input_width * width,
                    y1 / input_height * height,
                ]
            )
        return boxes
    except Exception:
        return []


def clean_up_tokenization(text: str) -> str:
    """What eval.py's ``batch_decode(..., clean_up_tokenization_spaces=True)`` (line 74-76) did in the transformers
    4.x it ran on: transformers' PreTrainedTokenizerBase.clean_up_tokenization."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):  # fmt: skip
        text = text.replace(before, after)
    return text


# ------------------------------------------------------------------------------------------------- prompts
# chat_template.json of the Hugging Face model Qwen/Qwen2.5-VL-7B-Instruct (the template Rex-Thinker-GRPO-7B ships
# with): a fact to reproduce, kept here to hold our rendering to it.
QWEN25VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

# The reasoning instruction as the original's files hold it.
# rexthinker/scripts/r1v_format.jinja, the whole file (one line and a newline):
R1V_FORMAT_FILE = (
    "{{ content | trim }} A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>\n"
)
# demo/inference_single_image.py line 17 (SYSTEM_PROMPT), evaluation/eval.py line 12 (THINK_PROMPT) and the system
# prompt box of demo/gradio_demo.py line 389 are this same string: the format file's sentence plus a final period.
THINK_PROMPT = R1V_FORMAT_FILE.removeprefix("{{ content | trim }} ").rstrip("\n") + "."
# The Plain model's system prompt, as its authors give it (IDEA-Research/Rex-Thinker issue 21).
PLAIN_SYSTEM = "You are a helpful assistant. Directly answer the question without thinking."


def original_grpo_messages(hints: dict, referring: str) -> list[dict]:
    # rexthinker/tools/dataset_tools/convert_dataset.py lines 209-217: the hint JSON (json.dumps) and the problem;
    # line 53: process_line prefixes "<image>".
    problem = "<image>" + (
        f"Hint: Object and its coordinates in this image: {json.dumps(hints)}\nPlease detect {referring} in this image."
    )
    # EasyR1 as vendored in rexthinker/verl/utils/dataset.py lines 120-123 and 131-146: the format file, stripped, is a
    # jinja Template rendered with content=problem; the text is split at "<image>" into an image part and non-empty
    # text parts; one user message, no system message.
    prompt = jinja2.Template(R1V_FORMAT_FILE.strip()).render(content=problem)
    content = []
    for index, piece in enumerate(prompt.split("<image>")):
        if index != 0:
            content.append({"type": "image"})
        if piece:
            content.append({"type": "text", "text": piece})
    return [{"role": "user", "content": content}]


def original_infer_messages(hints: dict, referring: str) -> list[dict]:
    # demo/inference_single_image.py lines 110-133 (and demo/gradio_demo.py lines 106-127, the same text).
    question = (
        f"Hint: Object and its coordinates in this image: {json.dumps(hints)}\nPlease detect {referring} in the image."
    )
    return [
        {"role": "system", "content": THINK_PROMPT},
        {"role": "user", "content": [{"type": "image", "image": None}, {"type": "text", "text": question}]},
    ]


def original_eval_messages(boxes: list, referring: str, system: str = THINK_PROMPT) -> list[dict]:
    # evaluation/eval.py lines 148-149 (the template), 166-169 (the record's candidate boxes, mapped, under "person"),
    # 175-176 (the two replacements, in that order) and 50-60 (the messages; THINK_PROMPT replaces whatever system
    # prompt is passed to inference()).
    prompt_w_candidate = "<CANDIDATES>\nLocate <REFERRING> in the image and answer the question in json format."
    prompt = prompt_w_candidate.replace("<REFERRING>", referring)
    prompt = prompt.replace("<CANDIDATES>", f"Hint: {json.dumps({'person': boxes})}")
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": [{"type": "image", "image": None}, {"type": "text", "text": prompt}]},
    ]


def our_messages(hints: dict, referring: str) -> list[dict]:
    # Ours, unchanged by the presets: the problem our converters write, the instruction after a newline, the system
    # prompt "You are a helpful assistant." (the behaviour before presets existed).
    problem = (
        f"Hint: Object and its coordinates in this image: {json.dumps(hints)}\nPlease detect {referring} in the image."
    )
    instruction = (
        "First think about the reasoning process in the mind and then provide the answer. The reasoning process and "
        "answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
        "<think> reasoning process here </think><answer> answer here </answer>."
    )
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{problem}\n{instruction}"}]},
    ]


# ------------------------------------------------------------------------------------------------ the paper run
def easyr1_epochs(num_rows: int, batch_size: int, seed: int, epochs: int) -> list[list[list[int]]]:
    """The batches of each epoch as EasyR1 draws them for Rex-Thinker (rexthinker/verl/trainer/data_loader.py lines
    42-45: torch's RandomSampler over a Generator seeded once with data.seed; lines 49-57: batches of
    rollout_batch_size, drop_last=True; ray_trainer.py lines 476-477: the same loader iterated once an epoch). The
    batches are cut by torch's own BatchSampler, which asks the sampler past the end of the epoch as torchdata's does
    (pytorch/data torchdata/stateful_dataloader/sampler.py, _BatchSamplerIterator.__next__)."""
    generator = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.RandomSampler(range(num_rows), generator=generator)
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last=True)
    return [list(batches) for _ in range(epochs)]


# rexthinker/verl/workers/rollout/config.py line 29: RolloutConfig.seed defaults to 1 (config.yaml and the launch script
# leave it); vllm_rollout_spmd.py lines 93-104 copy every config field SamplingParams has (seed among them) into the one
# SamplingParams every generate call uses; lines 106-120 and ray_trainer.py line 297: validation changes only the keys
# of val_override_config (config.yaml lines 61-63: temperature 0.5, n 1), so top-p stays config.yaml line 55's 0.99.
EASYR1_REQUEST_SEED = 1
EASYR1_VALIDATION = {"temperature": 0.5, "n": 1, "top_p": 0.99, "seed": EASYR1_REQUEST_SEED}


def easyr1_logit_bias(processor) -> dict[int, float]:
    """vllm_rollout_spmd.py lines 41-47: the processor's image token, and only it, biased by -100."""
    return {processor.tokenizer.convert_tokens_to_ids(processor.image_token): -100}


# -------------------------------------------------------------------------------------- the original's own files
# IDEA-Research/Rex-Thinker is under the IDEA License 1.0 (non-commercial research use; redistribution must carry the
# license), and its toy images are COCO pictures under their own licenses: its files are not copied into this
# repository. Tests read them from a clone named by REXTHINKER_ORIGINAL (a work tree, or a bare git directory, e.g. the
# one `git clone --mirror` makes) and are skipped without one.
ORIGINAL_REPO_ENV = "REXTHINKER_ORIGINAL"
TOY_DATASET = "rexthinker/tools/dataset_tools/toy_dataset"


def original_file(path: str) -> bytes | None:
    """The bytes of ``path`` in the Rex-Thinker clone named by $REXTHINKER_ORIGINAL, or None (no clone, no file)."""
    import os
    import subprocess
    from pathlib import Path

    root = os.environ.get(ORIGINAL_REPO_ENV)
    if not root:
        return None
    folder = Path(root)
    if (folder / path).is_file():
        return (folder / path).read_bytes()
    if (folder / "HEAD").is_file() or (folder / ".git").exists():
        git_dir = folder / ".git" if (folder / ".git").exists() else folder
        done = subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"], capture_output=True, check=False
        )
        return done.stdout if done.returncode == 0 else None
    return None


def add_candidates_record(anno: dict, detections: list[list[float]]) -> dict:
    """add_candidates_by_grounding_dino.py lines 196-204 for one record: the detections as candidates, and the `ans` box
    appended last when no detection has IoU >= 0.5 with it (lines 65-90: IoU over the boxes' areas, 0 without overlap;
    the best box is sought only among IoUs >= 0.5)."""

    def iou(first, second):
        width = max(0, min(first[2], second[2]) - max(first[0], second[0]))
        height = max(0, min(first[3], second[3]) - max(first[1], second[1]))
        inter = width * height
        if inter == 0:
            return 0.0
        area = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1])
        return inter / (area - inter)

    boxes = [list(box) for box in detections]
    if not any(iou(anno["ans"], box) >= 0.5 for box in boxes):
        boxes.append(anno["ans"])
    return {**anno, "candidate_boxes": [{"bbox": box, "category": anno["category"]} for box in boxes]}


# --------------------------------------------------------------------------------------- EasyR1 actor checkpoints
def easyr1_merge(folder) -> dict:
    """tools/convert_easy_r1_ckpt_to_hugginface.py, the merge: the world size from the rank-0 file's name (lines
    74-83); the mesh from rank 0's first key in sorted order (lines 88-99; a plain tensor: one "fsdp" dimension of the
    world size) and its last dimension's size as the number of rank files read (lines 108-132); per key (lines
    134-157): each rank's local tensor in bfloat16, the placements without the leading "ddp" one; then (lines 161-178)
    a replicated placement keeps the first piece, a sharded one concatenates the pieces along its dimension, a plain
    tensor concatenates along dimension 0. Names are left as the checkpoint has them. Files the test wrote itself are
    read as the original reads them (weights_only=False)."""
    import os
    from pathlib import Path

    from torch.distributed.tensor import DTensor

    folder = Path(folder)
    world_size = next(
        m.group(1) for n in os.listdir(folder) if (m := re.match(r"model_world_size_(\d+)_rank_0\.pt", n))
    )

    def load(rank):
        return torch.load(
            folder / f"model_world_size_{world_size}_rank_{rank}.pt", map_location="cpu", weights_only=False
        )

    first = load(0)
    pivot = first[sorted(first)[0]]
    if isinstance(pivot, DTensor):
        total, names = pivot.device_mesh.mesh.shape[-1], pivot.device_mesh.mesh_dim_names
    else:
        total, names = int(world_size), ("fsdp",)
    states = [first] + [load(rank) for rank in range(1, total)]
    merged = {}
    for key in first:
        pieces, placements = [], None
        for state in states:
            tensor = state[key]
            if isinstance(tensor, DTensor):
                pieces.append(tensor._local_tensor.bfloat16())
                placements = tuple(tensor.placements)[1:] if names[0] == "ddp" else tuple(tensor.placements)
            else:
                pieces.append(tensor.bfloat16())
        if placements is None:
            merged[key] = torch.cat(pieces, dim=0)
        elif placements[0].is_replicate():
            merged[key] = pieces[0]
        else:
            merged[key] = torch.cat(pieces, dim=placements[0].dim).contiguous()
    return merged


def transformers_451_name(key: str) -> str:
    """Today's Qwen2.5-VL module names as transformers 4.51 (Rex-Thinker's requirements.txt pins 4.51.3) named them."""
    return re.sub(r"^model\.language_model\.", "model.", re.sub(r"^model\.visual\.", "visual.", key))


def write_easyr1_actor(rank: int, world_size: int, model_dir: str, actor: str) -> None:
    """One rank of EasyR1's save (rexthinker/verl/utils/checkpoint/fsdp_checkpoint_manager.py lines 80-113): the
    model wrapped in FSDP (full shard, a unit per decoder / vision block, as EasyR1's auto-wrap by _no_split_modules),
    its sharded state dict (a DTensor per parameter, get_state_dict with cpu_offload) saved as this rank's file with
    the names of transformers 4.51; rank 0 adds huggingface/ (config, generation config, processor)."""
    from pathlib import Path

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from rexthinker_rl.model.loading import load_model, load_processor

    model = load_model(model_dir, "float32", "sdpa", "cpu")
    blocks = {type(module) for module in model.modules() if type(module).__name__ in model._no_split_modules}
    mesh = init_device_mesh("cpu", (world_size,), mesh_dim_names=("fsdp",))
    wrapped = FullyShardedDataParallel(
        model,
        device_mesh=mesh,
        sharding_strategy=ShardingStrategy.FULL_SHARD,
        auto_wrap_policy=ModuleWrapPolicy(blocks),
        device_id=torch.device("cpu"),
    )
    optimizer = torch.optim.AdamW(wrapped.parameters(), lr=1e-6)
    state, _ = get_state_dict(wrapped, optimizer, options=StateDictOptions(cpu_offload=True))
    folder = Path(actor)
    torch.save({transformers_451_name(k): v for k, v in state.items()}, folder / f"model_world_size_2_rank_{rank}.pt")
    torch.distributed.barrier()
    if rank == 0:
        model.config.save_pretrained(folder / "huggingface")
        config_file = folder / "huggingface" / "config.json"
        config_file.write_text(json.dumps(transformers_451_config(json.loads(config_file.read_text())), indent=2))
        model.generation_config.save_pretrained(folder / "huggingface")
        load_processor(model_dir, 12544, 12544).save_pretrained(folder / "huggingface")
    torch.distributed.barrier()


def transformers_451_config(config: dict) -> dict:
    """A Qwen2.5-VL config.json of today's layout in transformers 4.51's (what EasyR1 of the time saved): the text
    model's keys at the top level, mRoPE as rope_scaling {"type": "mrope", ...} with rope_theta beside it."""
    text = config["text_config"]
    old = {key: value for key, value in config.items() if key not in ("text_config", "dtype")}
    old |= {key: value for key, value in text.items() if key not in ("rope_parameters", "model_type")}
    old["rope_scaling"] = {"type": "mrope", "mrope_section": text["rope_parameters"]["mrope_section"]}
    old |= {"rope_theta": text["rope_parameters"]["rope_theta"], "torch_dtype": "float32"}
    return old | {"transformers_version": "4.51.3"}
