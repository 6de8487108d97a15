"""HumanRef-CoT (Rex-Thinker's chain-of-thought set) from its TSV files: read, visualise, convert to training parquet.

The release is three files:

- images TSV, one image a line: ``image_id <TAB> base64(encoded image)`` (the base64 may be written as ``b'...'``);
- annotations TSV, one sample a line: ``byte offset of its image's line <TAB> JSON``; the JSON holds ``gt_boxes``
  (``[x0, y0, w, h]`` in image pixels: the candidate persons, "Person 1" being the first), ``region_map``
  (``{referring expression: [indices into gt_boxes]}``, an empty list for no target) and ``think`` (the reasoning);
- line index (``annotations.tsv.lineidx``): the byte offset of each annotation line.

``convert`` writes one row per referring expression, with the training schema of ``data_tools.synthetic`` (hints = all
``gt_boxes`` in their order, answer = the mapped ones, both in the resized frame through ``data_tools.convert``), and
the ``sft_target`` ``<think>{think}</think><answer>{answer}</answer>`` when the sample has one expression (the
reasoning belongs to it). The reasoning text is kept verbatim. A sample whose hints would be renumbered in the resized
frame (two boxes rounding onto one, or one too small) is a bad record, since its reasoning names hints by number.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_tools.convert import ConvertOptions, build_row
from data_tools.interchange import Candidate, Record, RecordError, write_report
from data_tools.synthetic import FEATURES
from rexthinker_rl.apps.visualize import render, save_image
from rexthinker_rl.data.dataset import DataError, decode_image
from rexthinker_rl.data.images import decode, stored_bytes
from rexthinker_rl.data.reserved import check_text
from rexthinker_rl.data.rows import read_text

ON_ERROR = ("fail", "skip")


@dataclass
class CoTSample:
    """One annotation line: the image, candidate boxes as ``[x0, y0, x1, y1]``, expressions and reasoning."""

    index: int
    image_id: str
    image_bytes: bytes
    boxes: list[list[float]]
    region_map: dict[str, list[int]]
    think: str


def read_lineidx(path: str | Path) -> list[int]:
    """Byte offsets, one a line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"line index {path} does not exist")
    offsets = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            if not line.strip().isdigit():
                raise DataError(f"{path.name} line {number}: expected a byte offset, got {line.strip()[:40]!r}")
            offsets.append(int(line))
    return offsets


def _scan_offsets(path: Path) -> list[int]:
    offsets, position = [], 0
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                offsets.append(position)
            position += len(line)
    return offsets


