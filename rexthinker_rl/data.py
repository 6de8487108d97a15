"""Dataset rows -> RL prompts: the resized box frame, row reading, the prompt dataset and a resumable batch sampler.

Every box the model sees (hints) or writes (answers) is in absolute pixels of the image *as Qwen2.5-VL's processor
resizes it* (``smart_resize``: both sides multiples of 28, area within ``[min_pixels, max_pixels]``).
:func:`boxes_to_resized` and :func:`boxes_to_original` are the one place boxes move between that frame and the
original image. :class:`RLDataset` hands out images already resized to that frame, so every consumer (rollout
engines, actor, reference) sees the same pixels and the processor leaves them unchanged.

Rows come from a parquet file, a folder of parquet shards, or a JSONL file whose ``image`` field is a path relative to
the JSONL file's folder. Rows are counted from 0 within their file; errors say ``"<file> row <i>: ..."``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from rexthinker_rl.config import DataConfig
from rexthinker_rl.errors import DataError
from rexthinker_rl.images import decode_image
from rexthinker_rl.images import header_size as image_header_size
from rexthinker_rl.parquet_meta import FrameMismatch, check_made_with
from rexthinker_rl.prompts import BOX_ROUNDINGS, PresetError, chat_prompt, preset_for

logger = logging.getLogger(__name__)

REJECTION_TEXT = "There is no such thing in the image."
IMAGE_FACTOR = 28  # Qwen2.5-VL: 14-pixel patches merged 2x2, so one image token per 28x28 cell
HINT_MARKER = "coordinates in this image:"
# The referring expression in a problem text: ours and Rex-Thinker's demo ("in the image."), its convert ("in this
# image.") and its HumanRef evaluation ("Locate ... in the image and answer").
_REFERRING = re.compile(r"(?:Please detect (.+?) in (?:the|this) image\.|Locate (.+?) in the image and answer)")
_EMPTY_REFERRING = re.compile(r"(?:Please detect\s+in (?:the|this) image\.|Locate\s+in the image and answer)")


# ----------------------------------------------------------------------------------------------------------- frames
def resized_size(width: int, height: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """``(w, h)`` of an image of ``width x height`` after the processor's smart_resize with these pixel bounds."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    resized_h, resized_w = smart_resize(
        height, width, factor=IMAGE_FACTOR, min_pixels=min_pixels, max_pixels=max_pixels
    )
    return resized_w, resized_h


def image_tokens(resized_w: int, resized_h: int) -> int:
    """Image tokens one image of this resized size expands to (one per 28x28 cell, after the 2x2 merge)."""
    if resized_w % IMAGE_FACTOR or resized_h % IMAGE_FACTOR or resized_w <= 0 or resized_h <= 0:
        raise ValueError(f"resized size {resized_w}x{resized_h} is not a positive multiple of {IMAGE_FACTOR}")
    return (resized_w // IMAGE_FACTOR) * (resized_h // IMAGE_FACTOR)


def _scale_boxes(boxes, source: Sequence[int], target: Sequence[int]) -> list[list[float]]:
    scale_x, scale_y = target[0] / source[0], target[1] / source[1]
    scaled = []
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"box {list(box)} must have 4 numbers [x0, y0, x1, y1]")
        x0, y0, x1, y1 = (float(value) for value in box)
        scaled.append([x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y])
    return scaled


def _clip(box: list[float], width: float, height: float) -> list[float]:
    return [min(max(value, 0), limit) for value, limit in zip(box, (width, height, width, height), strict=True)]


def boxes_to_resized(
    boxes, original_size: Sequence[int], resized_size: Sequence[int], rounding: str = "round"
) -> list[list[int]]:
    """Original-image boxes ``[x0, y0, x1, y1]`` -> integer boxes in the resized frame.

    ``rounding``: ``round`` (ours: nearest integer, clipped to [0, size]) or ``original`` (Rex-Thinker's tools:
    ``int()`` of ``x / width * resized_width``, truncation, then clamped to [0, size - 1])."""
    if rounding == "original":
        return [_truncated(box, original_size, resized_size) for box in boxes]
    if rounding != "round":
        raise ValueError(f"box rounding {rounding!r}: expected one of {', '.join(BOX_ROUNDINGS)}")
    width, height = resized_size
    return [
        [round(value) for value in _clip(box, width, height)]
        for box in _scale_boxes(boxes, original_size, resized_size)
    ]


