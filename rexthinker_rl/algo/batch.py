"""The typed record that crosses the Ray boundary between controller and workers: a batch of prompt+response sequences.

Layout (verl-style): prompts left-padded to a common length P, responses right-padded to R, so the response of every
row sits at columns [P, P + R) and its log-probabilities come from the logits at [P - 1, P + R - 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from rexthinker_rl.algo.algorithms import Normalisers, count_tokens_and_seqs

if TYPE_CHECKING:
    from rexthinker_rl.config import Config


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # (batch, P + R)
    attention_mask: torch.Tensor  # (batch, P + R)
    mm_token_type_ids: torch.Tensor  # (batch, P + R), 1 on image tokens (Qwen2.5-VL's mRoPE needs it)
    response_mask: torch.Tensor  # (batch, R), 1 on real response tokens
    pixel_values: torch.Tensor  # (sum of patches, patch_dim), sequences in row order
    image_grid_thw: torch.Tensor  # (batch, 3)
    prompt_length: int  # P
    old_logprobs: torch.Tensor | None = None  # (batch, R)
    ref_logprobs: torch.Tensor | None = None  # (batch, R)
    rollout_logprobs: torch.Tensor | None = None  # (batch, R): the sampler's (behaviour policy's), 0 on padding
    advantages: torch.Tensor | None = None  # (batch,)
    is_placeholder: bool = False  # a row that carries no loss, for a rank without rows (:meth:`placeholder`)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def response_length(self) -> int:
        return self.response_mask.shape[1]

    def select(self, rows: list[int] | range) -> SequenceBatch:
        """The sub-batch of ``rows``, pixel rows included (each sequence owns t*h*w patch rows)."""
        rows = list(rows)
        patches = self.image_grid_thw.prod(dim=1)  # (batch,)
        starts = torch.cumsum(patches, 0) - patches
        pixel_rows = torch.cat([torch.arange(starts[r], starts[r] + patches[r]) for r in rows])
        index = torch.tensor(rows, dtype=torch.long)

        def pick(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor[index]

        return replace(
            self,
            input_ids=self.input_ids[index],
            attention_mask=self.attention_mask[index],
            mm_token_type_ids=self.mm_token_type_ids[index],
            response_mask=self.response_mask[index],
            pixel_values=self.pixel_values[pixel_rows],
            image_grid_thw=self.image_grid_thw[index],
            old_logprobs=pick(self.old_logprobs),
            ref_logprobs=pick(self.ref_logprobs),
            rollout_logprobs=pick(self.rollout_logprobs),
            advantages=pick(self.advantages),
        )

    def to_device(self, device: torch.device | str) -> SequenceBatch:
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device, non_blocking=True)

        return replace(
            self,
            **{name: move(getattr(self, name)) for name in _TENSOR_FIELDS},
        )

    def chunks(self, size: int) -> list[SequenceBatch]:
        return [self.select(range(start, min(start + size, len(self)))) for start in range(0, len(self), size)]

    def trimmed(self) -> SequenceBatch:
        """The same rows without the columns that are padding in every row (left of the prompts, right of the
        responses). Positions are unchanged: Qwen2.5-VL derives (m)RoPE positions from the attention mask."""
        prompt_real = self.attention_mask[:, : self.prompt_length].bool().any(0)
        first = int(prompt_real.nonzero()[0]) if prompt_real.any() else self.prompt_length
        response_real = self.response_mask.bool().any(0)
        keep = int(response_real.nonzero()[-1]) + 1 if response_real.any() else 1
        if first == 0 and keep == self.response_length:
            return self
        columns = slice(first, self.prompt_length + keep)

        def cut(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor[:, :keep]

        return replace(
            self,
            input_ids=self.input_ids[:, columns],
            attention_mask=self.attention_mask[:, columns],
            mm_token_type_ids=self.mm_token_type_ids[:, columns],
            response_mask=self.response_mask[:, :keep],
            prompt_length=self.prompt_length - first,
            old_logprobs=cut(self.old_logprobs),
            ref_logprobs=cut(self.ref_logprobs),
            rollout_logprobs=cut(self.rollout_logprobs),
        )

    def length_sorted_chunks(self, size: int) -> list[tuple[list[int], SequenceBatch]]:
        """Micro-batches of up to ``size`` rows of similar length, each trimmed of its shared padding, with the row
        indices they hold. Sorting by length before chunking is what keeps padded compute close to the real tokens
        (a GRPO batch mixes 20-token rejections with 160-token answers); the token-mean loss, scaled by global
        counts, does not depend on how rows are grouped."""
        lengths = self.attention_mask.sum(1).tolist()
        order = sorted(range(len(self)), key=lambda row: -lengths[row])  # stable: ties keep their order
        groups = [order[start : start + size] for start in range(0, len(order), size)]
        return [(rows, self.select(rows).trimmed()) for rows in groups]

    def real_lengths(self) -> list[int]:
        """Tokens per row that are not padding (prompt + response)."""
        return self.attention_mask.sum(1).tolist()

    def placeholder(self) -> SequenceBatch:
        """One row (a copy of row 0) that carries no loss: its response mask and advantage are zero. A data-parallel
        rank with no rows of its own runs it, because sharded backends need every rank in every forward."""
        row = self.select([0])
        row.response_mask = torch.zeros_like(row.response_mask)
        if row.advantages is not None:
            row.advantages = torch.zeros_like(row.advantages)
        row.is_placeholder = True
        return row

    def micro_batch_count(self, size: int, max_tokens: int = 0, packed: bool = False) -> int:
        """How many micro-batches :meth:`micro_batches` needs for these rows (1 for a placeholder)."""
        if self.is_placeholder:
            return 1
        if max_tokens > 0:
            return len(token_budget_groups(self.real_lengths(), max_tokens, packed))
        return math.ceil(len(self) / size)

    def micro_batches(
        self, size: int, max_tokens: int = 0, count: int | None = None, packed: bool = False
    ) -> list[tuple[list[int], SequenceBatch]]:
        """Micro-batches with the row indices they hold, each trimmed of shared padding.

        ``max_tokens`` > 0: dynamic micro-batches by token budget (a packed micro-batch costs the sum of its rows'
        real lengths, a padded one rows x its longest row), rows balanced across them by length; otherwise up to
        ``size`` rows each (as :meth:`length_sorted_chunks`). ``count``: exactly this many micro-batches (every
        data-parallel rank must run the same number), the ones without rows filled by :meth:`placeholder`."""
        if max_tokens > 0:
            groups = token_budget_groups(self.real_lengths(), max_tokens, packed, count or 1)
        else:
            groups = [rows for rows, _ in self.length_sorted_chunks(size)] if len(self) else []
        needed = len(groups) if count is None else count
        if len(groups) > needed:
            raise ValueError(f"{len(groups)} micro-batches are needed but only {needed} were agreed")
        chunks = [(rows, self.select(rows).trimmed()) for rows in groups if rows]
        return chunks + [([], self.placeholder()) for _ in range(needed - len(chunks))]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "mm_token_type_ids": self.mm_token_type_ids,
            "pixel_values": self.pixel_values,
            "image_grid_thw": self.image_grid_thw,
        }


_TENSOR_FIELDS = (
    "input_ids",
    "attention_mask",
    "mm_token_type_ids",
    "response_mask",
    "pixel_values",
    "image_grid_thw",
    "old_logprobs",
    "ref_logprobs",
    "rollout_logprobs",
    "advantages",
)


def encode_prompts(processor, prompt_texts: list[str], images: list) -> list[dict[str, torch.Tensor]]:
    """Processor outputs for each prompt alone (image placeholders expanded), computed once per prompt."""
    encoded = []
    for text, image in zip(prompt_texts, images, strict=True):
        out = processor(text=[text], images=[image], return_tensors="pt")
        if "mm_token_type_ids" not in out:  # older transformers: derive it from the image token id
            out["mm_token_type_ids"] = (out["input_ids"] == processor.image_token_id).to(torch.int32)
        encoded.append({key: out[key] for key in ("input_ids", "mm_token_type_ids", "pixel_values", "image_grid_thw")})
    return encoded


def build_sequence_batch(
    encoded_prompts: list[dict[str, torch.Tensor]],
    prompt_indices: list[int],
    responses: list[list[int]],
    pad_token_id: int,
    rollout_logprobs: list[list[float]] | None = None,
) -> SequenceBatch:
    """One row per response: its prompt (left-padded) followed by the response (right-padded); with
    ``rollout_logprobs`` (the engine's log-prob of each response token) their (batch, R) tensor, 0 on padding."""
    prompts = [encoded_prompts[i]["input_ids"][0] for i in prompt_indices]
    prompt_length = max(len(p) for p in prompts)
    response_length = max(1, max(len(r) for r in responses))
    rows = len(responses)
    input_ids = torch.full((rows, prompt_length + response_length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    mm_types = torch.zeros_like(input_ids, dtype=torch.int32)
    response_mask = torch.zeros((rows, response_length), dtype=torch.long)
    for row, (prompt_index, prompt, response) in enumerate(zip(prompt_indices, prompts, responses, strict=True)):
        start = prompt_length - len(prompt)
        input_ids[row, start:prompt_length] = prompt
        mm_types[row, start:prompt_length] = encoded_prompts[prompt_index]["mm_token_type_ids"][0]
        input_ids[row, prompt_length : prompt_length + len(response)] = torch.tensor(response, dtype=torch.long)
        attention_mask[row, start : prompt_length + len(response)] = 1
        response_mask[row, : len(response)] = 1
    sampled = None
    if rollout_logprobs is not None:
        sampled = torch.zeros((rows, response_length), dtype=torch.float32)
        for row, values in enumerate(rollout_logprobs):
            sampled[row, : len(values)] = torch.tensor(values, dtype=torch.float32)
    return SequenceBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        mm_token_type_ids=mm_types,
        response_mask=response_mask,
        pixel_values=torch.cat([encoded_prompts[i]["pixel_values"] for i in prompt_indices]),
        image_grid_thw=torch.cat([encoded_prompts[i]["image_grid_thw"] for i in prompt_indices]),
        prompt_length=prompt_length,
        rollout_logprobs=sampled,
    )


def balanced_partition(lengths: list[int], parts: int, equal_size: bool = True) -> list[list[int]]:
    """Split row indices into ``parts`` groups of near-equal total length (longest first, each to the lightest group;
    with ``equal_size`` no group takes more than ceil(rows / parts) rows). Each group's indices are sorted. Used to
    give data-parallel ranks the same amount of work, and to fill token-budget micro-batches evenly."""
    cap = -(-len(lengths) // parts) if equal_size else len(lengths)
    groups: list[list[int]] = [[] for _ in range(parts)]
    load = [0] * parts
    for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
        open_groups = [g for g in range(parts) if len(groups[g]) < cap]
        target = min(open_groups, key=lambda g: (load[g], len(groups[g]), g))
        groups[target].append(row)
        load[target] += lengths[row]
    return [sorted(group) for group in groups]


def micro_batch_cost(lengths: list[int], packed: bool) -> int:
    """Tokens a micro-batch of rows with these real lengths computes: their sum packed, rows x longest padded."""
    if not lengths:
        return 0
    return sum(lengths) if packed else len(lengths) * max(lengths)


def token_budget_groups(lengths: list[int], max_tokens: int, packed: bool, at_least: int = 1) -> list[list[int]]:
    """Few groups whose cost is within ``max_tokens`` each (a row longer than the budget gets a group of its own), rows
    of similar length together; then, while fewer than ``at_least``, the costliest group is halved, and empty groups
    make up the rest. Never more groups than the budget alone needs, so ranks can agree on the largest count."""
    groups: list[list[int]] = []
    if lengths and not packed:
        # Padded: walk rows longest first; a group is full when one more row would pass rows x longest > budget.
        for row in sorted(range(len(lengths)), key=lambda r: -lengths[r]):
            if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_tokens:
                groups[-1].append(row)
            else:
                groups.append([row])
        groups = [sorted(g) for g in groups]
    elif lengths:
        total = micro_batch_cost(lengths, packed)
        parts = min(len(lengths), -(-total // max_tokens))
        while True:
            groups = [g for g in balanced_partition(lengths, parts, equal_size=False) if g]
            if parts >= len(lengths) or all(
                len(g) == 1 or micro_batch_cost([lengths[r] for r in g], packed) <= max_tokens for g in groups
            ):
                break
            parts += 1

    def cost(group: list[int]) -> int:
        return micro_batch_cost([lengths[r] for r in group], packed)

    while len(groups) < at_least and any(len(g) > 1 for g in groups):
        largest = max((g for g in groups if len(g) > 1), key=cost)
        groups.remove(largest)
        halves = balanced_partition([lengths[r] for r in largest], 2)
        groups.extend([[largest[i] for i in half] for half in halves])
    return groups + [[] for _ in range(at_least - len(groups))]


# ----------------------------------------------------------------------------------------- splitting across ranks
def split_rows(batch: SequenceBatch, world_size: int) -> tuple[list[list[int]], list[SequenceBatch]]:
    """Rows of ``batch`` for each data-parallel rank, balanced by real length with equal row counts (+-1), and the
    sub-batches (a placeholder for a rank without rows). One rank gets the batch as it is."""
    if world_size == 1:
        return [list(range(len(batch)))], [batch]
    groups = balanced_partition(batch.real_lengths(), world_size)
    return groups, [batch.select(rows) if rows else batch.placeholder() for rows in groups]


@dataclass
class MiniBatch:
    """One rank's part of a mini-batch, ready for one optimizer step: its micro-batches (as many on every rank, a
    placeholder where a rank has no rows), the loss normalisers of the whole mini-batch over every rank, and the whole
    mini-batch's rows (each micro-batch's metrics weigh ``len(micro) / rows``)."""

    micro_batches: list[SequenceBatch]
    norms: Normalisers
    rows: int


def split_mini_batches(batch: SequenceBatch, config: Config, world_size: int = 1) -> list[list[MiniBatch]]:
    """For each rank, its part of every mini-batch of ``config.derived.sequences_per_update`` rows: rank r steps on
    the same mini-batches as one process would, holding only its rows of each. The controller plans it all here,
    with every rank's rows in view: the micro-batch count the ranks share (the largest any rank needs) and the token
    and sequence counts of the whole mini-batch, summed rank by rank. Every update (the runtime's, the tests' and the
    benchmarks') is ``Policy.update`` of one rank's list."""
    actor = config.actor
    size, budget, packed = (
        actor.micro_batch_size_per_device_for_update,
        actor.max_tokens_per_micro_batch,
        actor.padding_free,
    )
    shares: list[list[MiniBatch]] = [[] for _ in range(world_size)]
    for mini_batch in batch.chunks(config.derived.sequences_per_update):
        parts = split_rows(mini_batch, world_size)[1]
        count = max(part.micro_batch_count(size, budget, packed) for part in parts)
        tokens = seqs = rows = 0
        for part in parts:
            part_tokens, part_seqs = count_tokens_and_seqs(part.response_mask)
            tokens, seqs = tokens + part_tokens, seqs + part_seqs
            rows += 0 if part.is_placeholder else len(part)
        norms = Normalisers(tokens, seqs, config.data.max_response_length, count * world_size)
        for rank, part in enumerate(parts):
            micro_batches = [micro for _, micro in part.micro_batches(size, budget, count, packed)]
            shares[rank].append(MiniBatch(micro_batches, norms, rows))
    return shares


def gather_logprobs(batch: SequenceBatch, groups: list[list[int]], parts: list[torch.Tensor]) -> torch.Tensor:
    """Reassemble per-rank (rows_r, R) log-probs into (batch, R) in the batch's row order."""
    if len(parts) == 1:
        return parts[0]
    out = torch.zeros(len(batch), batch.response_length)
    for rows, part in zip(groups, parts, strict=True):
        if rows:
            out[rows] = part
    return out
