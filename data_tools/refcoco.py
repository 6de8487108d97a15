"""RefCOCO / RefCOCO+ / RefCOCOg (``refs(unc|umd|google).p`` + ``instances.json``) -> interchange records.

One record per sentence of the chosen split. The answer is the referred annotation's box; the candidate boxes are every
annotation of the referred category in that image, exact, so no detector is needed and ground truth is among the hints
by construction. COCO boxes ``[x, y, w, h]`` become ``[x0, y0, x1, y1]``, clipped into the image. The refs file is a
pickle and is read with :func:`data_tools.safe_pickle.load_plain_pickle`, which never runs code from the file.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_tools.interchange import Candidate, Record, write_records, write_report
from data_tools.safe_pickle import load_plain_pickle
from rexthinker_rl.data.dataset import DataError
from rexthinker_rl.data.rows import read_text

_REF_KEYS = ("ref_id", "image_id", "ann_id", "split", "sentences")


@dataclass
class _Instances:
    images: dict[int, dict[str, Any]]  # image id -> {"file_name", "width", "height"}
    annotations: dict[int, dict[str, Any]]  # annotation id -> annotation
    by_image: dict[int, list[dict[str, Any]]]  # image id -> its annotations, in file order
    categories: dict[int, str]  # category id -> name


@dataclass
class RefcocoReport:
    """What ``from-refcoco`` read and wrote."""

    refs: str
    out: str
    split: str
    refs_in_split: int = 0
    sentences: int = 0  # records written: one per kept sentence
    images: int = 0
    capped: int = 0  # sentences left out by --max-per-image
    limited: int = 0  # records left out by --limit
    missing_images: list[str] = field(default_factory=list)

    def summary(self) -> str:
        missing = f"; {len(self.missing_images)} images missing under --image-root" if self.missing_images else ""
        limited = f", {self.limited} records over --limit" if self.limited else ""
        return (
            f"from-refcoco: split {self.split!r}: {self.refs_in_split} refs, {self.images} images -> {self.sentences} "
            f"records ({self.capped} sentences over --max-per-image left out{limited}){missing}; wrote {self.out}"
        )


def load_refs(path: str | Path) -> list[dict[str, Any]]:
    """The refs list of a ``refs(*).p`` file (a plain-data pickle), each ref checked for the keys we read."""
    refs = load_plain_pickle(path)
    if not isinstance(refs, list):
        raise DataError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    for index, ref in enumerate(refs):
        missing = [key for key in _REF_KEYS if not isinstance(ref, dict) or key not in ref]
        if missing:
            raise DataError(f"{path}: ref {index} lacks {missing} (a RefCOCO ref has {', '.join(_REF_KEYS)})")
    return refs


def load_instances(path: str | Path) -> _Instances:
    """Images, annotations and category names of a COCO ``instances.json``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"instances file {path} does not exist")
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON ({err})") from None
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise DataError(f"{path}: lacks {missing}; a COCO instances file has images, annotations and categories")
    images = {image["id"]: image for image in data["images"]}
    annotations = {annotation["id"]: annotation for annotation in data["annotations"]}
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for annotation in data["annotations"]:
        by_image[annotation["image_id"]].append(annotation)
    categories = {category["id"]: category["name"] for category in data["categories"]}
    return _Instances(images, annotations, dict(by_image), categories)


def coco_to_xyxy(bbox: list[float], width: int, height: int) -> list[float]:
    """COCO ``[x, y, w, h]`` -> ``[x0, y0, x1, y1]`` clipped into a ``width x height`` image."""
    x, y, w, h = bbox
    return [min(max(value, 0), limit) for value, limit in zip((x, y, x + w, y + h), (width, height) * 2, strict=True)]