def _truncated(box, original: Sequence[int], resized: Sequence[int]) -> list[int]:
    if len(box) != 4:
        raise ValueError(f"box {list(box)} must have 4 numbers [x0, y0, x1, y1]")
    # Same operations in the same order as the original (divide, then multiply), so float results truncate alike.
    values = [int(float(value) / original[i % 2] * resized[i % 2]) for i, value in enumerate(box)]
    return [max(0, min(value, resized[i % 2] - 1)) for i, value in enumerate(values)]


def boxes_to_original(boxes, original_size: Sequence[int], resized_size: Sequence[int]) -> list[list[float]]:
    """Resized-frame boxes -> float boxes in original-image pixels, clipped into the original image."""
    width, height = original_size
    return [_clip(box, width, height) for box in _scale_boxes(boxes, resized_size, original_size)]


def check_fixed_point(size: Sequence[int], min_pixels: int, max_pixels: int) -> None:
    """Raise unless a processor with these bounds leaves an image of ``size`` (already resized) unchanged.

    smart_resize is not idempotent for every pair of bounds (with tight bounds it can round down, then back up), and a
    second resize would move the boxes out of the frame they were written in.
    """
    again = resized_size(size[0], size[1], min_pixels, max_pixels)
    if tuple(again) != tuple(size):
        raise DataError(
            f"with min_pixels={min_pixels}, max_pixels={max_pixels} the processor would resize an image already "
            f"resized to {size[0]}x{size[1]} again to {again[0]}x{again[1]}: widen the bounds so that min_pixels <= "
            f"{size[0] * size[1]} <= max_pixels"
        )


# ------------------------------------------------------------------------------------------------------------- hints
def parse_hints(value: Any, where: str = "") -> dict[str, list[list[float]]]:
    """Box hints ``{category: [[x0, y0, x1, y1], ...]}`` from a dict or a JSON string (the ``hints`` column)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: hints are not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: hints must be a JSON object {{category: [[x0, y0, x1, y1], ...]}}, got {value!r}")
    for category, boxes in value.items():
        if not isinstance(boxes, list) or not all(is_box(box) for box in boxes):
            raise DataError(f"{where}: hints[{category!r}] must be a list of [x0, y0, x1, y1] boxes, got {boxes!r}")
    return value


def hints_from_problem(problem: str, where: str = "") -> dict[str, list[list[float]]] | None:
    """The hint JSON that follows "coordinates in this image:" in Rex-Thinker prompt text, or None when absent."""
    start = problem.find(HINT_MARKER)
    if start < 0:
        return None
    text = problem[start + len(HINT_MARKER) :].lstrip()
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: the hint JSON after {HINT_MARKER!r} does not parse ({err})") from None
    return parse_hints(value, where)


def referring_from_problem(problem: str) -> str | None:
    """The referring expression of a problem text written by one of the prompt presets, or None."""
    match = _REFERRING.search(problem)
    return (match.group(1) or match.group(2)) if match else None


def is_box(box: Any) -> bool:
    """``[x0, y0, x1, y1]``: a list of 4 numbers (booleans are not numbers here)."""
    return (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(value, int | float) and not isinstance(value, bool) for value in box)
    )


# -------------------------------------------------------------------------------------------------------------- rows
@dataclass
class _Source:
    path: Path
    start: int  # index (in the whole table) of the file's first row
    count: int


class RowTable:
    """The rows of a dataset, read by index; parquet stays a memory-mapped Arrow table, images stay undecoded."""

    def __init__(self, sources: list[_Source], table: pa.Table | None = None, records: list[dict] | None = None):
        self.sources = sources
        self._table = table
        self._records = records

    def __len__(self) -> int:
        return self._table.num_rows if self._table is not None else len(self._records)

    @property
    def column_names(self) -> list[str]:
        if self._table is not None:
            return list(self._table.column_names)
        return sorted({key for record in self._records for key in record})

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._table is not None:
            return self._table.slice(index, 1).to_pylist()[0]
        return self._records[index]

    def iter_rows(self, batch_size: int = 256) -> Iterator[dict[str, Any]]:
        """All rows in order, a batch of Arrow rows converted at a time."""
        if self._table is None:
            yield from self._records
            return
        for batch in self._table.to_batches(max_chunksize=batch_size):
            yield from batch.to_pylist()

    def locate(self, index: int) -> tuple[Path, int]:
        """``(file, row index within that file)`` of a row."""
        for source in self.sources:
            if source.start <= index < source.start + source.count:
                return source.path, index - source.start
        raise IndexError(f"row {index} out of range (the table has {len(self)} rows)")

    def where(self, index: int) -> str:
        path, local = self.locate(index)
        return f"{path.name} row {local}"


def read_rows(path: str | Path) -> RowTable:
    """Rows of a parquet file, a folder of parquet shards (sorted by name), or a JSONL file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist")
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise DataError(f"{path}: folder holds no *.parquet files")
    elif path.suffix == ".jsonl":
        return _read_jsonl(path)
    else:
        files = [path]
    tables, sources, start = [], [], 0
    for file in files:
        try:
            table = pq.read_table(file, memory_map=True)
        except (pa.ArrowInvalid, OSError) as err:
            raise DataError(f"{file}: not a readable parquet file ({err})") from None
        tables.append(table)
        sources.append(_Source(file, start, table.num_rows))
        start += table.num_rows
    try:
        table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataError(f"{path}: shards have incompatible columns ({err})") from None
    return RowTable(sources, table=table)


