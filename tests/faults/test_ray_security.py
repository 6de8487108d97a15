"""Ray locked down, checked on a live local run (``rexthinker-train`` in a session of its own, as a user starts it):

- the token file Ray reads (``~/.ray/auth_token``, here under a fresh HOME) is created mode 600;
- every socket the run's processes listen on (GCS, raylet, object manager, workers, agents, metrics) is on loopback;
- the cluster refuses a client without the token, or with a wrong one (gRPC UNAUTHENTICATED), on the GCS, the raylet
  and a worker, while the same calls with the token succeed;
- the token is in no file of the run folder and not in the run's output;
- Ctrl-C (SIGINT to the run's process group, as a terminal sends it) prints one line saying where the run stopped and
  how to continue, exits with status 130 and leaves no process behind.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.faults.runs import (
    finish,
    kill_session,
    read_jsonl,
    run_overrides,
    session_processes,
    start,
    train_command,
    wait_until_gone,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live_run(tmp_path_factory, tiny_model_dir, synthetic_data_dir):
    """A GRPO run of the tiny model, past its first step and still training (1000 steps ahead of it)."""
    root = tmp_path_factory.mktemp("ray_security")
    home, run_dir, log = root / "home", root / "run", root / "run.log"
    home.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    overrides = run_overrides(
        tiny_model_dir, synthetic_data_dir, run_dir, "rollout.engine=hf", "trainer.total_steps=1000"
    )
    # A user's shell: no token and no auth mode set; the trainer must turn authentication on and make the token.
    process = start(
        train_command(overrides), log, ray_tmp, HOME=str(home), RAY_AUTH_MODE=None, RAY_AUTH_TOKEN_PATH=None
    )
    deadline = time.monotonic() + 300
    while not any(record.get("step", 0) >= 1 for record in read_jsonl(run_dir / "metrics.jsonl")):
        if process.poll() is not None or time.monotonic() > deadline:
            kill_session(process)
            pytest.fail(f"the run did not reach step 1:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield {"process": process, "home": home, "run_dir": run_dir, "log": log}
    if process.poll() is None:
        kill_session(process)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _listening(process: psutil.Process) -> list[tuple[str, int]]:
    try:
        return [(c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="inet") if c.status == "LISTEN"]
    except psutil.Error:
        return []


def _sockets(session: int) -> dict[str, list[tuple[str, int]]]:
    """``{process name: listening (address, port)}`` over the run's whole session."""
    sockets: dict[str, list[tuple[str, int]]] = {}
    for process in session_processes(session):
        found = _listening(process)
        if found:
            sockets.setdefault(process.name(), []).extend(found)
    return sockets


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_the_token_file_is_created_private(live_run):
    token = live_run["home"] / ".ray" / "auth_token"
    assert token.is_file() and len(token.read_text().strip()) >= 32
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) & 0o077 == 0


def test_every_service_listens_on_loopback_only(live_run):
    sockets = _sockets(live_run["process"].pid)
    names = " ".join(sockets)
    assert "gcs_server" in names and "raylet" in names and "ray::" in names, sockets  # the check covers them
    exposed = {name: [s for s in found if not _loopback(s[0])] for name, found in sockets.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"


def _call(address: str, method: str, token: str | None) -> str:
    """A raw gRPC call with an empty request: the status code's name ("OK" when it was answered)."""
    import grpc

    channel = grpc.insecure_channel(address)
    call = channel.unary_unary(method, request_serializer=lambda x: x, response_deserializer=lambda x: x)
    try:
        call(b"", metadata=[("authorization", f"Bearer {token}")] if token else None, timeout=10)
        return "OK"
    except grpc.RpcError as error:
        return error.code().name
    finally:
        channel.close()


# The services a client can ask a raylet, the GCS or a worker for; each port answers the methods of its own service.
METHODS = (
    "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
    "/ray.rpc.NodeManagerService/GetNodeStats",
    "/ray.rpc.ObjectManagerService/Pull",
    "/ray.rpc.CoreWorkerService/GetCoreWorkerStats",
)


def test_the_cluster_refuses_a_client_without_the_token(live_run):
    """Every gRPC port of the GCS, the raylet and the workers: without the token, or with a wrong one,
    UNAUTHENTICATED; the same call with the token is answered (so the refusal is the token's doing)."""
    token = (live_run["home"] / ".ray" / "auth_token").read_text().strip()
    ports = [
        (name, port)
        for name, found in _sockets(live_run["process"].pid).items()
        if name in ("gcs_server", "raylet") or (name.startswith("ray::") and "Agent" not in name)
        for _, port in found
    ]
    assert {name for name, _ in ports} >= {"gcs_server", "raylet"} and len(ports) >= 5, ports
    for name, port in ports:
        address = f"127.0.0.1:{port}"
        method = next((m for m in METHODS if _call(address, m, token) != "UNIMPLEMENTED"), None)
        assert method is not None and _call(address, method, token) == "OK", (name, port)
        assert _call(address, method, None) == _call(address, method, "0" * 64) == "UNAUTHENTICATED", (name, port)


def test_the_token_is_in_no_run_file_and_not_in_the_output(live_run):
    token = (live_run["home"] / ".ray" / "auth_token").read_text().strip().encode()
    files = [path for path in live_run["run_dir"].rglob("*") if path.is_file()]
    assert files and not [path for path in files if token in path.read_bytes()]
    assert token not in live_run["log"].read_bytes()


def test_ctrl_c_prints_one_line_and_leaves_nothing_running(live_run):
    process, log = live_run["process"], live_run["log"]
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends to the foreground process group
    status = finish(process, log, timeout=120)
    output = log.read_text()
    lines = [line for line in output.splitlines() if line.startswith(("interrupted:", "error:"))]
    assert status == 130, output[-3000:]
    assert len(lines) == 1 and "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    assert re.fullmatch(
        r"interrupted: during step \d+; rerun the same command with trainer\.resume=auto to continue from .+", lines[0]
    ), lines[0]
    assert wait_until_gone(process.pid) == []