def refcoco_records(
    refs: list[dict[str, Any]],
    instances: _Instances,
    split: str,
    max_per_image: int = 0,
    seed: int = 0,
    limit: int = 0,
) -> tuple[list[Record], RefcocoReport]:
    """Records for every sentence of ``split`` (at most ``max_per_image`` sentences an image, drawn with ``seed``);
    with ``limit``, a sample of that many records drawn with ``seed`` (the paper trains on 20,000 of RefCOCOg train)."""
    in_split = [ref for ref in refs if ref["split"] == split]
    if not in_split:
        splits = sorted({str(ref["split"]) for ref in refs})
        raise DataError(f"no refs in split {split!r}; this refs file has splits {', '.join(splits)}")
    rng = random.Random(seed)
    by_image: dict[int, list[tuple[dict, dict]]] = defaultdict(list)
    for ref in in_split:
        for sentence in ref["sentences"]:
            by_image[ref["image_id"]].append((ref, sentence))
    report = RefcocoReport("", "", split, refs_in_split=len(in_split), images=len(by_image))
    records = []
    for image_id in tqdm(sorted(by_image), desc="from-refcoco", unit="image"):
        pairs = by_image[image_id]
        if 0 < max_per_image < len(pairs):
            chosen = sorted(rng.sample(range(len(pairs)), max_per_image))
            report.capped += len(pairs) - max_per_image
            pairs = [pairs[i] for i in chosen]
        records.extend(_record(ref, sentence, instances, len(records), rng) for ref, sentence in pairs)
    if 0 < limit < len(records):
        # Its own generator, so that --limit draws a subset of the very records a run without it writes.
        chosen = sorted(random.Random(f"{seed}:limit").sample(range(len(records)), limit))
        report.limited = len(records) - limit
        records = [replace(records[i], index=position) for position, i in enumerate(chosen)]
    report.sentences = len(records)
    return records, report


def _record(ref: dict, sentence: dict, instances: _Instances, index: int, rng: random.Random) -> Record:
    where = f"ref {ref['ref_id']}"
    image = instances.images.get(ref["image_id"])
    target = instances.annotations.get(ref["ann_id"])
    if image is None or target is None:
        raise DataError(
            f"{where}: image {ref['image_id']} or annotation {ref['ann_id']} is not in instances.json "
            "(refs and instances of different datasets?)"
        )
    if target["image_id"] != ref["image_id"]:
        raise DataError(
            f"{where}: annotation {ref['ann_id']} belongs to image {target['image_id']}, not {ref['image_id']}"
        )
    width, height = image["width"], image["height"]
    category_id = target["category_id"]
    candidates = [
        Candidate(coco_to_xyxy(annotation["bbox"], width, height), instances.categories[category_id])
        for annotation in instances.by_image[ref["image_id"]]
        if annotation["category_id"] == category_id
    ]
    answer = coco_to_xyxy(target["bbox"], width, height)
    if not (answer[2] > answer[0] and answer[3] > answer[1]):
        raise DataError(f"{where}: annotation {ref['ann_id']} box {target['bbox']} is empty inside the image")
    candidates = [c for c in candidates if c.bbox[2] > c.bbox[0] and c.bbox[3] > c.bbox[1]]
    rng.shuffle(candidates)  # annotation order is not a hint about which box is meant
    referring = str(sentence.get("sent") or sentence.get("raw") or "").strip()
    if not referring:
        raise DataError(f"{where}: sentence {sentence.get('sent_id')} has no text ('sent' or 'raw')")
    return Record(
        index=index,
        image_name=image["file_name"],
        referring=referring,
        category=instances.categories[category_id],
        answer_boxes=[answer],
        candidate_boxes=candidates,
        id=f"ref{ref['ref_id']}-sent{sentence.get('sent_id', index)}",
    )


def from_refcoco(
    refs_path: str | Path,
    instances_path: str | Path,
    out: str | Path,
    split: str = "train",
    image_root: str | Path | None = None,
    max_per_image: int = 0,
    seed: int = 0,
    limit: int = 0,
) -> RefcocoReport:
    """Write the interchange file for one split; with ``image_root``, list the images it lacks in the report."""
    if max_per_image < 0 or limit < 0:
        raise ValueError(f"--max-per-image {max_per_image} and --limit {limit} must be >= 0 (0: no cap)")
    refs = load_refs(refs_path)
    instances = load_instances(instances_path)
    records, report = refcoco_records(refs, instances, split, max_per_image, seed, limit)
    report.refs, report.out = str(refs_path), str(out)
    if image_root is not None:
        if not Path(image_root).is_dir():
            raise FileNotFoundError(f"--image-root {image_root} is not a folder")
        names = dict.fromkeys(record.image_name for record in records)
        report.missing_images = [name for name in names if not (Path(image_root) / name).is_file()]
    write_records(out, records)
    write_report(out, asdict(report))
    return report
