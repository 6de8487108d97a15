"""``rexthinker-plan``: the memory a training config needs per GPU and per node, before anyone rents a GPU.

No weights are read: the model is built on the meta device from the model folder's ``config.json`` (or a named shape,
``--shape qwen2.5-vl-7b``, or a released model's known one for its hub id) to count its parameters by part. Per GPU and
per phase of a GRPO step (generate, log-prob passes, update, optimizer step): the actor's parameters, gradients and
AdamW state under the configured backend (torch, FSDP2, DeepSpeed ZeRO-2/3; mixed precision; offload), the units
gathered for compute, the activations of one micro-batch (gradient checkpointing on or off), the LM head's log-prob
memory (``actor.logprob_chunk_tokens``), the reference and vLLM's share (``rollout.gpu_memory_utilization``, its KV
cache against n x (prompt + response) tokens); whether it fits in ``--gpu-mem`` and which knob to turn first; and host
memory per node (each rank's full load, offloaded state, vLLM's sleeping weights).

The formulas (``activation_bytes``, ``head_bytes``) follow the tensors the code keeps; docs/scaling.md compares them
with measured CPU peaks (``benchmarks/bench_memory.py``). Assumed constants are named below, not measured on GPUs.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from rexthinker_rl.apps.console import console_entry
from rexthinker_rl.config import Config, ConfigError, load_config
from rexthinker_rl.model.shapes import HUB_SHAPES, hub_shape, shape_config

GIB = 2**30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CPU_RUNTIME_GIB = 0.75  # Python, torch, transformers and allocator slack of an actor process (measured on CPU)
CUDA_RUNTIME_GIB = 1.5  # CUDA context, cuBLAS/NCCL workspaces, allocator fragmentation (assumed)
HOST_RANK_GIB = 4.0  # a GPU rank process's own host memory: CUDA libraries, Python, Ray worker (assumed)
VLLM_ASLEEP_GIB = 0.5  # what a sleeping colocated vLLM engine keeps on its GPU (assumed)


@dataclass
class ModelShape:
    """Parameter counts by part (numbers of parameters) and the dimensions the activation formulas use."""

    total: int
    embed: int
    head: int  # 0 when tied to the embedding
    layer: int  # one text decoder block
    layers: int
    vision: int
    vision_block: int
    vision_depth: int
    lora_per_rank: int  # adapter parameters per unit of LoRA rank on model.lora.target_modules
    hidden: int
    intermediate: int
    kv_dim: int
    kv_heads: int
    vocab: int
    vision_hidden: int
    vision_intermediate: int

    @property
    def root(self) -> int:
        """FSDP2's root unit: everything outside decoder and vision blocks (embedding, head, norms, merger)."""
        return self.total - self.layers * self.layer - self.vision_depth * self.vision_block


def _hf_config(config: Config, shape: str):
    shape = shape or hub_shape(config.model.path)
    if shape:
        return shape_config(shape)
    from transformers import AutoConfig

    folder = Path(config.model.path)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model.path={config.model.path}: no config.json there; point it at a model folder, name a released "
            f"model ({', '.join(sorted(HUB_SHAPES))}) or pass --shape (e.g. --shape qwen2.5-vl-7b)"
        )
    return AutoConfig.from_pretrained(folder, trust_remote_code=config.model.trust_remote_code)


