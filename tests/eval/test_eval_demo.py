"""The Gradio demo end to end in headless Chromium against the tiny model: load, upload, ask, see the answer."""

import json
import socket

import pyarrow.parquet as pq
import pytest
from PIL import Image

from rexthinker_rl.apps.infer import Predictor
from rexthinker_rl.config import load_config
from tests.conftest import TINY_OVERRIDES


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    return Predictor(load_config(None, TINY_OVERRIDES + ["rollout.engine=hf"]), str(tiny_model_dir))


@pytest.fixture(scope="module")
def scene(synthetic_data_dir, tmp_path_factory):
    row = pq.read_table(synthetic_data_dir / "val.parquet").to_pylist()[1]
    path = tmp_path_factory.mktemp("demo") / "scene.png"
    path.write_bytes(row["images"][0]["bytes"])
    return path, row["referring"], {row["category"]: json.loads(row["hints"])[row["category"]]}


def test_requests_are_checked_before_the_model_runs(predictor, scene):
    from rexthinker_rl.apps.demo import answer_request

    path, referring, hints = scene
    image = Image.open(path)
    with pytest.raises(ValueError, match="upload an image"):
        answer_request(predictor, None, referring, "circle", json.dumps(hints), None, [])
    with pytest.raises(ValueError, match="hints are not valid JSON"):
        answer_request(predictor, image, referring, "circle", "{[1, 2", None, [])
    with pytest.raises(ValueError, match="no detector was configured"):
        answer_request(predictor, image, referring, "circle", "  ", None, [])
    picture, reasoning, boxes = answer_request(predictor, image, referring, "", json.dumps(hints), None, [])
    assert picture.width > image.width and json.loads(boxes)["hints"] == hints and isinstance(reasoning, str)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_demo_page_answers_in_a_browser(predictor, scene, browser):
    pytest.importorskip("gradio", reason="the [demo] extra is not installed")
    from rexthinker_rl.apps.demo import build_app

    path, referring, hints = scene
    app = build_app(predictor)
    port = _free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
        page.wait_for_selector("#run", timeout=60_000)
        page.set_input_files("#image input[type=file]", str(path))
        page.wait_for_selector("#image img", timeout=30_000)
        page.locator("#referring textarea, #referring input").first.fill(referring)
        page.locator("#hints textarea").first.fill(json.dumps(hints))
        page.click("#run")
        output = page.wait_for_selector("#output img", timeout=60_000)
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=output, timeout=30_000)
        assert output.evaluate("el => el.naturalWidth") > 448  # the rendered picture: enlarged image + reasoning
        page.wait_for_function("() => document.querySelector('#boxes textarea').value.length > 0", timeout=30_000)
        boxes = json.loads(page.locator("#boxes textarea").input_value())
        assert boxes["hints"] == {key: [[float(v) for v in box] for box in value] for key, value in hints.items()}
        assert boxes["answer"] in {"boxes", "rejection", "invalid"}
        page.close()
    finally:
        app.close()
