#!/usr/bin/env bash
# The Rex-Thinker GRPO recipe (configs/grpo_refcocog.yaml): Qwen2.5-VL-7B on RefCOCOg with box hints, 8 GPUs.
# Every key can be overridden, and extra arguments pass through:
#   bash launch/grpo_refcocog.sh model.path=/models/rexthinker-7b-sft data.train_files=/data/refcocog_train.parquet
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
exec "$BIN/rexthinker-train" --config configs/grpo_refcocog.yaml "$@"
