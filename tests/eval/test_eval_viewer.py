"""Rollout viewer: a static page from what the trainer logs, filtered in a real headless browser."""

import json

import pytest
from PIL import Image

from rexthinker_rl.apps.viewer import build_viewer, main
from rexthinker_rl.config import load_config, save_config
from rexthinker_rl.data.dataset import RLDataset
from rexthinker_rl.model.loading import load_processor
from rexthinker_rl.rollout.base import RolloutResult
from rexthinker_rl.run.rollout_log import log_rollouts
from tests.conftest import TINY_OVERRIDES, TINY_PIXELS
from tests.eval.conftest import red_pixels

GARBAGE = "<think>no idea</think><answer>[[1, 1, 2</answer>"


@pytest.fixture(scope="module")
def run_dir(synthetic_data_dir, tiny_model_dir, tmp_path_factory):
    """A run folder as the trainer leaves it: config.yaml and rollouts.jsonl written by rollout_log.log_rollouts."""
    run = tmp_path_factory.mktemp("run")
    train = synthetic_data_dir / "train.parquet"
    config = load_config(None, TINY_OVERRIDES + [f"data.train_files={train}", "logging.log_rollouts=3"])
    save_config(config, run / "config.yaml")
    processor = load_processor(str(tiny_model_dir), TINY_PIXELS, TINY_PIXELS)
    dataset = RLDataset(str(train), processor, config.data)
    for step in (1, 2):
        prompts = [dataset[i] for i in range(3 * step - 3, 3 * step)]
        # the first two answer with the row's own correct target, the third with garbage
        texts = [prompts[0].sft_target, prompts[1].sft_target, GARBAGE]
        results = [RolloutResult(i, [], [], text, "stop") for i, text in enumerate(texts)]
        scores = [{"overall": 1.0, "accuracy": 1.0, "format": 1.0}] * 2 + [{"overall": 0.0, "accuracy": 0.0}]
        log_rollouts(run / "rollouts.jsonl", step, prompts, results, scores, config.logging.log_rollouts)
    return run


def test_page_has_every_rollout_with_its_image_and_boxes(run_dir, synthetic_data_dir):
    assert main([str(run_dir)]) == 0
    page = (run_dir / "viewer.html").read_text()
    assert page.count('<article class="card"') == 6
    assert page.count("data:image/png;base64,") == 6  # six distinct rows, each image embedded once
    assert page.count('<rect class="pred"') >= 2 and '<rect class="gt"' in page and '<text class="hint"' in page
    assert "&lt;think&gt;no idea&lt;/think&gt;" in page and GARBAGE not in page  # completions are escaped
    assert 'data-reward="0.0"' in page and 'data-step="2"' in page


def test_missing_images_and_bad_lines(run_dir, tmp_path, capsys):
    (tmp_path / "rollouts.jsonl").write_text((run_dir / "rollouts.jsonl").read_text())
    out = build_viewer(tmp_path)  # no config.yaml: drawn without images
    page = out.read_text()
    assert "no image" in page and "data:image/png" not in page
    (tmp_path / "rollouts.jsonl").write_text('{"step": 1}\n')
    assert main([str(tmp_path)]) == 2
    assert "rollouts.jsonl line 1: not a rollout record (KeyError" in capsys.readouterr().err


@pytest.mark.slow
def test_viewer_filters_in_a_browser(run_dir, browser, tmp_path):
    build_viewer(run_dir)
    page = browser.new_page()
    page.goto((run_dir / "viewer.html").as_uri())
    assert page.inner_text("#count") == "6 of 6 rollouts"
    page.eval_on_selector("#min", "e => { e.value = 0.5; e.dispatchEvent(new Event('input')); }")
    assert page.inner_text("#count") == "4 of 6 rollouts"
    assert page.locator(".card:visible").count() == 4
    page.select_option("#step", "2")
    assert page.inner_text("#count") == "2 of 6 rollouts"
    page.select_option("#step", "")
    page.eval_on_selector("#min", "e => { e.value = 0; e.dispatchEvent(new Event('input')); }")
    page.fill("#q", "invalid")  # the answer kind of the garbage completions
    assert page.inner_text("#count") == "2 of 6 rollouts"
    page.fill("#q", "")
    # the first card's image is painted (the scene's colours) and its answer box laid over it, at the hint's place
    card = tmp_path / "card.png"
    page.locator("#r0 svg").screenshot(path=str(card))
    assert len(Image.open(card).convert("RGB").getcolors(2**16)) > 3
    svg_box, pred_box = page.locator("#r0 svg").bounding_box(), page.locator("#r0 rect.pred").bounding_box()
    first = json.loads((run_dir / "rollouts.jsonl").read_text().splitlines()[0])
    scale = svg_box["width"] / 112
    answer_box = json.loads(first["ground_truth"].split("```json")[1].split("```")[0])[0]["bbox_2d"]
    assert pred_box["x"] - svg_box["x"] == pytest.approx(answer_box[0] * scale, abs=2)
    assert pred_box["width"] == pytest.approx((answer_box[2] - answer_box[0]) * scale, abs=2)
    # The answer box is painted, in the answer colour: hiding it takes red pixels away (the shapes may be red too).
    bare = tmp_path / "card_without_answer.png"
    page.eval_on_selector("#r0 rect.pred", "e => { e.style.visibility = 'hidden'; }")
    page.locator("#r0 svg").screenshot(path=str(bare))
    assert red_pixels(card) - red_pixels(bare) > 20
    page.close()
