#!/usr/bin/env bash
# The Rex-Thinker GRPO recipe (configs/grpo_refcocog.yaml): Qwen2.5-VL-7B on RefCOCOg with box hints, 8 GPUs.
# Every key can be overridden, and extra arguments pass through:
#   bash launch/grpo_refcocog.sh model.path=/models/rexthinker-7b-sft data.train_files=/data/refcocog_train.parquet
# Several nodes: start Ray on each (head: `ray start --head --port=6379`; others: `ray start --address=HEAD_IP:6379`),
# then on the head:
#   bash launch/grpo_refcocog.sh trainer.ray_address=auto trainer.nnodes=2 trainer.n_gpus_per_node=8 model.path=...
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
exec "$BIN/rexthinker-train" --config configs/grpo_refcocog.yaml "$@"
