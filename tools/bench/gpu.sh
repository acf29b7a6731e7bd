#!/usr/bin/env bash
# One prepared GPU check (under 10 minutes on a single H200): the CUDA tests (FSDP, DeepSpeed, QLoRA, the precision
# matrix), then the side-by-side benchmark in
# bf16 (flash-attention varlen when flash-attn is installed, SDPA otherwise), with MFU. Logs go to $OUT if set.
# Needs the model at .cache/models/smollm2 (python tools/fetch_smollm2.py) and ../shared/data (or --data).
set -euo pipefail
out="${OUT:-runs/gpu-bench}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
timeout 360 python -m pytest -m gpu -q tests/gpu 2>&1 | tee "$out/gpu_tests.log"
timeout 180 python tools/bench/sft_throughput.py --accelerator cuda --precision bf16 --batch-size 16 \
    --max-length 1024 --warmup 3 --steps 10 --pairs 2 "$@" 2>&1 | tee "$out/gpu_bench.log"
