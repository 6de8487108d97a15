"""Safety: no remote code unless asked, no pickle that can run code, servers on 127.0.0.1, no secrets on disk.

- ``model.trust_remote_code`` is off by default, no call passes a literal True, and a model folder that names custom
  code is refused without running it.
- Checkpoint ``.pt`` files are read with ``weights_only=True``: a crafted pickle (with a manifest that matches it) is
  refused with a clear error and its payload never runs. Weights travel as safetensors; no bare ``torch.load`` or
  ``pickle.load`` exists in the framework.
- The demo binds 127.0.0.1 unless told otherwise (checked on the live socket).
- A wandb key in the environment reaches none of the files a run writes (config, metrics, checkpoint, plots).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from rexthinker_rl.checkpoint import CheckpointError, _sha256, load_checkpoint, save_checkpoint, verify
from rexthinker_rl.config import load_config

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    path
    for folder in ("rexthinker_rl", "data_tools", "rewards")
    for path in (ROOT / folder).rglob("*.py")
    if ".venv" not in path.parts
)


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node


def _name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


# ------------------------------------------------------------------------------------------------ remote code
def test_trust_remote_code_is_off_unless_set():
    assert load_config().model.trust_remote_code is False
    literal_true = [
        f"{path.relative_to(ROOT)}:{call.lineno}"
        for path in SOURCES
        for call in _calls(path)
        for keyword in call.keywords
        if keyword.arg == "trust_remote_code" and isinstance(keyword.value, ast.Constant) and keyword.value.value
    ]
    assert not literal_true
    # Every loader of model code in the framework passes the setting on (a call without it gets the library default).
    loaders = [
        (f"{path.relative_to(ROOT)}:{call.lineno}", {k.arg for k in call.keywords})
        for path in SOURCES
        if "rexthinker_rl" in path.relative_to(ROOT).parts
        for call in _calls(path)
        if _name(call) in ("from_pretrained", "LLM")
    ]
    assert len(loaders) >= 3  # processor, model, vLLM engine
    # (vLLM's LLM(**kwargs) gets the key inside the dict it is built from: the None keyword.)
    silent = [where for where, keys in loaders if "trust_remote_code" not in keys and None not in keys]
    assert not silent, f"model loaders that do not pass trust_remote_code: {silent}"


def test_a_model_folder_with_custom_code_is_refused_unrun(tiny_model_dir, tmp_path):
    from rexthinker_rl.modeling import load_model

    evil = Path(shutil.copytree(tiny_model_dir, tmp_path / "evil"))
    marker = tmp_path / "custom_code_ran"
    config = json.loads((evil / "config.json").read_text())
    config["model_type"] = "evil_vl"
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForImageTextToText": "evil.EvilModel"}
    (evil / "config.json").write_text(json.dumps(config))
    (evil / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    model_cfg = load_config().model
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_model(str(evil), trust_remote_code=model_cfg.trust_remote_code)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------- pickles
class _Payload:
    """Unpickling this runs a shell command: what a tampered checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["actor/train_state.pt", "rng_state.pt"])
def test_a_tampered_checkpoint_pickle_is_refused_unrun(tmp_path, name):
    folder = save_checkpoint(
        tmp_path / "checkpoints",
        1,
        {"w": torch.ones(2, 2)},
        {"optimizer": {"state": {}}, "scheduler": {}},
        {"step": 1, "sampler": {}, "history": []},
        "",
        rng_state={"torch": torch.get_rng_state()},
    )
    marker = tmp_path / "payload_ran"
    target = folder / name
    torch.save({"optimizer": _Payload(marker)}, target)
    # Re-sign the manifest, as an attacker who can write the folder can: the checksum check alone would pass it.
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": _sha256(target), "bytes": target.stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert verify(folder) is None

    with pytest.raises(
        CheckpointError, match=rf"{name}: refused to load: it holds objects other than tensors"
    ) as info:
        load_checkpoint(folder)
    assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)
    assert not marker.exists()
    # The trap is real: an unrestricted load runs it.
    torch.load(target, weights_only=False)
    assert marker.exists()


