"""What a valid configuration is.

:func:`check` is run by ``load_config``: every range and choice rule, then the rules across sections. It reads the
config and changes nothing. Choices come from the registries the code dispatches on (``algorithms``' dicts,
``modeling.DTYPES``, the seed modes, the prompt presets), so a name is valid exactly when something runs it. The
training backends and rollout engines import the config's types, so their registries' keys are named here
(:data:`STRATEGIES`, :data:`ENGINE_NAMES`, :data:`OPTIMIZER_IMPLS`) and tests/unit/test_config.py holds them equal to
``backends.BACKENDS``, ``rollout.ENGINES`` and ``policy.ADAMW_KERNELS``: the config layer imports no worker code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from rexthinker_rl.algo import algorithms
from rexthinker_rl.algo.rollout_correction import ROLLOUT_IS_LEVELS
from rexthinker_rl.config.schema import derive
from rexthinker_rl.data.prompts import PresetError, preset_for
from rexthinker_rl.errors import ConfigError
from rexthinker_rl.model.loading import ATTN_IMPLEMENTATIONS, DTYPES, SUPPRESSED_TOKENS
from rexthinker_rl.rollout.base import SEED_MODES

if TYPE_CHECKING:
    from rexthinker_rl.config.schema import Config

PLACEMENTS = ("colocate", "separate")  # read as Derived.colocated
PIPELINES = ("sync", "one_step_off")  # read as Derived.pipelined
DATA_ORDERS = ("ours", "easyr1")  # data.ResumableSampler
STRATEGIES = ("torch", "fsdp2", "deepspeed")  # backends.BACKENDS' keys
ENGINE_NAMES = ("vllm", "hf")  # rollout.ENGINES' keys
OPTIMIZER_IMPLS = ("fused", "foreach", "for-loop")  # train.policy.ADAMW_KERNELS' keys


def _positive(value: Any) -> bool:
    return value > 0


def _seed(value: Any) -> bool:
    return 0 <= value < 2**32  # NumPy's seed range; torch's and vLLM's take it too (no "Overflow" deep in a worker)


SEED = "a seed in 0..4294967295"


def _one_of(choices: Iterable) -> tuple[Callable[[Any], bool], str]:
    names = list(choices)
    return (lambda value: value in names), " | ".join(str(name) for name in names)


def _rule(key: str, choices: Iterable) -> tuple[str, Callable[[Any], bool], str]:
    ok, expected = _one_of(choices)
    return key, ok, expected


_CHOICES: list[tuple[str, Callable[[Any], bool], str]] = [
    _rule("model.dtype", DTYPES),
    _rule("rollout.dtype", DTYPES),
    _rule("model.attn_implementation", ATTN_IMPLEMENTATIONS),
    _rule("rollout.engine", ENGINE_NAMES),
    _rule("rollout.placement", PLACEMENTS),
    _rule("rollout.seed_mode", SEED_MODES),
    _rule("rollout.suppress_tokens", SUPPRESSED_TOKENS),
    _rule("data.order", DATA_ORDERS),
    _rule("actor.strategy", STRATEGIES),
    _rule("actor.zero_stage", (2, 3)),
    _rule("actor.lr_scheduler", ("constant", "cosine")),
    _rule("sft.lr_scheduler", ("constant", "cosine")),
    _rule("actor.optimizer_impl", OPTIMIZER_IMPLS),
    _rule("actor.policy_loss", algorithms.POLICY_LOSSES),
    _rule("actor.loss_agg_mode", algorithms.LOSS_AGGREGATIONS),
    _rule("algorithm.adv_estimator", algorithms.ADVANTAGE_ESTIMATORS),
    _rule("algorithm.kl_mode", ("loss", "reward", "none")),
    _rule("algorithm.kl_estimator", algorithms.KL_ESTIMATORS),
    _rule("algorithm.rollout_is", ("auto", *ROLLOUT_IS_LEVELS)),
    _rule("trainer.pipeline", PIPELINES),
    _rule("trainer.device", ("auto", "cpu", "cuda")),
]

_RANGES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("data.max_prompt_length", _positive, "a positive number of tokens"),
    ("data.max_response_length", _positive, "a positive number of tokens"),
    ("data.min_pixels", _positive, "a positive pixel count"),
    ("data.rollout_batch_size", _positive, "a positive number of prompts"),
    ("model.lora.rank", lambda v: v >= 0, "rank >= 0"),
    # Every advantage estimator (grpo | drgrpo | rloo) compares the responses to one prompt: a group of one has
    # advantage 0, and a run with rollout.n=1 would train on nothing, silently.
    ("rollout.n", lambda v: v >= 2, "a group size >= 2: the advantages compare responses to the same prompt"),
    ("rollout.temperature", lambda v: v >= 0, "temperature >= 0"),
    ("rollout.top_p", lambda v: 0 < v <= 1, "0 < top_p <= 1"),
    ("rollout.val_top_p", lambda v: 0 < v <= 1, "0 < val_top_p <= 1"),
    ("rollout.val_temperature", lambda v: v >= 0, "val_temperature >= 0 (0: greedy)"),
    ("data.val_batch_size", _positive, "a positive number of prompts"),
    ("rollout.gpu_memory_utilization", lambda v: 0 < v <= 1, "a share in (0, 1]"),
    ("rollout.tensor_parallel_size", _positive, "a positive integer"),
    ("rollout.mm_processor_cache_gb", lambda v: v >= 0, "a size in GiB >= 0 (0: no cache)"),
    ("rollout.weight_bucket_mb", lambda v: v >= 0, "a size in MiB >= 0 (0: the weights in one piece)"),
    ("rollout.num_gpus", lambda v: v >= 0, "a GPU count >= 0"),
    ("actor.global_batch_size", _positive, "a positive number of prompts"),
    ("actor.max_tokens_per_micro_batch", lambda v: v >= 0, "0 (off) or a positive token budget"),
    ("actor.logprob_chunk_tokens", lambda v: v >= 0, "0 (all logits at once) or a positive number of tokens"),
    ("actor.micro_batch_size_per_device_for_update", _positive, "a positive integer"),
    ("actor.micro_batch_size_per_device_for_experience", _positive, "a positive integer"),
    ("actor.lr", lambda v: 0 < v < 1, "0 < lr < 1"),
    ("actor.weight_decay", lambda v: v >= 0, "weight_decay >= 0"),
    ("actor.lr_warmup_ratio", lambda v: 0 <= v < 1, "0 <= ratio < 1"),
    ("actor.max_grad_norm", _positive, "a positive norm"),
    ("actor.clip_ratio_low", lambda v: 0 <= v < 1, "0 <= clip_ratio_low < 1"),
    ("actor.clip_ratio_high", lambda v: v >= 0, "clip_ratio_high >= 0"),
    ("actor.clip_ratio_dual", lambda v: v > 1, "a dual-clip bound > 1"),
    ("algorithm.kl_coef", lambda v: v >= 0, "kl_coef >= 0"),
    ("reward.timeout_s", lambda v: v >= 0, "0 (no limit) or a positive number of seconds"),
    ("algorithm.rollout_is_cap", lambda v: v >= 1, "a cap >= 1 on the importance weights"),
    ("algorithm.adv_eps", lambda v: v > 0, "a positive epsilon (GRPO divides by group std + adv_eps)"),
    ("trainer.seed", _seed, SEED),
    ("data.seed", _seed, SEED),
    ("rollout.seed", _seed, SEED),
    ("trainer.nnodes", _positive, "a positive number of nodes"),
    ("trainer.n_gpus_per_node", _positive, "a positive number of GPUs (CPU: processes) per node"),
    ("trainer.total_epochs", _positive, "a positive number of epochs"),
    ("trainer.total_steps", lambda v: v == -1 or v > 0, "-1 (total_epochs x batches per epoch) or a positive count"),
    ("trainer.resume", lambda v: bool(v), "auto | none | a checkpoint path"),
    ("logging.kl_to_ref_freq", lambda v: v >= 0, "0 (never) or every N steps"),
    ("sft.epochs", lambda v: v >= 0, "epochs >= 0"),
    ("sft.lr", lambda v: 0 < v < 1, "0 < lr < 1"),
    ("sft.batch_size", _positive, "a positive integer"),
    ("sft.lr_warmup_ratio", lambda v: 0 <= v < 1, "0 <= ratio < 1"),
    ("checkpoint.save_limit", lambda v: v == -1 or v > 0, "-1 or a positive count"),
]


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def check(config: Config) -> None:
    """Raise :class:`ConfigError` naming the key and what would be right, for the first rule ``config`` breaks."""
    for key, ok, expected in [*_CHOICES, *_RANGES]:
        value = _get(config, key)
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")
    data, actor = config.data, config.actor
    if data.rollout_batch_size % actor.global_batch_size:
        raise ConfigError(
            f"data.rollout_batch_size={data.rollout_batch_size} must be a multiple of "
            f"actor.global_batch_size={actor.global_batch_size}"
        )
    if data.min_pixels > data.max_pixels:
        raise ConfigError(f"data.min_pixels={data.min_pixels} exceeds data.max_pixels={data.max_pixels}")
    try:
        preset_for(data)
    except (PresetError, FileNotFoundError) as err:
        raise ConfigError(f"data.prompt_preset={data.prompt_preset!r}: {err}") from None
    _check_reward(config)
    _check_rollout_correction(config)
    if config.model.lora.rank > 0 and actor.strategy == "deepspeed":
        raise ConfigError(
            f"model.lora.rank={config.model.lora.rank} with actor.strategy=deepspeed is not supported: "
            "use actor.strategy=fsdp2 (or torch) for LoRA, or model.lora.rank=0"
        )
    _check_placement(config)


def _check_reward(config: Config) -> None:
    """One reward: reward.function or reward.components (``load_config`` has already cleared the default components
    where a function replaces them, so a function beside components here is a user's choice of both)."""
    reward = config.reward
    if reward.function and reward.components:
        raise ConfigError(
            f"reward.function={reward.function} and reward.components are both set: choose one (a single "
            "function, or weighted components; put the function in a component to combine it)"
        )
    if not reward.function and not reward.components:
        raise ConfigError("reward: set reward.function or reward.components")


def _check_rollout_correction(config: Config) -> None:
    derived = derive(config)
    if derived.rollout_is != "none" and config.rollout.temperature != 1:
        raise ConfigError(
            f"algorithm.rollout_is={derived.rollout_is} needs rollout.temperature=1 (got {config.rollout.temperature}"
            "): the engines report temperature-1 log-probs, the actor's are tempered"
            + (" (set algorithm.rollout_is=none to pipeline without the correction)" if derived.pipelined else "")
        )
    if derived.pipelined and derived.colocated:
        raise ConfigError(
            "trainer.pipeline=one_step_off needs rollout engines of their own: rollout.placement=separate (a colocated "
            "engine shares the actor's processes, so there is nothing to overlap)"
        )
    for key in ("actor.cpus", "rollout.cpus", "ref.cpus"):
        cores = list(_get(config, key))
        if len(set(cores)) != len(cores) or any(core < 0 for core in cores):
            raise ConfigError(f"{key}={cores} must list distinct core ids >= 0 (or be empty: every core)")
    if derived.colocated and (config.rollout.cpus or config.ref.cpus):
        raise ConfigError(
            "rollout.cpus and ref.cpus pin processes of their own; with rollout.placement=colocate the reference and "
            "the engine live in the actor's process: pin it with actor.cpus, or set rollout.placement=separate"
        )
    ranks, cores = derived.ranks_per_node, len(config.actor.cpus)
    if cores and cores % ranks:
        raise ConfigError(f"actor.cpus lists {cores} cores for {ranks} ranks a node: give a multiple of {ranks}")


def _check_placement(config: Config) -> None:
    rollout, tp = config.rollout, config.rollout.tensor_parallel_size
    # On CPU a separate rollout is one worker process, and beside the one torch actor process it shares that process's
    # GPU: rollout.num_gpus applies to a sharded actor's GPU runs only.
    gpus_apply = config.trainer.device != "cpu" and config.actor.strategy != "torch"
    if rollout.placement == "separate" and gpus_apply and (rollout.num_gpus <= 0 or rollout.num_gpus % tp):
        raise ConfigError(
            f"rollout.num_gpus={rollout.num_gpus} must be a positive multiple of "
            f"rollout.tensor_parallel_size={tp} with rollout.placement=separate"
        )
