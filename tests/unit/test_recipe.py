"""The paper recipe: `bash launch/grpo_refcocog.sh --print-config` resolves it on a CPU machine (no GPU, no worker) with
Rex-Thinker's values; our recipe differs from it only in keys the recipe table (docs/recipes.md) names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from rexthinker_rl.apps.cli import train_main
from rexthinker_rl.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def print_config(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BIN": str(Path(sys.executable).parent)}
    return subprocess.run(
        ["bash", str(ROOT / "launch" / "grpo_refcocog.sh"), "--print-config", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_launch_script_prints_the_paper_recipe():
    done = print_config()
    assert done.returncode == 0, done.stderr
    header = [line for line in done.stdout.splitlines() if line.startswith("#")]
    assert any("prompt preset rexthinker-grpo" in line and "'original'" in line for line in header)
    config = yaml.safe_load(done.stdout)  # the header lines are YAML comments
    # rexthinker/scripts/grpo_tune_refcocog.sh lines 40-55 and rexthinker/scripts/config.yaml.
    assert config["model"]["path"] == "IDEA-Research/Rex-Thinker-GRPO-7B"
    assert (
        config["reward"]["function"] == "rewards.rexthinker:rexthinker_reward" and config["reward"]["components"] == []
    )
    assert config["data"]["prompt_preset"] == "rexthinker-grpo"
    assert (config["data"]["min_pixels"], config["data"]["max_pixels"]) == (12544, 1003520)
    assert (config["data"]["rollout_batch_size"], config["actor"]["global_batch_size"], config["rollout"]["n"]) == (
        64,
        64,
        16,
    )
    actor = config["actor"]
    assert (actor["micro_batch_size_per_device_for_update"], actor["micro_batch_size_per_device_for_experience"]) == (
        2,
        4,
    )
    assert actor["max_tokens_per_micro_batch"] == 0 and actor["loss_agg_mode"] == "micro-batch-token-mean"
    # config.yaml lines 3, 10, 61-63, 85-86: validated once, after training, on the training parquet (batch 16,
    # temperature 0.5, one response); tests/unit/test_paper_run.py holds the details.
    assert (config["trainer"]["val_freq"], config["trainer"]["val_before_train"]) == (-1, False)
    assert config["data"]["val_files"] == config["data"]["train_files"] and config["data"]["val_batch_size"] == 16
    assert (config["rollout"]["val_temperature"], config["rollout"]["val_top_p"]) == (0.5, 0.99)
    assert (config["data"]["order"], config["rollout"]["seed_mode"], config["rollout"]["suppress_tokens"]) == (
        "easyr1",
        "easyr1",
        "image_pad",
    )
    assert (config["checkpoint"]["save_freq"], config["checkpoint"]["save_limit"]) == (50, -1)
    assert (config["algorithm"]["kl_mode"], config["algorithm"]["kl_estimator"], config["algorithm"]["kl_coef"]) == (
        "loss",
        "low_var_kl",
        0.01,
    )
    assert (actor["lr"], actor["weight_decay"], config["rollout"]["top_p"], config["trainer"]["total_epochs"]) == (
        1e-6,
        0.01,
        0.99,
        1,
    )
    # Overrides pass through the launch script; a bad key is one line and status 2.
    assert "path: /models/x" in print_config("model.path=/models/x").stdout
    bad = print_config("actor.lrr=1")
    assert bad.returncode == 2 and "did you mean actor.lr?" in bad.stderr and "Traceback" not in bad.stderr


def test_print_config_counts_the_steps_of_a_local_training_file(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"problem": ["x"] * 200}), tmp_path / "train.parquet")
    train_main(["--config", str(ROOT / "configs/grpo_refcocog.yaml"), "--print-config",
                f"data.train_files={tmp_path / 'train.parquet'}"])  # fmt: skip
    assert "# steps: 1 epoch(s) x (200 rows // 64) = 3" in capsys.readouterr().out


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "kwargs":
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_recipe_table_names_every_difference_between_the_two_recipes():
    paper, ours = (
        _flat(OmegaConf.to_container(OmegaConf.structured(load_config(ROOT / "configs" / name))))
        for name in ("grpo_refcocog.yaml", "grpo_refcocog_ours.yaml")
    )
    # sft.output_dir follows trainer.output_dir; derived values follow the rest.
    differing = {
        key for key in paper if paper[key] != ours[key] and not key.startswith(("derived.", "sft.output_dir"))
    }
    assert "actor.loss_agg_mode" in differing and "reward.function" in differing
    page = (ROOT / "docs" / "recipes.md").read_text(encoding="utf-8")
    section = page.split("\n## The paper recipe", 1)[1].split("\n## ", 1)[0]
    missing = sorted(key for key in differing if f"`{key}`" not in section)
    assert missing == [], f"docs/recipes.md's recipe table does not name {missing}"