class HumanRefCoT:
    """Random access to the samples of a HumanRef-CoT TSV pair (without a line index, the annotations are scanned)."""

    def __init__(self, images_tsv: str | Path, annotations_tsv: str | Path, lineidx: str | Path | None = None):
        self.images_path, self.annotations_path = Path(images_tsv), Path(annotations_tsv)
        for path in (self.images_path, self.annotations_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist")
        self.offsets = read_lineidx(lineidx) if lineidx else _scan_offsets(self.annotations_path)
        self._images = self.images_path.open("rb")
        self._annotations = self.annotations_path.open("rb")

    def __len__(self) -> int:
        return len(self.offsets)

    def close(self) -> None:
        self._images.close()
        self._annotations.close()

    def __enter__(self) -> HumanRefCoT:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getitem__(self, index: int) -> CoTSample:
        where = f"{self.annotations_path.name} sample {index} (byte {self.offsets[index]})"
        self._annotations.seek(self.offsets[index])
        fields = self._annotations.readline().decode("utf-8").rstrip("\r\n").split("\t")
        if len(fields) != 2 or not fields[0].strip().isdigit():
            raise DataError(f"{where}: expected '<image line offset>\\t<json>' (wrong line index?)")
        try:
            annotation = json.loads(fields[1])
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: annotation JSON does not parse ({err})") from None
        image_id, image_bytes = self._image(int(fields[0]), where)
        return CoTSample(index, image_id, image_bytes, *_parse_annotation(annotation, where))

    def _image(self, offset: int, where: str) -> tuple[str, bytes]:
        self._images.seek(offset)
        fields = self._images.readline().decode("ascii", errors="replace").strip().split("\t")
        if len(fields) != 2:
            raise DataError(f"{where}: image line at byte {offset} of {self.images_path.name} is not 'id\\tbase64'")
        encoded = fields[1][2:-1] if fields[1].startswith("b'") else fields[1]
        try:
            return fields[0], base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as err:
            raise DataError(
                f"{where}: image at byte {offset} of {self.images_path.name} is not base64 ({err})"
            ) from None


def _parse_annotation(annotation: Any, where: str) -> tuple[list[list[float]], dict[str, list[int]], str]:
    if not isinstance(annotation, dict):
        raise DataError(f"{where}: annotation must be a JSON object")
    for key in ("gt_boxes", "region_map"):
        if key not in annotation:
            raise DataError(f"{where}: annotation has no {key!r} (keys: {', '.join(annotation)})")
    boxes = []
    for number, box in enumerate(annotation["gt_boxes"]):
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
            raise DataError(f"{where}: gt_boxes[{number}] = {box!r} is not [x0, y0, w, h]")
        if box[2] <= 0 or box[3] <= 0:
            raise DataError(f"{where}: gt_boxes[{number}] = {box} has no area (boxes are [x0, y0, w, h])")
        boxes.append([float(box[0]), float(box[1]), float(box[0] + box[2]), float(box[1] + box[3])])
    region_map = annotation["region_map"]
    if not isinstance(region_map, dict):
        raise DataError(f"{where}: region_map must be {{referring: [box indices]}}")
    for referring, indices in region_map.items():
        if not isinstance(indices, list) or not all(isinstance(i, int) and 0 <= i < len(boxes) for i in indices):
            raise DataError(
                f"{where}: region_map[{referring!r}] = {indices!r} must list indices into the {len(boxes)} gt_boxes"
            )
    think = str(annotation.get("think") or "").strip()
    think = think.removeprefix("<think>").removesuffix("</think>").strip()
    return boxes, region_map, think


# ---------------------------------------------------------------------------------------------------------- convert
@dataclass
class CoTReport:
    """Counts and bad samples of one conversion (written as JSON beside the output)."""

    out: str
    samples: int = 0
    rows: int = 0
    with_reasoning: int = 0
    clipped_boxes: int = 0
    images_reencoded: int = 0  # stored as the decoded picture (PNG): decoding changed the file's pixels
    errors: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        action = f"wrote {self.rows} rows ({self.with_reasoning} with a reasoning target) to {self.out}"
        action = action if self.rows else "wrote nothing"
        bad = len(self.errors)
        return (
            f"humanref-cot: {self.samples} samples, {bad} bad; {action}; {self.clipped_boxes} boxes clipped; "
            f"{self.images_reencoded} images stored as the decoded picture (PNG)"
        )


def sample_rows(sample: CoTSample, options: ConvertOptions, category: str) -> tuple[list[dict], int, bool]:
    """Training rows of one sample (one per expression), how many of its boxes were clipped into the image, and
    whether its image is stored as the decoded picture (``rexthinker_rl.data.images.stored_bytes``)."""
    decoded = decode(sample.image_bytes, f"sample {sample.index}")
    size = decoded.image.size
    image_bytes, reencoded = stored_bytes(sample.image_bytes, decoded)  # the frame the boxes are in, for every reader
    if sample.think and (reason := check_text("think", sample.think)) is not None:
        raise RecordError(sample.index, reason)
    clipped_boxes = [_clip(box, size) for box in sample.boxes]
    clipped = sum(box != original for box, original in zip(clipped_boxes, sample.boxes, strict=True))
    candidates = [Candidate(box, category) for box in clipped_boxes]
    rows = []
    for number, (referring, indices) in enumerate(sample.region_map.items()):
        answers = [clipped_boxes[i] for i in dict.fromkeys(indices)]
        record = Record(sample.index, sample.image_id, referring, category, answers, candidates)
        row, merged, degenerate = build_row(record, size, options)
        if merged or degenerate:
            raise RecordError(
                sample.index,
                f"{merged + degenerate} of its {len(candidates)} boxes merge or vanish in the "
                f"{row['resized_size'][0]}x{row['resized_size'][1]} frame: the hint numbers in its reasoning would "
                "shift (raise --min-pixels)",
            )
        if sample.think and len(sample.region_map) == 1:
            row["sft_target"] = f"<think>{sample.think}</think><answer>{row['answer']}</answer>"
        image = {"bytes": image_bytes, "path": sample.image_id}
        rows.append(row | {"id": f"humanref_cot-{sample.index:06d}-{number}", "images": [image]})
    return rows, clipped, reencoded


def _clip(box: list[float], size: tuple[int, int]) -> list[float]:
    width, height = size
    return [min(max(v, 0.0), limit) for v, limit in zip(box, (width, height, width, height), strict=True)]


def convert(
    reader: HumanRefCoT,
    out: str | Path,
    min_pixels: int,
    max_pixels: int,
    category: str = "person",
    on_error: str = "fail",
    max_samples: int = -1,
) -> CoTReport:
    """Write the training parquet ``out`` (atomically) and a report beside it; with ``on_error="fail"`` and any bad
    sample nothing but the report is written."""
    if on_error not in ON_ERROR:
        raise ValueError(f"--on-error {on_error!r}: choose one of {', '.join(ON_ERROR)}")
    out = Path(out)
    options = ConvertOptions(image_root=".", min_pixels=min_pixels, max_pixels=max_pixels)
    report = CoTReport(str(out))
    count = len(reader) if max_samples < 0 else min(max_samples, len(reader))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    writer = pq.ParquetWriter(tmp, FEATURES.arrow_schema)
    pending: list[dict] = []
    where = f"{reader.annotations_path.name} sample"
    try:
        for index in tqdm(range(count), desc="humanref-cot", unit="sample"):
            report.samples += 1
            try:
                rows, clipped, reencoded = sample_rows(reader[index], options, category)
            except (DataError, RecordError) as err:
                reason = getattr(err, "reason", str(err))
                report.errors.append((index, reason.split("): ", 1)[-1] if reason.startswith(where) else reason))
                continue
            report.clipped_boxes += clipped
            report.images_reencoded += reencoded
            report.rows += len(rows)
            report.with_reasoning += sum(row["sft_target"] is not None for row in rows)
            pending.extend(rows)
            if len(pending) >= 256:
                writer.write_table(pa.Table.from_pylist(pending, schema=FEATURES.arrow_schema))
                pending = []
        if pending:
            writer.write_table(pa.Table.from_pylist(pending, schema=FEATURES.arrow_schema))
        writer.close()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    if report.errors and on_error == "fail" or not report.rows:
        tmp.unlink()
        report.rows = 0
    else:
        tmp.replace(out)
    write_report(out, asdict(report) | {"errors": [{"sample": i, "reason": r} for i, r in report.errors]})
    return report


# -------------------------------------------------------------------------------------------------------- visualise
def visualise(reader: HumanRefCoT, out_dir: str | Path, num: int = 20, seed: int = 0) -> list[Path]:
    """PNG pictures of ``num`` samples drawn at random (seeded): numbered candidates, targets, reasoning."""
    out = Path(out_dir)
    indices = sorted(random.Random(seed).sample(range(len(reader)), min(num, len(reader))))
    written = []
    for index in indices:
        sample = reader[index]
        image = decode_image(sample.image_bytes, f"sample {index}")
        targets = [sample.boxes[i] for indices in sample.region_map.values() for i in indices]
        title = " | ".join(sample.region_map) or "(no expression)"
        text = sample.think or "(no reasoning)"
        picture = render(image, hints=sample.boxes, gt=targets, text=text, title=title)
        written.append(save_image(picture, out / f"humanref_cot_{index:06d}.png"))
    return written
