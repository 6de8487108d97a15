#!/usr/bin/env bash
# The paper's GRPO run (configs/grpo_refcocog.yaml): Rex-Thinker-GRPO-7B on RefCOCOg-RexThinker-20k, 8 GPUs, as
# Rex-Thinker's rexthinker/scripts/grpo_tune_refcocog.sh ran it (docs/recipes.md "The paper recipe": data, every
# value, and our own recipe, configs/grpo_refcocog_ours.yaml, beside it). Extra arguments pass through: overrides, or
#   bash launch/grpo_refcocog.sh --print-config            # the resolved recipe; starts nothing, needs no GPU
#   bash launch/grpo_refcocog.sh model.path=/models/Rex-Thinker-GRPO-7B data.train_files=/data/refcocog_20k.parquet
#   bash launch/grpo_refcocog.sh --config configs/grpo_refcocog_ours.yaml    # our recipe (the last --config wins)
# Several nodes: start Ray on each (head: `ray start --head --port=6379`; others: `ray start --address=HEAD_IP:6379`),
# then on the head:
#   bash launch/grpo_refcocog.sh trainer.ray_address=auto trainer.nnodes=2 trainer.n_gpus_per_node=8
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
exec "$BIN/rexthinker-train" --config configs/grpo_refcocog.yaml "$@"
