"""Batch evaluation: greedy answers for a benchmark set, boxes mapped back to the original image, then the report.

``run_eval`` writes into its output folder:

- ``predictions.jsonl``: HumanRef's metric format (``id``, ``extracted_predictions`` in original-image pixels);
- ``annotations.jsonl``: the ground truth it scored against, in HumanRef's format (re-score with ``score``);
- ``responses.jsonl``: every raw completion with its parsed boxes in the resized frame;
- ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from rewards.parsing import parse_completion
from rewards.rexthinker import number_lists
from rexthinker_rl.config import Config
from rexthinker_rl.data.dataset import DataError, PromptSample, RLDataset, boxes_to_original, decode_image
from rexthinker_rl.data.prompts import clean_up_spaces, preset_for
from rexthinker_rl.eval.annotations import (
    HumanRefRecord,
    is_humanref_file,
    load_records,
    read_humanref,
    read_predictions,
    write_humanref,
    write_predictions,
)
from rexthinker_rl.eval.metrics import evaluate, markdown_table
from rexthinker_rl.eval.prompts import check_prompt_text, make_prompt
from rexthinker_rl.model.loading import load_processor
from rexthinker_rl.rollout import RolloutEngine, RolloutPrompt, SamplingSpec, make_engine
from rexthinker_rl.run.outputs import check_new_file, check_new_folder, folder_holds_only
from rexthinker_rl.utils import atomic_write_text

EVAL_FILES = ("predictions.jsonl", "annotations.jsonl", "responses.jsonl", "report.json", "report.md")

logger = logging.getLogger(__name__)


@dataclass
class Answer:
    """One parsed completion: boxes in both frames, or none (a rejection or an unparseable answer)."""

    boxes_resized: list[list[float]]
    boxes_original: list[list[float]]
    kind: str  # boxes | rejection | invalid
    error: str | None = None


def parse_response(
    response: str, image_size: Sequence[int], frame: Sequence[int], parsing: str = "answer-block"
) -> Answer:
    """A completion's boxes (resized frame) and the same boxes in original-image pixels.

    ``parsing``: ``answer-block`` (ours: the final ``<answer>`` block, mapped back clipped into the image) or
    ``all-lists`` (Rex-Thinker's evaluation and demo: every bracketed number list anywhere in the text, each scaled by
    original / resized size, unclipped; one list that is not 4 numbers voids the whole answer)."""
    if parsing == "all-lists":
        return _parse_all_lists(response, image_size, frame)

    answer = parse_completion(response).answer
    boxes = [list(box) for box in answer.boxes] if answer.kind == "boxes" else []
    original = [[round(v, 2) for v in box] for box in boxes_to_original(boxes, image_size, frame)]
    return Answer(boxes, original, answer.kind, answer.error)


def _parse_all_lists(response: str, image_size: Sequence[int], frame: Sequence[int]) -> Answer:
    try:
        boxes = [list(numbers) for numbers in number_lists(response)]
    except ValueError as err:
        return Answer([], [], "invalid", f"a number list does not parse ({err})")
    wrong = next((box for box in boxes if len(box) != 4), None)
    if wrong is not None:
        return Answer([], [], "invalid", f"{wrong} is not a box [x0, y0, x1, y1]; the answer counts as no box")
    (width, height), (frame_w, frame_h) = image_size, frame
    scales = (frame_w, frame_h, frame_w, frame_h)
    sizes = (width, height, width, height)
    # x / resized * original, in the original's order of operations, so the floats come out identical.
    original = [[v / scale * size for v, scale, size in zip(box, scales, sizes, strict=True)] for box in boxes]
    return Answer(boxes, original, "boxes" if boxes else "rejection")


class HumanRefPrompts:
    """HumanRef records as prompts, images decoded on access (the hints are the records' candidate boxes)."""

    def __init__(self, records: list[HumanRefRecord], image_root: str | Path, processor, config: Config) -> None:
        self.records, self.root, self.processor, self.data_cfg = records, Path(image_root), processor, config.data
        for record in records:
            if not record.image_name:
                raise DataError(f"HumanRef record {record.id!r}: no 'image_name' (needed to run the model)")
            if not record.referring.strip():
                raise DataError(f"HumanRef record {record.id!r}: the referring expression is empty")
            check_prompt_text(processor, record.referring, [record.category], f"HumanRef record {record.id!r}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> PromptSample:
        record = self.records[index]
        path = self.root / str(record.image_name)
        if not path.is_file():
            raise FileNotFoundError(f"record {record.id!r}: image {path} not found (check --image-root)")
        image = decode_image(path, f"record {record.id!r}", self.data_cfg.apply_exif_orientation)
        hints = {record.category: record.candidate_boxes}
        return make_prompt(self.processor, self.data_cfg, image, record.referring, hints, record.id)


def build_engine(config: Config, model_path: str) -> RolloutEngine:
    """The configured engine; the transformers engine when vLLM is asked for but not installed."""
    if config.rollout.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        logger.warning("vLLM is not installed: evaluating with the transformers engine (rollout.engine=hf)")
        config = replace(config, rollout=replace(config.rollout, engine="hf"))
    return make_engine(config, model_path)


def generate_answers(
    engine: RolloutEngine,
    prompts: Sequence[PromptSample],
    max_tokens: int,
    batch_size: int = 16,
    progress: bool = True,
) -> list[tuple[PromptSample, str]]:
    """Greedy completions of every prompt, ``batch_size`` prompts per engine call, with a progress bar."""
    sampling = SamplingSpec(n=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens)
    answered = []
    bar = tqdm(total=len(prompts), desc="evaluating", unit="sample", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        batch = [prompts[i] for i in range(start, min(start + batch_size, len(prompts)))]
        results = engine.generate([RolloutPrompt(p.prompt_text, p.image) for p in batch], sampling)
        for result in results:
            sample = batch[result.prompt_index]
            sample.image = None  # keep only what scoring needs; images can be large
            answered.append((sample, result.text))
        bar.update(len(batch))
    bar.close()
    return answered


def load_prompts(data: str, config: Config, processor, image_root: str | None, max_samples: int):
    """``(prompts, ground-truth records)`` of a HumanRef ``annotations.jsonl`` or one of our parquet/JSONL sets."""
    if is_humanref_file(data):
        if image_root is None:
            raise ValueError(f"{data} is a HumanRef annotation file: pass --image-root (the folder of its images)")
        records = read_humanref(data)
        records = records[:max_samples] if max_samples >= 0 else records
        return HumanRefPrompts(records, image_root, processor, config), records
    # Every row is scored: an over-long prompt is an error naming the row, never silently left out.
    cfg = replace(config.data, filter_overlong_prompts=False)
    prompts = RLDataset(data, processor, cfg, max_samples=max_samples)
    keys = {
        "answer_key": cfg.answer_key,
        "image_key": cfg.image_key,
        "prompt_key": cfg.prompt_key,
    }  # as training reads
    records = load_records(data, cfg.min_pixels, cfg.max_pixels, cfg.apply_exif_orientation, keys)[: len(prompts)]
    return prompts, records


def run_eval(
    config: Config,
    model_path: str,
    data: str,
    out_dir: str | Path,
    image_root: str | None = None,
    max_samples: int = -1,
    batch_size: int = 16,
    engine: RolloutEngine | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Evaluate ``model_path`` on ``data``; writes the files listed in the module docstring and returns the report.
    ``out_dir`` must be new or empty, or (with ``overwrite``) hold an earlier evaluation's files and nothing else."""
    out = check_new_folder(out_dir, overwrite, is_eval_folder, "evaluation output folder", inputs=[data, image_root])
    out.mkdir(parents=True, exist_ok=True)
    processor = load_processor(
        config.model.tokenizer_path or model_path,
        config.data.min_pixels,
        config.data.max_pixels,
        config.model.trust_remote_code,
    )
    prompts, records = load_prompts(data, config, processor, image_root, max_samples)
    preset = preset_for(config.data)
    engine = engine or build_engine(config, model_path)
    answered = generate_answers(engine, prompts, config.data.max_response_length, batch_size, progress)
    predictions, responses = [], []
    for sample, text in answered:
        meta = sample.metadata
        text = clean_up_spaces(text) if preset.decode_cleanup else text
        answer = parse_response(text, meta["image_size"], meta["resized_size"], preset.answer_parsing)
        predictions.append((sample.uid, answer.boxes_original))
        responses.append(
            {"id": sample.uid, "response": text, "kind": answer.kind, "boxes": answer.boxes_resized}
            | {"error": answer.error, "image_size": meta["image_size"], "resized_size": meta["resized_size"]}
        )
    write_predictions(out / "predictions.jsonl", predictions)
    write_humanref(out / "annotations.jsonl", records)
    atomic_write_text(out / "responses.jsonl", "".join(json.dumps(item) + "\n" for item in responses))
    report = evaluate([record.ground_truth() for record in records], dict(predictions))
    report["unparsed_answers"] = sum(item["kind"] == "invalid" for item in responses)
    report["answers"] = len(responses)
    report |= {"model": str(model_path), "data": str(data), "prompt_preset": preset.name}
    write_report(out / "report.json", report)
    return report


def score_files(annotations: str, predictions: str, min_pixels: int, max_pixels: int) -> dict:
    """Re-score a prediction file against annotations (HumanRef JSONL or our parquet/JSONL) without the model."""
    records = load_records(annotations, min_pixels, max_pixels)
    predicted = read_predictions(predictions)
    known = {record.id for record in records}
    unknown = [sample_id for sample_id in predicted if sample_id not in known]
    report = evaluate([record.ground_truth() for record in records], predicted)
    report |= {"unknown_prediction_ids": len(unknown), "annotations": str(annotations), "predictions": predictions}
    if unknown:
        logger.warning("%d prediction ids are not in %s (e.g. %r); ignored", len(unknown), annotations, unknown[0])
    return report


def is_eval_folder(folder: Path) -> bool:
    """An earlier ``run``'s output folder: its report and files, nothing else."""
    return folder_holds_only(folder, EVAL_FILES, "report.json")


def check_report_path(path: str | Path, overwrite: bool, inputs: Sequence[str]) -> None:
    """``score --out``: a new file (and its ``.md`` twin), or an existing one with ``--overwrite``; never an input."""
    for target in (Path(path), Path(path).with_suffix(".md")):
        check_new_file(target, overwrite, inputs)


def write_report(path: str | Path, report: dict) -> Path:
    """``report.json`` and the Markdown table beside it (``report.md``)."""
    path = Path(path)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    atomic_write_text(path.with_suffix(".md"), markdown_table(report) + "\n")
    return path
