"""data_tools.detectors.grounding_dino on a tiny random Grounding DINO built offline: shapes, thresholds, batching,
boxes in original-image pixels, and the add-candidates plumbing. Scores are meaningless (random weights)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from data_tools.cli import main
from data_tools.detectors import grounding_dino

NUM_QUERIES = 12
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "a", "red", "cat", "dog", "traffic", "light", "person"]


def build_tiny_grounding_dino(folder, seed: int = 0):
    """A Grounding DINO checkpoint folder (ResNet backbone, 1-layer BERT, WordPiece tokenizer) of ~70k parameters."""
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        ResNetConfig,
    )

    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )  # fmt: skip
    text = BertConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64,
    )  # fmt: skip
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, use_timm_backbone=False, use_pretrained_backbone=False,
        num_queries=NUM_QUERIES, d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_feature_levels=3, encoder_n_points=1,
        decoder_n_points=1, max_text_len=32, disable_custom_kernels=True,
    )  # fmt: skip
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(VOCAB)}, do_lower_case=True)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gdino(tmp_path_factory):
    return str(build_tiny_grounding_dino(tmp_path_factory.mktemp("gdino")))


def images_of(*sizes):
    return [Image.new("RGB", size, (40 * i, 200 - 30 * i, 90)) for i, size in enumerate(sizes)]


def test_shapes_thresholds_and_original_pixels(gdino):
    sizes = [(160, 90), (48, 200), (300, 300)]
    images = images_of(*sizes)
    categories = ["red cat", "dog", "traffic light"]
    everything = grounding_dino(images, categories, model_path=gdino, box_threshold=0.0, text_threshold=0.0)
    assert len(everything) == 3
    for detections, (width, height) in zip(everything, sizes, strict=True):
        assert 0 < len(detections) <= NUM_QUERIES
        scores = [d["score"] for d in detections]
        assert scores == sorted(scores, reverse=True)
        for detection in detections:
            x0, y0, x1, y1 = detection["bbox"]
            assert -1e-3 <= x0 <= x1 <= width + 1e-3 and -1e-3 <= y0 <= y1 <= height + 1e-3
    median = sorted(d["score"] for ds in everything for d in ds)[len(sum(everything, [])) // 2]
    some = grounding_dino(images, categories, model_path=gdino, box_threshold=median, text_threshold=0.0)
    assert all(d["score"] > median for ds in some for d in ds)
    assert 0 < sum(map(len, some)) < sum(map(len, everything))
    assert grounding_dino(images, categories, model_path=gdino, box_threshold=1.0) == [[], [], []]
    # no word of the category scores above 1: every box is left out, whatever its box score
    assert grounding_dino(images, categories, model_path=gdino, box_threshold=0.0, text_threshold=1.0) == [[], [], []]
    capped = grounding_dino(images, categories, model_path=gdino, box_threshold=0.0, max_detections=2)
    assert [len(ds) for ds in capped] == [2, 2, 2]


def test_boxes_are_the_models_boxes_scaled_to_each_image(gdino):
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    (image,) = images_of((160, 90))
    (detections,) = grounding_dino([image], ["dog"], model_path=gdino, box_threshold=0.0, text_threshold=0.0)
    processor = AutoProcessor.from_pretrained(gdino)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(gdino).eval()
    with torch.inference_mode():
        outputs = model(**processor(images=[image], text=["dog."], return_tensors="pt"))
    cx, cy, w, h = outputs.pred_boxes[0].unbind(-1)  # (queries,) each, relative to the image
    expected = torch.stack([(cx - w / 2) * 160, (cy - h / 2) * 90, (cx + w / 2) * 160, (cy + h / 2) * 90], -1)
    scores = outputs.logits[0].sigmoid().max(-1).values
    order = scores.argsort(descending=True)[: len(detections)]
    assert torch.allclose(torch.tensor([d["bbox"] for d in detections]), expected[order], atol=1e-3)


def test_batching_does_not_change_results(gdino):
    images = images_of((128, 96), (128, 96), (128, 96))
    categories = ["cat", "traffic light", "a red dog"]  # different text lengths: padded within a batch
    kwargs = {"model_path": gdino, "box_threshold": 0.0, "text_threshold": 0.0}
    one_by_one = grounding_dino(images, categories, batch_size=1, **kwargs)
    together = grounding_dino(images, categories, batch_size=3, **kwargs)
    for single, batched in zip(one_by_one, together, strict=True):
        assert len(single) == len(batched)
        assert torch.allclose(
            torch.tensor([d["bbox"] for d in single]), torch.tensor([d["bbox"] for d in batched]), atol=1e-3
        )


def test_add_candidates_with_grounding_dino(gdino, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for index, image in enumerate(images_of((160, 90), (64, 64))):
        image.save(images / f"{index}.png")
    records = [
        {"image_name": "0.png", "referring": "the cat", "category": "cat", "answer_boxes": [[10, 10, 50, 50]]},
        {"image_name": "1.png", "referring": "the dog", "category": "dog", "answer_boxes": []},
    ]
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps(records))
    args = ["add-candidates", "--anno", str(anno), "--image-root", str(images), "--out", str(tmp_path / "out.json")]
    args += ["--detector", "data_tools.detectors:grounding_dino", "--detector-arg", f"model_path={gdino}"]
    args += ["--detector-arg", "box_threshold=0.0", "--detector-arg", "text_threshold=0.0", "--batch-size", "2"]
    assert main(args) == 0
    assert "2 records, 0 bad, 2 image/category pairs" in capsys.readouterr().out
    written = json.loads((tmp_path / "out.json").read_text())
    for record in written:
        hints = [c["bbox"] for c in record["candidate_boxes"]]
        assert all(box in hints for box in record["answer_boxes"])
        assert len(hints) >= 1
    assert main([*args[:-2], "--detector-arg", "model_path=/nonexistent", "--overwrite"]) == 2
    assert "Grounding DINO checkpoint folder /nonexistent does not exist" in capsys.readouterr().err
