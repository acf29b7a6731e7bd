#!/usr/bin/env bash
# The prepared GPU check for a bare lent GPU machine (no network; only the working tree and carried paths travel):
# the CUDA tests (FSDP, DeepSpeed, QLoRA, the precision matrix), then tools/bench/gpu_bench.py (SFT, DPO and GRPO
# throughput, MFU and peak memory on random-weight 1B- and 3B-class Llamas with synthetic data). All of it keeps to
# GPU_CHECK_BUDGET_S (default 455 s; with the last run's grace, under 8 minutes); logs under $OUT (else
# runs/gpu-bench). Needs neither the GGUF nor ../shared/data.
#
# Once, here (needs the SmolLM2 GGUF, fetched if missing, and pip's access to PyPI):
#   bash tools/bench/gpu.sh prepare
# writes .cache/models/smollm2-tokenizer (3.5 MB) and .cache/wheels: the packages the machine's image lacks, as
# wheels for its Python 3.12 (datasets, torchdata, dill, multiprocess: about 1 MB; bitsandbytes for the QLoRA tests:
# 41 MiB; leave it out with GPU_WHEELS="datasets torchdata dill multiprocess"). Then, with the device tool:
#   run(command="bash tools/bench/gpu.sh",
#       carry=[".cache/models/smollm2-tokenizer", ".cache/wheels"], timeout_s=540)
# Arguments go to gpu_bench.py, e.g. `bash tools/bench/gpu.sh --sizes 1b`; GPU_TESTS_S (default 150) caps the tests.
set -uo pipefail
cd "$(dirname "$0")/../.."
py="${PYTHON:-python3}"
tokenizer=.cache/models/smollm2-tokenizer
wheels=.cache/wheels

if [[ "${1:-}" == prepare ]]; then
    set -e
    [[ -e .cache/models/smollm2 ]] || "$py" tools/fetch_smollm2.py
    "$py" tools/bench/gpu_bench.py --save-tokenizer "$tokenizer"
    mkdir -p "$wheels"
    for name in ${GPU_WHEELS:-datasets torchdata dill multiprocess bitsandbytes}; do
        version=$("$py" -c "import importlib.metadata as m; print(m.version('$name'))")  # the versions tested here
        "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$wheels" "$name==$version"
    done
    du -sh "$tokenizer" "$wheels"
    exit 0
fi

start=$SECONDS
budget="${GPU_CHECK_BUDGET_S:-455}"
out="${OUT:-runs/gpu-bench}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1

# Carried wheels, installed only for the packages the image lacks (ours would otherwise shadow its own).
shopt -s nullglob
missing_wheels=()
for wheel in "$wheels"/*.whl; do
    module=$(basename "$wheel" | cut -d- -f1)
    "$py" -c "import $module" 2>/dev/null || missing_wheels+=("$wheel")
done
if ((${#missing_wheels[@]})); then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "${missing_wheels[@]}" && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$py" - <<'EOF'
import importlib
for name in ("torch", "lightning", "transformers", "peft", "datasets", "torchdata", "pytest", "bitsandbytes",
             "flash_attn", "deepspeed"):
    try:
        print(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as error:  # missing, or broken on this machine
        print(f"{name} MISSING ({type(error).__name__}: {error})")
EOF
} 2>&1 | tee "$out/gpu.txt"

status=0
if "$py" -c "import pytest" 2>/dev/null; then
    timeout "${GPU_TESTS_S:-150}" "$py" -m pytest -m gpu -q -rfEs -p no:cacheprovider tests/gpu 2>&1 |
        tee "$out/gpu_tests.log"
    test_status=${PIPESTATUS[0]}
    ((test_status == 124)) && echo "gpu tests: stopped after ${GPU_TESTS_S:-150}s" | tee -a "$out/gpu_tests.log"
    ((test_status == 0)) || status=$test_status
else
    echo "gpu tests: skipped, pytest is not installed" | tee "$out/gpu_tests.log"
fi

left=$((budget - (SECONDS - start)))
timeout $((left + 20)) "$py" tools/bench/gpu_bench.py --tokenizer "$tokenizer" --log-dir "$out" --budget-s "$left" \
    "$@" 2>&1 | tee "$out/gpu_bench.log"
bench_status=${PIPESTATUS[0]}
((bench_status == 0)) || status=$bench_status
echo "gpu check: $((SECONDS - start))s, tests exit ${test_status:-skipped}, bench exit $bench_status; logs in $out"
exit "$status"
