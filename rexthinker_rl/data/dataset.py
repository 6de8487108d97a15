"""Dataset rows -> RL prompts: the prompt dataset and a resumable batch sampler.

:class:`RLDataset` hands out images already resized to the frame the boxes live in (``rexthinker_rl.data.frames``), so
every consumer (rollout engines, actor, reference) sees the same pixels and the processor leaves them unchanged. Rows
are read by ``rexthinker_rl.data.rows``, hints and referring expressions parsed by ``rexthinker_rl.data.hints``; their names
are importable from here too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from rewards.parsing import parse_ground_truth
from rexthinker_rl.config import DataConfig
from rexthinker_rl.config.rules import DATA_ORDERS
from rexthinker_rl.data.frames import (
    IMAGE_FACTOR,
    boxes_to_original,
    boxes_to_resized,
    check_fixed_point,
    image_tokens,
    resized_size,
)
from rexthinker_rl.data.hints import (
    HINT_MARKER,
    REJECTION_TEXT,
    hints_from_problem,
    is_box,
    parse_hints,
    referring_from_problem,
    referring_is_empty,
)
from rexthinker_rl.data.images import decode_image
from rexthinker_rl.data.images import header_size as image_header_size
from rexthinker_rl.data.parquet_meta import FrameMismatch, check_made_with
from rexthinker_rl.data.prompts import PresetError, chat_prompt, preset_for
from rexthinker_rl.data.reserved import row_keys, row_text_problems, tokenizer_tokens
from rexthinker_rl.data.rows import RowTable, image_payload, read_rows
from rexthinker_rl.errors import DataError

__all__ = [
    "HINT_MARKER",
    "IMAGE_FACTOR",
    "REJECTION_TEXT",
    "DataError",
    "PromptSample",
    "RLDataset",
    "ResumableSampler",
    "RowTable",
    "boxes_to_original",
    "boxes_to_resized",
    "check_fixed_point",
    "decode_image",
    "hints_from_problem",
    "image_header_size",
    "image_payload",
    "image_tokens",
    "is_box",
    "parse_hints",
    "read_rows",
    "referring_from_problem",
    "resized_size",
]

logger = logging.getLogger(__name__)


@dataclass
class PromptSample:
    """One RL prompt: chat messages, rendered prompt text, the resized image and what the rewards need."""

    uid: str
    messages: list[dict]
    prompt_text: str
    image: Image.Image
    ground_truth: str
    metadata: dict
    num_prompt_tokens: int
    sft_target: str | None = None


class RLDataset(torch.utils.data.Dataset):
    """Prompts of a Rex-Thinker-style dataset; images are decoded per item, over-long prompts dropped up front.

    The scan at construction reads every row's image header (not its pixels) and tokenises every prompt, so the
    prompt length with image tokens is known exactly without decoding images.
    """

    def __init__(self, path: str, processor, data_cfg: DataConfig, max_samples: int = -1):
        self.rows = read_rows(path)
        self.cfg = data_cfg
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_token = getattr(processor, "image_token", "<|image_pad|>")
        self._processor_bounds = _processor_bounds(processor)
        self._reserved = tokenizer_tokens(self.tokenizer)  # text no row may hold (rexthinker_rl.data.reserved)
        self.preset = preset_for(data_cfg)
        for key in (data_cfg.prompt_key, data_cfg.answer_key):
            if key not in self.rows.column_names:
                raise DataError(f"{path}: no column {key!r} (columns: {', '.join(self.rows.column_names)})")
        try:  # the frame the set was made in must be the configured one; its box rounding goes to the rewards
            made = check_made_with(self.rows.sources[0].path, data_cfg.min_pixels, data_cfg.max_pixels)
        except FrameMismatch as err:
            raise DataError(str(err)) from None
        self.made_with = {"box_rounding": made["box_rounding"]} if "box_rounding" in made else {}
        self._kept: list[int] = []
        self._num_tokens: list[int] = []
        self._sizes: list[tuple[tuple[int, int], tuple[int, int]]] = []
        self._filtered: list[int] = []  # rows dropped for being longer than max_prompt_length
        self._scan(max_samples)

    @property
    def num_filtered(self) -> int:
        """Prompts dropped for being longer than ``max_prompt_length``."""
        return len(self._filtered)

    def __len__(self) -> int:
        return len(self._kept)

    def kept_texts(self) -> Iterator[tuple[str, str]]:
        """``(prompt, answer)`` of every kept row, in order: what identifies the training rows (``data_position``)."""
        prompts, answers = self.rows.column(self.cfg.prompt_key), self.rows.column(self.cfg.answer_key)
        for index in self._kept:
            yield prompts[index], answers[index]

    def _scan(self, max_samples: int) -> None:
        cfg, pending = self.cfg, []
        for index, row in enumerate(self.rows.iter_rows()):
            if 0 <= max_samples <= len(self._kept):
                break
            where = self.rows.where(index)
            payload = image_payload(row, cfg.image_key, self.rows.locate(index)[0].parent, where)
            sizes = self._frame(row, image_header_size(payload, where, cfg.apply_exif_orientation), where)
            problem, _, prompt_text = self._prompt(row, where)
            reserved = row_text_problems(row, row_keys(cfg.prompt_key, cfg.answer_key), self._reserved)
            if reserved:  # the processor would act on a special token in the text: stop here, not in a worker
                raise DataError(f"{where}: {reserved[0]}")
            _metadata(row, problem, *sizes, "", where)  # malformed hints fail here, not mid-training
            _check_ground_truth(row[cfg.answer_key], sizes[1], where)
            pending.append((index, sizes, prompt_text))
            # Tokenise in batches; near max_samples, only as many rows as could still be kept.
            if len(pending) >= (256 if max_samples < 0 else min(256, max_samples - len(self._kept))):
                self._count_tokens(pending, max_samples)
                pending = []
        self._count_tokens(pending, max_samples)
        if self._filtered:
            named = ", ".join(self.rows.where(index) for index in self._filtered[:5])
            more = f" and {len(self._filtered) - 5} more" if len(self._filtered) > 5 else ""
            logger.warning(
                "dropped %d prompts over data.max_prompt_length=%d tokens (image tokens included): %s%s; set "
                "data.filter_overlong_prompts=false to make this an error",
                len(self._filtered),
                cfg.max_prompt_length,
                named,
                more,
            )
        if not self._kept and self._filtered:
            raise DataError(
                f"{self.rows.sources[0].path}: no prompts left: all {len(self._filtered)} are over "
                f"data.max_prompt_length={cfg.max_prompt_length} tokens (image tokens included); raise it or lower "
                "data.max_pixels"
            )
        if not self._kept:
            raise DataError(f"{self.rows.sources[0].path}: no prompts left (rows: {len(self.rows)})")

    def _frame(self, row: dict, original: tuple[int, int], where: str) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(original, resized)`` sizes, checked against the row's own size columns and the processor's bounds."""
        cfg = self.cfg
        try:
            resized = resized_size(original[0], original[1], cfg.min_pixels, cfg.max_pixels)
        except ValueError as err:
            raise DataError(f"{where}: {err}") from None
        if row.get("image_size") is not None and _size(row["image_size"]) != original:
            raise DataError(f"{where}: image_size column {row['image_size']} but the image is {list(original)}")
        if row.get("resized_size") is not None and _size(row["resized_size"]) != resized:
            raise DataError(
                f"{where}: resized_size column {row['resized_size']} but min_pixels={cfg.min_pixels}, "
                f"max_pixels={cfg.max_pixels} give {list(resized)}: the set was built with other min/max pixels"
            )
        bounds = self._processor_bounds
        try:
            check_fixed_point(resized, cfg.min_pixels, cfg.max_pixels)
            if bounds is not None and bounds != (cfg.min_pixels, cfg.max_pixels):
                check_fixed_point(resized, *bounds)
        except DataError as err:
            raise DataError(f"{where}: {err} (the processor's (min_pixels, max_pixels) are {bounds})") from None
        return original, resized

    def _prompt(self, row: dict, where: str) -> tuple[str, list[dict], str]:
        """``(problem, messages, prompt_text)`` of a row."""
        cfg = self.cfg
        problem = row.get(cfg.prompt_key)
        if not isinstance(problem, str) or not problem.strip():
            raise DataError(f"{where}: {cfg.prompt_key!r} is missing or empty")
        answer = row.get(cfg.answer_key)
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(f"{where}: {cfg.answer_key!r} is missing or empty")
        try:
            messages, prompt_text = chat_prompt(self.processor, self.preset, problem)
        except PresetError as err:
            raise DataError(f"{where}: {err}") from None
        return problem.replace("<image>", "").strip(), messages, prompt_text

    def _count_tokens(self, pending: list, max_samples: int) -> None:
        if not pending:
            return
        lengths = [len(ids) for ids in self.tokenizer([text for _, _, text in pending])["input_ids"]]
        for (index, sizes, text), length in zip(pending, lengths, strict=True):
            num_tokens = length + text.count(self.image_token) * (image_tokens(*sizes[1]) - 1)
            if num_tokens > self.cfg.max_prompt_length:
                if not self.cfg.filter_overlong_prompts:
                    raise DataError(
                        f"{self.rows.where(index)}: prompt is {num_tokens} tokens ({image_tokens(*sizes[1])} image "
                        f"tokens), over data.max_prompt_length={self.cfg.max_prompt_length}; raise it, lower "
                        "max_pixels, or set data.filter_overlong_prompts=true"
                    )
                self._filtered.append(index)
            elif max_samples < 0 or len(self._kept) < max_samples:
                self._kept.append(index)
                self._num_tokens.append(num_tokens)
                self._sizes.append(sizes)

    def __getitem__(self, i: int) -> PromptSample:
        index = self._kept[i]
        row, where = self.rows[index], self.rows.where(index)
        file, local = self.rows.locate(index)
        original, resized = self._sizes[i]
        problem, messages, prompt_text = self._prompt(row, where)
        payload = image_payload(row, self.cfg.image_key, file.parent, where)
        image = decode_image(payload, where, self.cfg.apply_exif_orientation)
        if image.size != resized:
            image = image.resize(resized, Image.Resampling.BICUBIC)
        uid = str(row["id"]) if row.get("id") is not None else f"{file.name}:{local}"
        return PromptSample(
            uid=uid,
            messages=messages,
            prompt_text=prompt_text,
            image=image,
            ground_truth=row[self.cfg.answer_key],
            metadata=_metadata(row, problem, original, resized, uid, where) | self.made_with,
            num_prompt_tokens=self._num_tokens[i],
            sft_target=row.get("sft_target") or None,
        )


