#!/usr/bin/env bash
# The real SLURM check (needs root): a one-node cluster on this machine, a 2-task CPU DDP job submitted with sbatch
# through tools/slurm/fit.sbatch, preempted mid-run with SIGUSR1 (as Slurm does before a time limit), requeued by
# Lightning, and resumed from its checkpoint to the end. Run from the repository root:
#   bash tools/slurm/check_local_cluster.sh
set -euo pipefail
ROOT=$(pwd)
WORK=$(mktemp -d /tmp/lightning-ft-slurm.XXXX)
STEPS=1000  # long enough (minutes) that the job is still running when it is preempted
bash tools/slurm/local_cluster.sh >/dev/null
python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
from tests.conftest import build_tiny_llama, build_tiny_tokenizer
work = Path(sys.argv[1])
tokenizer = build_tiny_tokenizer()
build_tiny_llama(len(tokenizer)).save_pretrained(work / "model")
tokenizer.save_pretrained(work / "model")
records = [{"instruction": f"Say hello {i} times.", "output": "hello " * (i % 7 + 1)} for i in range(2000)]
(work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
PY
JOB=$(sbatch --parsable --nodes 1 --ntasks-per-node 2 --cpus-per-task 1 --gpus-per-node 0 --time 30 \
    --chdir "$ROOT" --output "$WORK/job-%j.out" --export "ALL,OMP_NUM_THREADS=1,PYTHONPATH=$ROOT" tools/slurm/fit.sbatch \
    --config configs/sft/lora.yaml --model.model.path "$WORK/model" --data.train "$WORK/train.jsonl" \
    --data.max_length 64 --data.batch_size 2 --trainer.accumulate_grad_batches 1 --trainer.max_steps $STEPS \
    --trainer.max_epochs -1 --trainer.accelerator cpu --trainer.strategy ddp \
    --trainer.enable_progress_bar false --trainer.log_every_n_steps 5 --checkpoint.every_n_train_steps 10 \
    --trainer.default_root_dir "$WORK/run")
echo "job $JOB: $WORK/job-$JOB.out"
# wait for the first checkpoints, then preempt
for _ in $(seq 600); do
    ls "$WORK"/run/lightning_logs/*/checkpoints/last.ckpt >/dev/null 2>&1 && break
    sleep 1
done
sleep 5
scancel --signal=USR1 "$JOB"
echo "sent SIGUSR1 to $JOB"
for _ in $(seq 1200); do
    STATE=$(sacct -n -X -j "$JOB" -o State 2>/dev/null | head -1 | tr -d ' ' || true)
    [ -z "$STATE" ] && STATE=$(squeue -h -j "$JOB" -o %T 2>/dev/null || true)
    [ -z "$STATE" ] && break
    case "$STATE" in COMPLETED|FAILED|CANCELLED*|TIMEOUT) break ;; esac
    sleep 2
done
LOG="$WORK/job-$JOB.out"
cat "$LOG" | tail -20
grep -q "requeu" "$LOG" || { echo "FAIL: no requeue in $LOG"; exit 1; }
grep -q "Restored all states from the checkpoint" "$LOG" || { echo "FAIL: did not resume from a checkpoint"; exit 1; }
python - "$WORK" "$STEPS" <<'PY'
import sys, torch
from pathlib import Path
work, steps = Path(sys.argv[1]), int(sys.argv[2])
preempted = torch.load(next(work.glob("run/hpc_ckpt_*.ckpt")), weights_only=False)["global_step"]
last = torch.load(next(work.glob("run/**/last.ckpt")), weights_only=False)
assert 0 < preempted < steps and last["global_step"] == steps, (preempted, last["global_step"])
print(f"OK: preempted at step {preempted}, requeued, resumed from its checkpoint, finished at step {steps}")
PY
