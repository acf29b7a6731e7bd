#!/usr/bin/env bash
# The real SLURM check (needs root): a throwaway one-node cluster on this machine (tools/slurm/local_cluster.sh: its
# own slurm.conf, munge key and socket, ports, state and logs under a temporary directory; nothing under /etc), a
# 2-task CPU DDP job submitted with sbatch through tools/slurm/fit.sbatch, preempted mid-run with SIGUSR1 (as Slurm
# does before a time limit) once its first checkpoint is written, requeued by Lightning, and resumed from its
# checkpoint to the end. The cluster is stopped at exit, on success or failure (its logs are kept in the work
# directory on failure), and the check fails unless its daemons are gone and /etc/slurm and /etc/munge are unchanged.
# Run from the repository root:
#   bash tools/slurm/check_local_cluster.sh [--force]
# It refuses (exit 2) on a machine where slurmctld, slurmd or munged already run; --force runs its cluster beside
# them, on its own ports and socket, touching nothing of theirs. STEPS=N (default 1000) sets the job's length.
#
# The /etc check: after apt has installed slurm-wlm and munge (only apt, when they are missing, writes under /etc),
# the path, type, mode, owner, group, size and mtime of everything under /etc/slurm and /etc/munge, and the sha256 of
# every file there, are listed before the cluster starts and again after it has been stopped; the two must be equal.
set -euo pipefail
ROOT=$(pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
FORCE=()
for arg in "$@"; do
    case $arg in --force) FORCE=(--force) ;; *) echo "usage: $0 [--force]" >&2; exit 2 ;; esac
done
STEPS=${STEPS:-1000}  # long enough (minutes) that the job is still running when it is preempted
[ "$(id -u)" = 0 ] || { echo "$(basename "$0"): needs root (it runs a local Slurm cluster): run it with sudo" >&2; exit 2; }

etc_state() {
    local d
    for d in /etc/slurm /etc/munge; do
        [ -e "$d" ] || { echo "$d absent"; continue; }
        find "$d" -printf '%p %y %m %u %g %s %T@\n' | sort
        find "$d" -type f -exec sha256sum {} + | sort
    done
}

bash "$HERE/local_cluster.sh" install
ETC_BEFORE=$(etc_state)
WORK=$(mktemp -d /tmp/lightning-ft-slurm.XXXX)
echo "work directory $WORK"
LOCAL_SLURM_DIR=
finish() {
    local rc=$?
    if [ -n "$LOCAL_SLURM_DIR" ]; then
        if [ $rc -ne 0 ] && cp -r "$LOCAL_SLURM_DIR/log" "$WORK/cluster-logs" 2>/dev/null; then
            echo "cluster logs kept in $WORK/cluster-logs" >&2
        fi
        bash "$HERE/local_cluster.sh" stop "$LOCAL_SLURM_DIR" || rc=1
        [ "$(etc_state)" = "$ETC_BEFORE" ] || { echo "FAIL: /etc/slurm or /etc/munge changed" >&2; rc=1; }
    fi
    exit $rc
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

CLUSTER_ENV=$(bash "$HERE/local_cluster.sh" start "${FORCE[@]}")
eval "$CLUSTER_ENV"  # export SLURM_CONF=... LOCAL_SLURM_DIR=...: every sbatch, squeue, scancel below (and the job) use it
DAEMONS=$(cat "$LOCAL_SLURM_DIR"/run/*.pid "$LOCAL_SLURM_DIR"/munge/munged.pid | tr -dc '0-9\n')

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
    --data.max_length 64 --data.batch_size 2 --trainer.accumulate_grad_batches 1 --trainer.max_steps "$STEPS" \
    --trainer.max_epochs -1 --trainer.accelerator cpu --trainer.strategy ddp \
    --trainer.enable_progress_bar false --trainer.log_every_n_steps 5 --checkpoint.every_n_train_steps 10 \
    --trainer.default_root_dir "$WORK/run")
LOG="$WORK/job-$JOB.out"
echo "job $JOB: $LOG"
state() { squeue -h -t all -j "$JOB" -o %T 2>/dev/null || true; }  # -t all: finished jobs too (for MinJobAge, 300 s)
# wait for the first checkpoint, then preempt the job while it is still running
for second in $(seq 900); do
    ls "$WORK"/run/lightning_logs/*/checkpoints/last.ckpt >/dev/null 2>&1 && break
    case $(state) in
        RUNNING|CONFIGURING) ;;
        PENDING) [ "$second" -lt 120 ] || { echo "FAIL: job $JOB still pending: $(squeue -h -j "$JOB" -o %r)"; exit 1; } ;;
        *) echo "FAIL: job $JOB ended before its first checkpoint"; tail -20 "$LOG" 2>/dev/null; exit 1 ;;
    esac
    sleep 1