def test_no_unrestricted_unpickling_in_the_framework():
    unsafe, torch_loads = [], 0
    for path in SOURCES:
        for call in _calls(path):
            keywords = {k.arg: k.value for k in call.keywords}
            if _name(call) == "load" and getattr(call.func, "value", None) is not None:
                owner = getattr(call.func.value, "id", "")
                torch_loads += owner == "torch"
                weights_only = keywords.get("weights_only")
                if owner == "torch" and not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    unsafe.append(f"{path.relative_to(ROOT)}:{call.lineno} torch.load without weights_only=True")
                if owner == "pickle":
                    unsafe.append(f"{path.relative_to(ROOT)}:{call.lineno} pickle.load")
            if _name(call) == "loads" and getattr(getattr(call.func, "value", None), "id", "") == "pickle":
                unsafe.append(f"{path.relative_to(ROOT)}:{call.lineno} pickle.loads")
    assert torch_loads >= 1  # the checkpoint loader is seen
    assert not unsafe


def test_weights_are_written_as_safetensors(tmp_path, tiny_model_dir):
    from rexthinker_rl.modeling import load_model, load_processor, save_hf_folder

    folder = save_hf_folder(
        load_model(str(tiny_model_dir)), load_processor(str(tiny_model_dir), 12544, 12544), tmp_path
    )
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl", ".pth"))]


# ---------------------------------------------------------------------------------------------------- servers
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_demo_binds_localhost_by_default(tiny_model_dir, tmp_path):
    pytest.importorskip("gradio")
    port = _free_port()
    log = tmp_path / "demo.log"
    command = [sys.executable, "-c", "from rexthinker_rl.demo import console_main; console_main()"]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_SERVER_NAME", None)  # the default, not an environment override, is under test
    args = ["--model", str(tiny_model_dir), "--port", str(port), "data.min_pixels=12544", "data.max_pixels=12544"]
    with log.open("w") as handle:
        process = subprocess.Popen(
            [*command, *args, "trainer.device=cpu"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        listening = []
        while not listening and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            listening = [
                c.laddr.ip
                for c in psutil.Process(process.pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == port
            ]
            time.sleep(0.2)
        assert listening == ["127.0.0.1"], f"the demo listens on {listening}:\n{log.read_text()[-2000:]}"
    finally:
        os.killpg(process.pid, 9)
        process.wait(timeout=30)


def test_no_source_binds_all_interfaces_by_default():
    scripts = [*SOURCES, *sorted((ROOT / "launch").glob("*.sh"))]
    wildcard = [str(p.relative_to(ROOT)) for p in scripts if "0.0.0.0" in p.read_text()]
    assert not wildcard


# ---------------------------------------------------------------------------------------------------- secrets
def test_no_secret_reaches_the_files_a_run_writes(tmp_path, monkeypatch):
    from rexthinker_rl.config import save_config, to_yaml
    from rexthinker_rl.logging import MetricsLogger
    from rexthinker_rl.plots import plot_curves

    secret = "wandb-key-" + os.urandom(8).hex()
    monkeypatch.setenv("WANDB_API_KEY", secret)
    config = load_config(None, [f"trainer.output_dir={tmp_path}", "logging.sinks=[console,jsonl,tensorboard]"])
    save_config(config, tmp_path / "config.yaml")
    logger = MetricsLogger(config.logging.sinks, tmp_path, 2, "project", "name")
    for step in (1, 2):
        logger.log(step, {"reward/overall": 0.5 * step, "response_length/mean": 10.0})
    logger.close()
    plot_curves(tmp_path)
    save_checkpoint(tmp_path / "checkpoints", 2, {"w": torch.ones(1)}, None, {"step": 2}, to_yaml(config))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 6  # config, metrics, tensorboard events, plot, checkpoint files
    leaked = [str(p.relative_to(tmp_path)) for p in written if secret.encode() in p.read_bytes()]
    assert not leaked, f"the wandb key was written to {leaked}"


def test_a_secret_interpolated_into_the_config_is_not_saved(tmp_path, monkeypatch):
    """``${oc.env:WANDB_API_KEY}`` resolves at load time (the run may need it) but the saved config holds a placeholder."""
    from rexthinker_rl.config import REDACTED, save_config

    secret = "wandb-key-" + os.urandom(8).hex()
    monkeypatch.setenv("WANDB_API_KEY", secret)
    config = load_config(None, ["trainer.experiment_name=${oc.env:WANDB_API_KEY}"])
    assert config.trainer.experiment_name == secret
    save_config(config, tmp_path / "config.yaml")
    saved = (tmp_path / "config.yaml").read_text()
    assert secret not in saved and REDACTED in saved