def model_shape(config: Config, shape: str = "") -> ModelShape:
    """Count the parameters of ``config.model.path`` (or the named ``shape``) on the meta device."""
    import torch
    from transformers import AutoModelForImageTextToText

    hf = _hf_config(config, shape)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(hf)
    text, vision = hf.get_text_config(), hf.vision_config
    blocks = {name: [m for m in model.modules() if type(m).__name__ == name] for name in model._no_split_modules}
    decoder = next(units for name, units in blocks.items() if "Decoder" in name)
    vision_blocks = next(units for name, units in blocks.items() if "Vision" in name)
    head, embed = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    targets = set(config.model.lora.target_modules)
    lora = sum(
        m.in_features + m.out_features
        for name, m in decoder[0].named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
    )
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    return ModelShape(
        total=count(model),
        embed=embed.numel(),
        head=0 if head is embed else head.numel(),
        layer=count(decoder[0]),
        layers=len(decoder),
        vision=count(model.model.visual),
        vision_block=count(vision_blocks[0]),
        vision_depth=len(vision_blocks),
        lora_per_rank=lora * len(decoder),
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        kv_dim=text.num_key_value_heads * (text.hidden_size // text.num_attention_heads),
        kv_heads=text.num_key_value_heads,
        vocab=text.vocab_size,
        vision_hidden=vision.hidden_size,
        vision_intermediate=vision.intermediate_size,
    )


def lora_params(config: Config, shape: ModelShape) -> int:
    return shape.lora_per_rank * config.model.lora.rank


def trainable_params(config: Config, shape: ModelShape) -> int:
    if config.model.lora.rank > 0:
        return lora_params(config, shape)
    return shape.total - (shape.vision if config.model.freeze_vision_tower else 0)


# ---------------------------------------------------------------------- Micro-batch sizes, activations and the LM head


def micro_tokens(config: Config, update: bool) -> tuple[int, int, int]:
    """(rows, tokens, response tokens) of the largest micro-batch of the update or of a no-grad log-prob pass."""
    data, actor = config.data, config.actor
    longest = data.max_prompt_length + data.max_response_length
    if actor.max_tokens_per_micro_batch > 0:
        tokens = max(actor.max_tokens_per_micro_batch, longest)
        rows = max(1, tokens // longest)
        return rows, tokens, tokens * data.max_response_length // longest
    rows = actor.micro_batch_size_per_device_for_update if update else actor.micro_batch_size_per_device_for_experience
    return rows, rows * longest, rows * data.max_response_length


def activation_bytes(config: Config, shape: ModelShape, update: bool) -> float:
    """Peak activation memory of one micro-batch. Per token and text block the backward keeps, in the compute dtype:
    two RMSNorm inputs and outputs, q/k/v (k, v repeated to every query head) and the attention output, the o_proj
    input (9 x hidden) and the MLP's gate, up, SiLU(gate) and product (4 x intermediate); a block's backward adds
    about 3 x intermediate of gradients. With gradient checkpointing only each block's input is kept and one block
    is recomputed at a time; a no-grad pass holds one block's transients (3 x intermediate + 5 x hidden)."""
    b = BYTES[config.model.dtype]
    h, inter = shape.hidden, shape.intermediate
    rows, tokens, _ = micro_tokens(config, update)
    saved_block = (4 * inter + 9 * h) * b
    if not update:
        per_token = (3 * inter + 5 * h) * b + 4 * h * b
    elif config.model.gradient_checkpointing:
        per_token = shape.layers * h * b + saved_block + 3 * inter * b + 4 * h * b
    else:
        per_token = shape.layers * saved_block + 3 * inter * b + 4 * h * b
    patches = config.data.max_pixels // (14 * 14)  # a frozen vision tower: one block's no-grad transients per image
    vision = rows * patches * (3 * shape.vision_intermediate + 5 * shape.vision_hidden) * b
    return tokens * per_token + vision


def head_bytes(config: Config, shape: ModelShape, update: bool) -> float:
    """The LM head's log-prob memory for one micro-batch (``rexthinker_rl.model.logprobs``): chunked, two float32
    (chunk x vocab) copies at a time (logits and probabilities; bf16 adds the matmul output and a cast); all at once,
    the (tokens x vocab) float32 logits, log-softmax and, in the update, the entropy's softmax and product (4 copies;
    a no-grad pass 2). A trainable head adds its float32 gradient accumulator; a frozen one two float32 vectors per
    token for the backward."""
    b, vocab, h = BYTES[config.model.dtype], shape.vocab, shape.hidden
    _, _, response = micro_tokens(config, update)
    chunk = config.actor.logprob_chunk_tokens
    low_precision_copies = 2 * 2 / 4 if b < 4 else 0  # bf16 matmul output and probabilities cast for p @ W
    if chunk <= 0:
        copies = (4 if update else 2) + (b / 4 if b < 4 else 0)
        return response * vocab * 4 * copies
    rows = min(chunk, response)
    total = rows * vocab * 4 * (2 + low_precision_copies)
    head_trains = config.model.lora.rank == 0
    if update and head_trains:
        total += vocab * h * (4 + (b if b < 4 else 0))
    elif update:
        total += response * h * 4 * (1 + (config.actor.entropy_coef != 0))
    return total


def _transient(config: Config, shape: ModelShape, update: bool, head: bool = True) -> float:
    """Activations and head at their joint peak: the head runs at the end of the forward (and first in backward),
    when only the kept block inputs (or, without checkpointing, every block's saved tensors) are alive."""
    b, h = BYTES[config.model.dtype], shape.hidden
    _, tokens, _ = micro_tokens(config, update)
    activations = activation_bytes(config, shape, update)
    if not head:
        return activations
    if not update:
        kept = 4 * h * b
    elif config.model.gradient_checkpointing:
        kept = (shape.layers + 4) * h * b
    else:
        kept = shape.layers * (4 * shape.intermediate + 9 * h) * b + 4 * h * b
    return max(activations, tokens * kept + head_bytes(config, shape, update))


def single_process_peaks(config: Config, shape: ModelShape, head: bool = True) -> dict[str, float]:
    """GiB of one actor process (``actor.strategy=torch``): the log-prob pass and the update; on CPU its resident
    set, on a GPU that device's memory. ``head=False``: without the LM head's memory (the benchmark's floor)."""
    b, trainable = BYTES[config.model.dtype], trainable_params(config, shape)
    runtime = CPU_RUNTIME_GIB if config.trainer.device == "cpu" else CUDA_RUNTIME_GIB
    resident = (
        runtime * GIB + (shape.total + lora_params(config, shape)) * b + 3 * trainable * b
    )  # weights, grads, AdamW moments
    return {
        "logprob": (resident + _transient(config, shape, False, head)) / GIB,
        "update": (resident + _transient(config, shape, True, head)) / GIB,
    }


# --------------------------------------------------------------------------------- One GPU of a sharded, colocated run


@dataclass
class Breakdown:
    """Bytes per component, per GPU, for each phase of a step (0 where a component is absent from a phase)."""

    phases: list[str] = field(default_factory=lambda: ["generate", "log-probs", "update", "step"])
    rows: dict[str, list[float]] = field(default_factory=dict)
    host: dict[str, float] = field(default_factory=dict)  # per node, steady state
    host_load: float = 0.0  # per node, while every rank reads its checkpoint
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, *per_phase: float) -> None:
        values = list(per_phase) if len(per_phase) > 1 else [per_phase[0]] * len(self.phases)
        self.rows[name] = [self.rows.get(name, [0.0] * len(self.phases))[i] + v for i, v in enumerate(values)]

    def totals(self) -> list[float]:
        return [sum(values[i] for values in self.rows.values()) for i in range(len(self.phases))]


def _actor_state(config: Config, shape: ModelShape, world: int, plan: Breakdown, ranks_per_node: int) -> None:
    """Parameters, gradients and AdamW state of one rank, on its GPU or (offloaded) in host memory."""
    actor, b = config.actor, BYTES[config.model.dtype]
    trainable = trainable_params(config, shape)
    params = shape.total + lora_params(config, shape)
    master = 4 if actor.mixed_precision and b < 4 else b
    if actor.strategy == "deepspeed":
        weights = params * b / (world if actor.zero_stage == 3 else 1)
        states = trainable * ((4 if b < 4 else 0) + 4 + 8) / world  # fp32 master, fp32 gradient partition, moments
        on_host = actor.offload_optimizer
        plan.add(
            "actor weights (bf16 partition)" if b < 4 else "actor weights", 0 if actor.offload_params else weights
        )
        plan.add("actor master, gradients, AdamW", 0 if on_host else states)
        host = (weights if actor.offload_params else 0) + (states if on_host else 0)
    else:
        shard = 1 if actor.strategy == "torch" else world
        weights, grads, moments = params * master / shard, trainable * master / shard, 2 * trainable * master / shard
        offload_all = actor.offload_params and actor.strategy == "fsdp2"
        plan.add(f"actor weights ({'fp32 ' if master == 4 else ''}shard)", 0 if offload_all else weights)
        plan.add("actor gradients", 0 if offload_all else grads)
        moments_on_gpu = 0 if offload_all else moments
        plan.add("actor AdamW moments", *[0 if actor.offload_optimizer else moments_on_gpu] * 3, moments_on_gpu)
        host = (weights + grads + moments) if offload_all else (moments if actor.offload_optimizer else 0)
    plan.host["actor offloaded state"] = plan.host.get("actor offloaded state", 0) + host * ranks_per_node
    load = params * (master if actor.strategy != "deepspeed" else b)  # every rank reads the full checkpoint first
    plan.host_load += ranks_per_node * load


def _gathered(config: Config, shape: ModelShape) -> float:
    """Full (unsharded) parameters held for compute: FSDP2 keeps its root unit (embedding, head, norms, merger)
    for the whole forward and backward and prefetches the next decoder block; ZeRO-3 gathers module by module.
    In the update their unsharded gradients come on top."""
    b = BYTES[config.model.dtype]
    if config.actor.strategy == "fsdp2":
        return (shape.root + 2 * shape.layer) * b
    if config.actor.strategy == "deepspeed" and config.actor.zero_stage == 3:
        return (max(shape.embed, shape.head) + 2 * shape.layer) * b
    return 0.0


@dataclass
class Rollout:
    """One vLLM engine's share of a GPU (bytes) and its KV cache against what the step's rollouts need."""

    share: float
    weights: float
    reserve: float
    kv_capacity: float
    kv_needed: float


def rollout_memory(config: Config, shape: ModelShape, gpu_mem: float, world: int) -> Rollout:
    rollout, data = config.rollout, config.data
    tp, rb = rollout.tensor_parallel_size, BYTES[rollout.dtype]
    share = rollout.gpu_memory_utilization * gpu_mem
    weights = shape.total * rb / tp
    # vLLM's profiling batch (max_num_batched_tokens through one block) and its sampler's float32 logits.
    reserve = rollout.max_num_batched_tokens * (2 * shape.intermediate / tp + 4 * shape.hidden) * rb
    reserve += rollout.max_num_seqs * shape.vocab * 4 * 2 + (0 if rollout.enforce_eager else 0.5 * GIB)
    kv_per_token = 2 * shape.layers * max(shape.kv_dim / tp, shape.kv_dim / shape.kv_heads) * rb
    engines = max(1, (rollout.num_gpus if rollout.placement == "separate" else world) // tp)
    prompts = math.ceil(data.rollout_batch_size / engines)
    prompt_copies = 1 if rollout.enable_prefix_caching else rollout.n
    tokens = prompts * (prompt_copies * data.max_prompt_length + rollout.n * data.max_response_length)
    return Rollout(share, weights, reserve, max(0.0, share - weights - reserve), tokens * kv_per_token)


def uses_reference(config: Config) -> bool:
    return config.derived.needs_reference_policy


def gpu_plan(config: Config, shape: ModelShape, gpu_mem: float) -> tuple[Breakdown, Rollout]:
    """Per-GPU bytes of each phase on an actor rank (with its colocated reference and vLLM slice), and host bytes."""
    world = config.derived.actor_world_size
    per_node = config.trainer.n_gpus_per_node if config.actor.strategy != "torch" else 1
    plan = Breakdown()
    plan.add("CUDA context and workspaces (assumed)", CUDA_RUNTIME_GIB * GIB)
    _actor_state(config, shape, world, plan, per_node)
    gathered = _gathered(config, shape)
    with_grads = 1 if config.model.lora.rank > 0 else 2  # the update's unsharded gradients await their reduce-scatter
    plan.add("gathered units (FSDP2 root + 2 blocks)", 0, gathered, gathered * with_grads, 0)
    transients = _transient(config, shape, False), _transient(config, shape, True)
    plan.add("activations + log-prob head, micro-batch", 0, *transients, 0)
    b = BYTES[config.model.dtype]
    if uses_reference(config):
        ref = (shape.total * b) / (world if config.actor.strategy != "torch" else 1)
        plan.add(
            "reference weights" + (" (offloaded)" if config.ref.offload_params else ""),
            0 if config.ref.offload_params else ref,
        )
        plan.host["reference offloaded"] = (ref if config.ref.offload_params else 0) * per_node
        plan.host_load += per_node * shape.total * b
    rollout = rollout_memory(config, shape, gpu_mem, world)
    if config.rollout.placement == "colocate":
        plan.add("vLLM (awake share / asleep)", rollout.share, *[VLLM_ASLEEP_GIB * GIB] * 3)
        # Sleep level 1 moves the engine's weights to host memory.
        plan.host["vLLM sleeping weights"] = rollout.weights * per_node
    else:
        plan.notes.append(
            f"rollout GPUs (separate): {rollout.share / GIB:.1f} GiB each, weights {rollout.weights / GIB:.1f}"
        )
    plan.host["rank processes (assumed)"] = HOST_RANK_GIB * GIB * per_node
    plan.host_load += HOST_RANK_GIB * GIB * per_node
    return plan, rollout


# ----------------------------------------------------------------------------------------- Verdict, knobs, report, CLI


def _knobs(config: Config, plan: Breakdown, gpu_mem: float) -> list[list[str]]:
    """Changes to try, cheapest in throughput first."""
    actor, candidates = config.actor, []
    if actor.logprob_chunk_tokens <= 0:
        candidates.append(["actor.logprob_chunk_tokens=256"])
    if not config.model.gradient_checkpointing:
        candidates.append(["model.gradient_checkpointing=true"])
    totals = plan.totals()
    if config.rollout.placement == "colocate" and totals[0] > gpu_mem:
        others = totals[0] - plan.rows["vLLM (awake share / asleep)"][0]
        share = math.floor((gpu_mem - others) / gpu_mem * 20) / 20
        if share >= 0.3:
            candidates.append([f"rollout.gpu_memory_utilization={share:.2f}"])
    if not actor.offload_optimizer:
        candidates.append(["actor.offload_optimizer=true"])
    if uses_reference(config) and not config.ref.offload_params:
        candidates.append(["ref.offload_params=true"])
    if actor.max_tokens_per_micro_batch > 0:
        candidates.append([f"actor.max_tokens_per_micro_batch={actor.max_tokens_per_micro_batch // 2}"])
    elif actor.micro_batch_size_per_device_for_update > 1:
        candidates.append(
            [f"actor.micro_batch_size_per_device_for_update={actor.micro_batch_size_per_device_for_update // 2}"]
        )
    if not actor.offload_params and actor.strategy != "torch":
        candidates.append(["actor.offload_params=true"])
    if config.model.lora.rank == 0:
        candidates.append(["model.lora.rank=64"])
    return candidates


@dataclass
class Verdict:
    peak: float
    phase: str
    fits: bool
    knob: list[str]
    knob_peak: float


def verdict(config_path: str | None, overrides: list[str], shape: ModelShape, gpu_mem: float) -> Verdict:
    """Whether the config fits, and if not, the first knob (of ``_knobs``) that makes it fit, else the best one."""
    config = load_config(config_path, overrides)
    plan, _ = gpu_plan(config, shape, gpu_mem)
    totals = plan.totals()
    peak = max(totals)
    phase = plan.phases[totals.index(peak)]
    if peak <= gpu_mem:
        return Verdict(peak, phase, True, [], peak)
    best: tuple[float, list[str]] = (peak, [])
    for knob in _knobs(config, plan, gpu_mem):
        trial, _ = gpu_plan(load_config(config_path, overrides + knob), shape, gpu_mem)
        trial_peak = max(trial.totals())
        if trial_peak <= gpu_mem:
            return Verdict(peak, phase, False, knob, trial_peak)
        best = min(best, (trial_peak, knob))
    return Verdict(peak, phase, False, best[1], best[0])


def report(
    config: Config, shape: ModelShape, plan: Breakdown, rollout: Rollout, result: Verdict, gpu_mem: float
) -> str:
    actor, world = config.actor, config.derived.actor_world_size
    lines = [
        f"model: {shape.total / 1e9:.2f}B parameters (embedding {shape.embed / 1e9:.2f}B, head {shape.head / 1e9:.2f}B, "
        f"{shape.layers} text blocks of {shape.layer / 1e6:.0f}M, vision {shape.vision / 1e9:.2f}B); trainable "
        f"{trainable_params(config, shape) / 1e9:.3f}B"
        + (f" (LoRA rank {config.model.lora.rank})" if config.model.lora.rank else ""),
        f"actor: {actor.strategy} on {world} GPU(s), {config.model.dtype} compute"
        + (", float32 master weights" if actor.mixed_precision and config.model.dtype != "float32" else "")
        + f", offload params {'on' if actor.offload_params else 'off'}, optimizer {'on' if actor.offload_optimizer else 'off'}",
        "micro-batch: {} rows, {} tokens ({} response); gradient checkpointing {}; log-prob chunk {}".format(
            *micro_tokens(config, True),
            "on" if config.model.gradient_checkpointing else "off",
            f"{actor.logprob_chunk_tokens} tokens" if actor.logprob_chunk_tokens > 0 else "off (all logits at once)",
        ),
        "",
        f"{'per GPU, GiB':<44}" + "".join(f"{phase:>11}" for phase in plan.phases),
    ]
    for name, values in plan.rows.items():
        lines.append(f"  {name:<42}" + "".join(f"{v / GIB:>11.1f}" for v in values))
    lines.append(f"  {'total':<42}" + "".join(f"{v / GIB:>11.1f}" for v in plan.totals()))
    kv = rollout.kv_capacity / max(rollout.kv_needed, 1)
    lines.append(
        f"vLLM: share {rollout.share / GIB:.1f} GiB = weights {rollout.weights / GIB:.1f} + reserve {rollout.reserve / GIB:.1f} "
        f"+ KV cache {rollout.kv_capacity / GIB:.1f}; the step's rollouts need {rollout.kv_needed / GIB:.1f} GiB of KV "
        f"per engine ({'all at once' if kv >= 1 else f'{kv:.0%} at a time'})"
    )
    lines += plan.notes
    verdict_line = f"fits on {gpu_mem / GIB:.0f} GiB" if result.fits else f"does NOT fit on {gpu_mem / GIB:.0f} GiB"
    lines.append(f"{verdict_line}: peak {result.peak / GIB:.1f} GiB in {result.phase}")
    if not result.fits:
        change = " ".join(result.knob) or "(no single knob suffices)"
        lines.append(f"turn first: {change} -> peak {result.knob_peak / GIB:.1f} GiB")
    host = "; ".join(f"{name} {value / GIB:.0f}" for name, value in plan.host.items() if value)
    lines.append(
        f"host memory per node, GiB: {sum(plan.host.values()) / GIB:.0f} steady ({host}); "
        f"{plan.host_load / GIB:.0f} while the ranks load the checkpoint (each reads it whole before sharding)"
    )
    return "\n".join(lines)


def parse_size(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(TiB|GiB|MiB|TB|GB|MB|T|G|M)?\s*", text)
    if not match or float(match.group(1)) <= 0:  # (0 GiB divided the KV-cache share by zero)
        raise ConfigError(f"--gpu-mem {text!r}: expected a size above 0 such as 80GiB, 40GB or 141G")
    units = dict(TiB=2**40, GiB=2**30, MiB=2**20, TB=1e12, GB=1e9, MB=1e6, T=2**40, G=2**30, M=2**20)
    return float(match.group(1)) * units[match.group(2) or "GiB"]


@console_entry("rexthinker-plan")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Per-GPU and per-node memory of a training config (no weights read).")
    parser.add_argument("config", nargs="?", default=None, help="YAML config (default: the built-in defaults)")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. actor.logprob_chunk_tokens=0")
    parser.add_argument(
        "--shape", default="", help="a named shape instead of model.path's config.json: qwen2.5-vl-7b, qwen2.5-vl-3b"
    )
    parser.add_argument("--gpus", type=int, default=None, help="GPUs per node (trainer.n_gpus_per_node)")
    parser.add_argument("--nodes", type=int, default=None, help="nodes (trainer.nnodes)")
    parser.add_argument("--gpu-mem", default="80GiB", help="memory of one GPU (80GiB, 40GB, ...)")
    args = parser.parse_intermixed_args(argv)
    config_path = args.config
    if config_path and "=" in config_path and not Path(config_path).exists():
        args.overrides, config_path = [config_path, *args.overrides], None
    overrides = list(args.overrides)
    counts = {"--gpus": ("trainer.n_gpus_per_node", args.gpus), "--nodes": ("trainer.nnodes", args.nodes)}
    for flag, (key, value) in counts.items():
        if value is not None and value <= 0:  # (an error ends in one line through the console handler: exit 2)
            raise ConfigError(f"{flag} {value}: expected a positive count ({key})")
        overrides += [f"{key}={value}"] if value is not None else []
    gpu_mem = parse_size(args.gpu_mem)
    config = load_config(config_path, overrides)
    if not args.shape and hub_shape(config.model.path):  # a released model's hub id: its shape is known
        print(f"model.path={config.model.path}: planned with its known shape, {hub_shape(config.model.path)}")
    shape = model_shape(config, args.shape)
    if config.trainer.device == "cpu":
        peaks = single_process_peaks(config, shape)
        print(
            f"CPU actor process (actor.strategy=torch): log-prob pass {peaks['logprob']:.2f} GiB, update {peaks['update']:.2f} GiB"
        )
        return
    plan, rollout = gpu_plan(config, shape, gpu_mem)
    print(report(config, shape, plan, rollout, verdict(config_path, overrides, shape, gpu_mem), gpu_mem))


if __name__ == "__main__":
    main()