def _size(value: Any) -> Any:
    """A size column as a tuple, to compare with ``(w, h)``; a value of another type is returned as is (unequal)."""
    return tuple(value) if isinstance(value, list | tuple) else value


def _check_ground_truth(answer: str, resized: tuple[int, int], where: str) -> None:
    """The answer parses and its boxes lie in the resized frame (what the rewards will check, found before training)."""
    try:
        parse_ground_truth(answer, {"resized_size": resized, "row_id": where})
    except ValueError as err:
        reason = str(err).split(": ", 1)[-1]  # drop the reward's own "row '...'" label; `where` says it better
        raise DataError(f"{where}: {reason}") from None


def _metadata(row: dict, problem: str, original, resized, uid: str, where: str) -> dict:
    metadata: dict[str, Any] = {"image_size": list(original), "resized_size": list(resized), "row_id": uid}
    hints = parse_hints(row["hints"], where) if row.get("hints") is not None else hints_from_problem(problem, where)
    if hints is not None:
        metadata["hints"] = hints
    referring = row.get("referring") or referring_from_problem(problem)
    if referring_is_empty(row.get("referring"), problem):
        raise DataError(f"{where}: the referring expression is empty; every row must say what to find")
    if referring:
        metadata["referring"] = referring
    category = row.get("category") or (next(iter(hints)) if hints and len(hints) == 1 else None)
    if category:
        metadata["category"] = category
    return metadata


