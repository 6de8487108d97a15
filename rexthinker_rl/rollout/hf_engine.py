"""transformers ``generate`` rollout engine: the fallback when vLLM is not installed, and the parity reference."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rexthinker_rl.config import compute_device
from rexthinker_rl.model.loading import load_model, load_processor, suppressed_token_ids
from rexthinker_rl.rollout.base import RolloutPrompt, RolloutResult, SamplingSpec


class HFEngine:
    """``colocated`` changes nothing here: the model is in this process either way, and holds no cache to free."""

    def __init__(self, config, model_path: str, model=None, processor=None, colocated: bool = False) -> None:
        data = config.data
        self.device = compute_device(config)
        self.processor = processor or load_processor(
            model_path, data.min_pixels, data.max_pixels, config.model.trust_remote_code
        )
        self.model = model or load_model(
            model_path,
            config.rollout.dtype,
            config.model.attn_implementation,
            self.device,
            config.model.trust_remote_code,
        )
        self.suppressed = suppressed_token_ids(self.processor.tokenizer, config.rollout.suppress_tokens)
        self.eos_ids = _eos_ids(self.model, self.processor.tokenizer)

    @torch.no_grad()
    def generate(self, prompts: list[RolloutPrompt], sampling: SamplingSpec) -> list[RolloutResult]:
        results = []
        for index, prompt in enumerate(prompts):
            results.extend(self._generate_one(index, prompt, sampling))
        return results

    def _generate_one(self, index: int, prompt: RolloutPrompt, sampling: SamplingSpec) -> list[RolloutResult]:
        inputs = self.processor(text=[prompt.prompt_text], images=[prompt.image], return_tensors="pt").to(self.device)
        if prompt.seed is not None:
            torch.manual_seed(prompt.seed)
        elif sampling.seed is not None:
            torch.manual_seed(sampling.seed + index)
        sample_kwargs = {}
        if not sampling.greedy:
            sample_kwargs = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
            sample_kwargs["top_k"] = sampling.top_k if sampling.top_k > 0 else None
        out = self.model.generate(
            **inputs,
            **(sample_kwargs or {"do_sample": False}),
            max_new_tokens=sampling.max_tokens,
            num_return_sequences=sampling.n,
            suppress_tokens=self.suppressed or None,
            eos_token_id=self.eos_ids,
            pad_token_id=self.processor.tokenizer.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        prompt_len = inputs["input_ids"].shape[1]
        # Raw logits (before temperature/top-p/suppression), as vLLM reports: (steps, n, vocab) -> (n, steps)
        raw = torch.stack(out.logits, dim=1).float().log_softmax(-1)
        results = []
        for row in range(sampling.n):
            ids = out.sequences[row, prompt_len:].tolist()
            length = _response_length(ids, self.eos_ids)
            ids = ids[:length]
            logprobs = raw[row, torch.arange(length), torch.tensor(ids, dtype=torch.long)].tolist()
            finish = "stop" if length and ids[-1] in self.eos_ids else "length"
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
            results.append(RolloutResult(index, ids, logprobs, text, finish))
        return results

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        state = dict(named_tensors)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected:
            raise KeyError(f"load_weights: unknown parameter names {unexpected[:5]}")

    def sleep(self) -> None:
        """Nothing to release: the HF engine holds no KV cache between calls."""

    def wake(self) -> None:
        """See sleep()."""


def _eos_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id
    ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return sorted(set(ids) | {tokenizer.eos_token_id} - {None})


def _response_length(ids: list[int], eos_ids: list[int]) -> int:
    """Tokens up to and including the first EOS (the rest is padding from batched generation)."""
    for position, token in enumerate(ids):
        if token in eos_ids:
            return position + 1
    return len(ids)