done
ls "$WORK"/run/lightning_logs/*/checkpoints/last.ckpt >/dev/null 2>&1 || { echo "FAIL: no checkpoint after 15 minutes"; exit 1; }
sleep 5
[ "$(state)" = RUNNING ] || { echo "FAIL: job $JOB is no longer running to be preempted (STEPS=$STEPS too few?)"; exit 1; }
scancel --signal=USR1 "$JOB"
echo "sent SIGUSR1 to $JOB"
# Lightning answers with hpc_ckpt_N.ckpt and `scontrol requeue` within seconds; a job that wrote none 5 minutes
# later hangs in its signal handler (its Python stacks are shown if py-spy is installed)
for _ in $(seq 300); do
    ls "$WORK"/run/hpc_ckpt_*.ckpt >/dev/null 2>&1 && break
    [ "$(state)" = RUNNING ] || break
    sleep 1
done
if ! ls "$WORK"/run/hpc_ckpt_*.ckpt >/dev/null 2>&1; then
    echo "FAIL: job $JOB ($(state)) wrote no hpc_ckpt_*.ckpt after SIGUSR1"
    tail -20 "$LOG"
    if command -v py-spy >/dev/null; then
        for pid in $(pgrep -x slurmstepd || true); do
            tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF" || continue
            for task in $(pgrep -P "$pid" || true); do py-spy dump --pid "$task" 2>&1 | sed -n '/MainThread/,/^Thread/p'; done
        done
    fi
    exit 1
fi
for _ in $(seq 1200); do
    STATE=$(state)  # the cluster keeps no accounting (no sacct): squeue it is
    case "$STATE" in ""|COMPLETED|FAILED|CANCELLED*|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;; esac
    sleep 2
done
echo "job $JOB: ${STATE:-gone}"
tail -20 "$LOG"
grep -q "requeu" "$LOG" || { echo "FAIL: no requeue in $LOG"; exit 1; }
grep -q "Restored all states from the checkpoint" "$LOG" || { echo "FAIL: did not resume from a checkpoint"; exit 1; }
PREEMPTED=$(python - "$WORK" "$STEPS" <<'PY'
import sys, torch
from pathlib import Path
work, steps = Path(sys.argv[1]), int(sys.argv[2])
preempted = torch.load(next(work.glob("run/hpc_ckpt_*.ckpt")), weights_only=False)["global_step"]
last = torch.load(next(work.glob("run/**/last.ckpt")), weights_only=False)
assert 0 < preempted < steps and last["global_step"] == steps, (preempted, last["global_step"])
print(preempted)
PY
)
# stop the cluster now (not only in the trap) to check that it left nothing behind
bash "$HERE/local_cluster.sh" stop "$LOCAL_SLURM_DIR"
LOCAL_SLURM_DIR=
for pid in $DAEMONS; do
    ! kill -0 "$pid" 2>/dev/null || { echo "FAIL: daemon pid $pid still runs after stop"; exit 1; }
done
if [ ${#FORCE[@]} -eq 0 ]; then  # none ran before (or local_cluster.sh start would have refused): none may run now
    for daemon in slurmctld slurmd slurmstepd munged; do
        ! pgrep -x "$daemon" >/dev/null || { echo "FAIL: $daemon still runs after stop"; exit 1; }
    done
fi
[ "$(etc_state)" = "$ETC_BEFORE" ] || { echo "FAIL: /etc/slurm or /etc/munge changed"; exit 1; }
echo "OK: preempted at step $PREEMPTED, requeued, resumed from its checkpoint, finished at step $STEPS;" \
    "cluster stopped, /etc/slurm and /etc/munge unchanged"
