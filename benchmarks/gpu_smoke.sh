#!/usr/bin/env bash
# GPU smoke run: a few GRPO steps of the tiny model on one GPU, then of a small real Qwen2.5-VL if one is present,
# printing tokens/s, step time and peak GPU memory per step.
#
#   bash benchmarks/gpu_smoke.sh                         # tiny model (built offline) + Qwen2.5-VL-3B if found
#   QWEN_VL_PATH=/models/Qwen2.5-VL-3B-Instruct STEPS=5 bash benchmarks/gpu_smoke.sh
#
# Needs the [gpu] extra (CUDA torch, vLLM, flash-attn, deepspeed). One GPU: actor.strategy=fsdp2 with one rank,
# colocated with vLLM (sleep/wake). Outputs go to runs/gpu_smoke/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/gpu_smoke}
STEPS=${STEPS:-3}
QWEN_VL_PATH=${QWEN_VL_PATH:-/models/Qwen2.5-VL-3B-Instruct}

"$BIN/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this smoke run needs one GPU')"
mkdir -p "$OUT"
[ -f "$OUT/tiny/config.json" ] || "$BIN/rexthinker-tiny" "$OUT/tiny"
[ -f "$OUT/data/train.parquet" ] || "$BIN/rexthinker-data" synth --out "$OUT/data" --num-train 256 --num-val 16

ONE_GPU=(
    actor.strategy=fsdp2 trainer.device=cuda trainer.nnodes=1 trainer.n_gpus_per_node=1
    rollout.placement=colocate rollout.tensor_parallel_size=1 rollout.gpu_memory_utilization=0.4
    actor.padding_free=true trainer.total_steps="$STEPS" trainer.val_before_train=false trainer.val_freq=-1
    checkpoint.save_freq=-1 logging.sinks=[console,jsonl] data.train_files="$OUT/data/train.parquet"
    data.val_files= trainer.resume=none
)

STAMP=$(date +%Y%m%d-%H%M%S)  # a run folder per invocation: trainer.resume=none never trains over an earlier run

run() {  # run NAME MODEL_PATH [overrides...]
    local name=$1-$STAMP model=$2
    shift 2
    "$BIN/rexthinker-train" --config configs/grpo_refcocog.yaml model.path="$model" \
        trainer.output_dir="$OUT/$name" "${ONE_GPU[@]}" "$@"
    "$BIN/python" - "$OUT/$name/metrics.jsonl" "$name" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
for r in (r for r in rows if "timing/step" in r):
    print(f"{sys.argv[2]} step {r['step']}: {r['timing/step']:.2f} s/step, "
          f"{r['throughput/tokens_per_s']:.0f} generated tokens/s, "
          f"peak GPU memory {r.get('perf/max_memory_allocated_gb', float('nan')):.1f} GB")
PY
}

run tiny "$OUT/tiny" model.dtype=bfloat16 rollout.dtype=bfloat16 data.min_pixels=12544 data.max_pixels=12544 \
    data.max_prompt_length=512 data.max_response_length=64 data.rollout_batch_size=8 actor.global_batch_size=8 \
    rollout.n=8 actor.lr=1e-5
if [ -f "$QWEN_VL_PATH/config.json" ]; then
    run qwen "$QWEN_VL_PATH" data.max_prompt_length=1024 data.max_response_length=256 data.rollout_batch_size=8 \
        actor.global_batch_size=8 rollout.n=8 actor.micro_batch_size_per_device_for_update=8 \
        actor.max_tokens_per_micro_batch=16384
else
    echo "no Qwen2.5-VL at $QWEN_VL_PATH (set QWEN_VL_PATH): tiny model only"
fi
