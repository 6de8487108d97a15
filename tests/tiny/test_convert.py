"""A checkpoint converts to a Hugging Face folder whose model gives the checkpoint's logits exactly."""

import pytest
import torch
from PIL import Image

from rexthinker_rl.apps.convert import convert_checkpoint, main
from rexthinker_rl.config import load_config, to_yaml
from rexthinker_rl.model.loading import load_model, load_processor
from rexthinker_rl.rollout import SamplingSpec
from rexthinker_rl.train.checkpoint import CheckpointError, save_checkpoint
from tests.conftest import TINY_OVERRIDES, TINY_PIXELS


def _inputs(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "the red circle"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=[Image.new("RGB", (112, 112), "red")], return_tensors="pt")


@pytest.fixture()
def checkpoint(tiny_model_dir, tmp_path):
    config = load_config(None, TINY_OVERRIDES + [f"model.path={tiny_model_dir}"])
    trained = load_model(str(tiny_model_dir))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in trained.parameters():
            param.add_(0.01 * torch.randn(param.shape, generator=generator))
    state = {"step": 7, "sampler": {}, "history": []}
    folder = save_checkpoint(tmp_path / "ckpts", 7, trained.state_dict(), None, state, to_yaml(config))
    return folder, trained


def test_logits_equal_after_round_trip(checkpoint, tiny_model_dir, tmp_path):
    folder, trained = checkpoint
    out = convert_checkpoint(folder, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= {
        p.name for p in out.iterdir()
    }
    converted = load_model(str(out))
    inputs = _inputs(load_processor(str(out), TINY_PIXELS, TINY_PIXELS))
    with torch.no_grad():
        expected = trained.eval()(**inputs).logits
        got = converted(**inputs).logits
        base = load_model(str(tiny_model_dir))(**inputs).logits
    assert torch.equal(got, expected)
    assert not torch.allclose(got, base)  # the checkpoint's weights, not the base model's


def test_corrupt_checkpoint_is_refused_with_one_line(checkpoint, tmp_path, capsys):
    folder, _ = checkpoint
    weights = folder / "actor" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        convert_checkpoint(folder, tmp_path / "hf")
    with pytest.raises(SystemExit) as exit_info:
        main([str(folder), str(tmp_path / "hf")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "hf").exists()


@pytest.mark.vllm
def test_vllm_loads_the_converted_folder(checkpoint, tmp_path):
    """The converted folder is a checkpoint vLLM serves: its greedy output equals transformers' on the same folder.

    vLLM runs in a child process: an in-process engine torn down here would take vLLM's global parallel state with
    it, under the session's shared engine."""
    pytest.importorskip("vllm")
    import json
    import subprocess
    import sys

    from rexthinker_rl.rollout.hf_engine import HFEngine
    from tests.tiny.test_parity import _prompts

    folder, _ = checkpoint
    out = convert_checkpoint(folder, tmp_path / "hf")
    config = load_config(None, TINY_OVERRIDES)
    greedy = SamplingSpec(n=1, temperature=0.0, max_tokens=16)
    expected = [r.response_ids for r in HFEngine(config, str(out)).generate(_prompts(out), greedy)]
    child = f"""
import json, os
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
from rexthinker_rl.config import load_config
from rexthinker_rl.rollout import SamplingSpec
from rexthinker_rl.rollout.vllm_engine import VLLMEngine
from tests.conftest import TINY_OVERRIDES
from tests.tiny.test_parity import _prompts
engine = VLLMEngine(load_config(None, TINY_OVERRIDES), {str(out)!r})
results = engine.generate(_prompts({str(out)!r}), SamplingSpec(n=1, temperature=0.0, max_tokens=16))
print("IDS=" + json.dumps([r.response_ids for r in results]))
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("IDS=")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    assert json.loads(lines[-1][4:]) == expected