def _read_jsonl(path: Path) -> RowTable:
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path.name} line {line_number}: invalid JSON ({err})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path.name} line {line_number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return RowTable([_Source(path, 0, len(records))], records=records)


def image_payload(row: dict, image_key: str, base_dir: Path, where: str) -> bytes | Path:
    """The encoded bytes or the file path of a row's single image (``image_key`` column, else ``image``)."""
    value = row.get(image_key, row.get("image"))
    if value is None:
        raise DataError(f"{where}: no image (column {image_key!r}, or 'image' holding a path)")
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise DataError(f"{where}: {len(value)} images in {image_key!r}; exactly one image per row is supported")
        value = value[0]
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        file = base_dir / value
        if not file.is_file():
            raise DataError(f"{where}: image file {value!r} not found")
        return file
    raise DataError(f"{where}: image must be bytes, {{'bytes', 'path'}} or a path, got {type(value).__name__}")


# ----------------------------------------------------------------------------------------------------------- dataset
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

    def _scan(self, max_samples: int) -> None:
        cfg, pending = self.cfg, []
        for index, row in enumerate(self.rows.iter_rows()):
            if 0 <= max_samples <= len(self._kept):
                break
            where = self.rows.where(index)
            payload = image_payload(row, cfg.image_key, self.rows.locate(index)[0].parent, where)
            sizes = self._frame(row, image_header_size(payload, where, cfg.apply_exif_orientation), where)
            problem, _, prompt_text = self._prompt(row, where)
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
    from rewards.parsing import parse_ground_truth

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
    if (isinstance(row.get("referring"), str) and not row["referring"].strip()) or _EMPTY_REFERRING.search(problem):
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
    """Batches of indices, epoch after epoch; the order depends only on ``(seed, epoch)``, so a saved position resumes
    exactly (no batch repeated or skipped). The state counts batches handed out.

    Usable as a DataLoader ``batch_sampler``: iterating yields the rest of the current epoch, then moves to the next.
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool = True):
        if num_samples < 0 or batch_size <= 0:
            raise ValueError(f"num_samples={num_samples} must be >= 0 and batch_size={batch_size} positive")
        self.num_samples, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.drop_last = drop_last
        self._epoch, self._batch_in_epoch = 0, 0
        self._order_epoch, self._order = -1, torch.arange(0)

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
            if self.shuffle:
                # Seed and epoch mixed into one 63-bit seed (seed + epoch alone would repeat orders across seeds).
                generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self._epoch) % 2**63)
                self._order = torch.randperm(self.num_samples, generator=generator)
            else:
                self._order = torch.arange(self.num_samples)
            self._order_epoch = self._epoch
        return self._order

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

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batch_in_epoch": self._batch_in_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        missing = {"epoch", "batch_in_epoch"} - set(state)
        if missing:
            raise KeyError(f"sampler state lacks {sorted(missing)} (got keys {sorted(state)})")
        if not 0 <= state["batch_in_epoch"] < self.batches_per_epoch or state["epoch"] < 0:
            raise ValueError(f"sampler state {state} is out of range ({self.batches_per_epoch} batches per epoch)")
        self._epoch, self._batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