def _processor_bounds(processor) -> tuple[int, int] | None:
    """``(min_pixels, max_pixels)`` the processor resizes with, when it says."""
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None) or {}
    if "shortest_edge" in size and "longest_edge" in size:
        return int(size["shortest_edge"]), int(size["longest_edge"])
    if getattr(image_processor, "min_pixels", None) and getattr(image_processor, "max_pixels", None):
        return int(image_processor.min_pixels), int(image_processor.max_pixels)
    return None


# ----------------------------------------------------------------------------------------------------------- sampler
class ResumableSampler:
    """Batches of indices, epoch after epoch, resumable exactly from a saved position (no batch repeated or skipped).
    The state counts batches handed out and names the order.

    Orders (``data.order``): ``ours`` shuffles each epoch with a generator seeded from ``(seed, epoch)``; ``easyr1`` draws
    as EasyR1 (and so Rex-Thinker) does: ``torch.utils.data.RandomSampler`` over one generator seeded once with
    ``seed``, whose stream continues from epoch to epoch. Usable as a DataLoader ``batch_sampler``: iterating yields the
    rest of the current epoch, then moves to the next.
    """

    def __init__(
        self, num_samples: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool = True, order: str = "ours"
    ):
        if num_samples < 0 or batch_size <= 0:
            raise ValueError(f"num_samples={num_samples} must be >= 0 and batch_size={batch_size} positive")
        if order not in DATA_ORDERS:
            raise ValueError(f"data.order={order!r}: choose one of {', '.join(DATA_ORDERS)}")
        self.num_samples, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.drop_last, self.order = drop_last, order
        self._epoch, self._batch_in_epoch = 0, 0
        self._order_epoch, self._order = -1, torch.arange(0)
        self._stream: torch.Generator | None = None  # easyr1: the one generator, and the epoch it will draw next
        self._stream_epoch = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if self.drop_last or not rest else full + 1

    def __len__(self) -> int:
        return self.batches_per_epoch

    def _epoch_order(self) -> torch.Tensor:
        if self._order_epoch != self._epoch:
            if not self.shuffle:
                self._order = torch.arange(self.num_samples)
            elif self.order == "easyr1":
                self._order = self._easyr1_order()
            else:
                # Seed and epoch mixed into one 63-bit seed (seed + epoch alone would repeat orders across seeds).
                generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self._epoch) % 2**63)
                self._order = torch.randperm(self.num_samples, generator=generator)
            self._order_epoch = self._epoch
        return self._order

    def _easyr1_order(self) -> torch.Tensor:
        """This epoch's permutation from the one generator. RandomSampler draws ``randperm(n)`` for the epoch and, when
        the batch sampler asks past the end, a second ``randperm(n)`` for the ``num_samples % n`` tail (empty), so each
        epoch takes two draws. After a resume the generator is replayed to the saved epoch (a few randperms an epoch)."""
        if self._stream is None or self._stream_epoch > self._epoch:
            self._stream, self._stream_epoch = torch.Generator().manual_seed(self.seed), 0
        while self._stream_epoch <= self._epoch:
            order = torch.randperm(self.num_samples, generator=self._stream)
            torch.randperm(self.num_samples, generator=self._stream)  # the tail draw at the epoch's end
            self._stream_epoch += 1
        return order  # the loop ran: a fresh stream starts at epoch 0 <= self._epoch

    def next_batch(self) -> list[int]:
        """The next batch of indices; crosses into the next epoch after the last batch of this one."""
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{self.num_samples} samples make no batch of {self.batch_size} (drop_last={self.drop_last})"
            )
        start = self._batch_in_epoch * self.batch_size
        batch = self._epoch_order()[start : start + self.batch_size].tolist()
        self._batch_in_epoch += 1
        if self._batch_in_epoch == self.batches_per_epoch:
            self._epoch, self._batch_in_epoch = self._epoch + 1, 0
        return batch

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self._epoch
        while self._epoch == epoch:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int | str]:
        return {"epoch": self._epoch, "batch_in_epoch": self._batch_in_epoch, "order": self.order}

    def load_state_dict(self, state: dict[str, int | str]) -> None:
        missing = {"epoch", "batch_in_epoch"} - set(state)
        if missing:
            raise KeyError(f"sampler state lacks {sorted(missing)} (got keys {sorted(state)})")
        saved_order = state.get("order", "ours")  # states written before data.order existed are ours
        if saved_order != self.order:
            raise ValueError(
                f"the checkpoint's data position is in data.order={saved_order}, the config says data.order="
                f"{self.order}: resume with data.order={saved_order} (the rows drawn so far depend on it)"
            )
        epoch, batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        if not 0 <= batch_in_epoch < self.batches_per_epoch or epoch < 0:
            raise ValueError(f"sampler state {state} is out of range ({self.batches_per_epoch} batches per epoch)")
        self._epoch, self._batch_in_epoch = epoch, batch_in_epoch
