"""Safety: no remote code unless asked, no pickle that can run code, servers on 127.0.0.1, no secrets on disk.

- ``model.trust_remote_code`` is off by default, no call passes a literal True, and a model folder that names custom
  code is refused without running it.
- Checkpoint ``.pt`` files are read with ``weights_only=True``: a crafted pickle (with a manifest that matches it) is
  refused with a clear error and its payload never runs. Weights travel as safetensors; no bare ``torch.load`` or
  ``pickle.load`` exists in the framework.
- The demo binds 127.0.0.1 unless told otherwise (checked on the live socket); so does a local training run (its live
  sockets, sampled while it runs: Ray's included, bound to loopback by ``rexthinker_rl/runtime/ray_cluster.py``).
- A secret that a real run reads (from the environment, from ``${oc.env:...}`` in its config, in a reward's keyword
  arguments) reaches none of the files it or Ray writes, its console output included.
"""

from __future__ import annotations

import ast
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import torch

from rexthinker_rl.config import load_config
from rexthinker_rl.train.checkpoint import CheckpointError, _sha256, load_checkpoint, save_checkpoint, verify
from tests.faults.runs import (
    finish,
    read_jsonl,
    run_overrides,
    session_processes,
    start,
    train_command,
    wait_until_gone,
)

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
    from rexthinker_rl.model.loading import load_model

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
    from rexthinker_rl.model.loading import load_model, load_processor, save_hf_folder

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
    command = [sys.executable, "-c", "from rexthinker_rl.apps.demo import console_main; console_main()"]
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


# ------------------------------------------------------------------------------------- a real run: secrets, sockets
SECRET = "wandb-key-" + os.urandom(8).hex()
JUDGE = '''
import os


def judge(inputs, api_key: str = ""):
    """A reward that needs a key (a paid judge would): it only reports whether the key reached it."""
    seen = float(bool(api_key) and api_key == os.environ.get("WANDB_API_KEY"))
    return [{"overall": 0.0, "key_seen": seen} for _ in inputs]
'''
RUN_YAML = """
reward:
  components:
    - function: {example}:hint_faithful_f1
      name: faithful_f1
      kwargs: {{penalty: 0.5}}
    - function: {judge}:judge
      weight: 0.0
      kwargs: {{api_key: "${{oc.env:WANDB_API_KEY}}"}}
trainer:
  project_name: ${{oc.env:WANDB_API_KEY}}
"""


def _listening(processes) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket the processes listen on."""
    found = set()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            name = process.name()
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN:
                    found.add((name, connection.laddr.ip, connection.laddr.port))
    return found


@pytest.fixture(scope="module")
def secret_run(tiny_model_dir, synthetic_data_dir, tmp_path_factory):
    """A real ``rexthinker-train`` run (Ray, actor and rollout workers, 1 step, validation, checkpoint, final model)
    with a secret where the code could leak it: in the environment (inherited by Ray and every worker), in a config
    value through ``${oc.env:...}`` (saved configs, logger names) and in a reward's keyword arguments (shipped to the
    reward tasks). The reward is the README's custom reward. Its listening sockets are sampled while it runs."""
    folder = tmp_path_factory.mktemp("secret_run")
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    (folder / "judge.py").write_text(JUDGE)
    example = ROOT / "examples" / "custom_reward.py"
    (folder / "run.yaml").write_text(RUN_YAML.format(example=example, judge=folder / "judge.py"))
    run_dir = folder / "run"
    overrides = [o for o in run_overrides(tiny_model_dir, synthetic_data_dir, run_dir) if not o.startswith("reward.")]
    overrides += [
        "rollout.engine=hf",
        "trainer.total_steps=1",
        "trainer.val_before_train=false",
        "logging.sinks=[console,jsonl,tensorboard]",
    ]
    log = folder / "console.log"
    process = start(
        train_command(["--config", str(folder / "run.yaml"), *overrides]), log, ray_tmp, WANDB_API_KEY=SECRET
    )
    sockets: set[tuple[str, str, int]] = set()
    try:
        while process.poll() is None:
            sockets |= _listening(session_processes(process.pid))
            time.sleep(0.5)
        status = finish(process, log)
        assert not wait_until_gone(process.pid), "processes of the run outlived it"
        written = [p for root in (folder, ray_tmp) for p in root.rglob("*") if p.is_file()]
        yield status, run_dir, log, sockets, written
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.mark.slow
def test_the_run_used_the_custom_reward_and_the_secret(secret_run):
    status, run_dir, log, _, _ = secret_run
    assert status == 0, log.read_text()[-3000:]
    (step,) = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("step") == 1]
    assert "reward/faithful_f1" in step and "reward/faithful_f1/faithful" in step  # examples/custom_reward.py ran
    assert step["reward/judge/key_seen"] == 1.0  # the secret reached the reward task: the code really read it


@pytest.mark.slow
def test_no_secret_reaches_any_file_of_a_real_run(secret_run):
    _, run_dir, _, _, written = secret_run
    names = {p.name for p in written}
    assert {"config.yaml", "metrics.jsonl", "model.safetensors", "manifest.json", "console.log"} <= names
    assert any(p.name.startswith("events.out.tfevents") for p in written)  # tensorboard
    assert any(p.suffix == ".log" and "session_" in str(p) for p in written)  # Ray's own logs are read too
    leaked = [str(p) for p in written if SECRET.encode() in p.read_bytes()]
    assert not leaked, f"the secret was written to {leaked}"
    assert "<redacted" in (run_dir / "config.yaml").read_text()  # where it was, a placeholder is


def _is_loopback(address: str) -> bool:
    """127.0.0.1 and ::1, also as Ray's dual-stack sockets report 127.0.0.1 (::ffff:127.0.0.1, which
    ``is_loopback`` misses before Python 3.13)."""
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.slow
def test_a_local_run_listens_on_loopback_only(secret_run):
    _, _, _, sockets, _ = secret_run
    assert sockets, "no listening socket seen: the sampling missed the run"
    exposed = sorted(s for s in sockets if not _is_loopback(s[1]))
    assert not exposed, f"listening beyond this host: {exposed}"


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
