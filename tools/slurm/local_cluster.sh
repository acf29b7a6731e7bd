#!/usr/bin/env bash
# A throwaway one-node Slurm cluster on this machine (Debian's slurm-wlm + munge), for tools/slurm/check_local_cluster.sh.
# Self-contained, so it is safe on a machine that already is a Slurm node: its slurm.conf, munge key, munge socket,
# state, spool, PID and log files all live in a fresh temporary directory (mktemp -d /tmp/lightning-ft-cluster.XXXXXX),
# its slurmctld and slurmd listen on free ports of their own (never the defaults 6817/6818), its munged uses its own
# key and socket (AuthInfo=socket=... in its slurm.conf, which every Slurm command and daemon reads through SLURM_CONF),
# and it writes nothing under /etc and stops nothing it did not start. Needs root: slurmd runs jobs as their users,
# and apt installs the packages.
#
#   local_cluster.sh install           apt-get install slurm-wlm and munge if they are missing (the only step that
#                                      touches /etc, through the packages; their services are not started)
#   local_cluster.sh start [--force]   install if missing, start munged, slurmctld and slurmd, wait until the node is
#                                      idle; prints `export SLURM_CONF=DIR/slurm.conf LOCAL_SLURM_DIR=DIR` on stdout
#                                      (also written to DIR/env), progress on stderr. Refuses (exit 2) if slurmctld,
#                                      slurmd or munged already run here, unless --force: then its daemons run beside
#                                      those, on their own ports and socket.
#   local_cluster.sh stop DIR          cancel its jobs, stop exactly the daemons whose PIDs DIR recorded (and any job
#                                      step they left), remove DIR
#
#   out=$(bash tools/slurm/local_cluster.sh start) && eval "$out"; ...; bash tools/slurm/local_cluster.sh stop "$LOCAL_SLURM_DIR"
set -euo pipefail
ME=$(basename "$0")
MARK=.lightning-ft-local-cluster  # a directory holding this file is one of ours (stop removes nothing else)

die() { echo "$ME: $*" >&2; exit "${CODE:-1}"; }
need_root() { [ "$(id -u)" = 0 ] || CODE=2 die "needs root (slurmd runs jobs as their users; apt installs the packages): run it with sudo"; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null && command -v munge >/dev/null; then
        return
    fi
    # Debian starts a package's service when it is installed (with /etc/slurm, /etc/munge); forbid that through
    # policy-rc.d (exit 101: action forbidden) for the length of the install, unless one is already there.
    local policy=/usr/sbin/policy-rc.d
    if [ -e "$policy" ]; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
    else
        (
            trap 'rm -f "$policy"' EXIT
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy"
            apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
        )
    fi
}

# TCP ports bound or connected on this machine, any state, from /proc/net/tcp{,6} (decimal, one a line).
used_ports() {
    local hex
    awk 'FNR > 1 { n = split($2, a, ":"); print a[n] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u \
        | while read -r hex; do echo $((16#$hex)); done
}

# A port in 20000-31999 (below Linux's ephemeral range, far from Slurm's 6817/6818) that nothing uses, nor any of "$@".
free_port() {
    local used p
    used=" $(used_ports | tr '\n' ' ') $* "
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        [[ $used == *" $p "* ]] || { echo "$p"; return 0; }
    done
    return 1
}

# PID from a pid file if that process is still alive and is NAME (so a reused PID is never signalled).
pid_of() {
    local file=$1 name=$2 pid
    [ -s "$file" ] || return 1
    pid=$(tr -dc 0-9 <"$file")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
}

# Wait up to $2 seconds for PID $1 to exit; SIGKILL it after that.
reap() {
    local pid=$1
    for _ in $(seq $((${2:-10} * 10))); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# A process and all its descendants, children first.
tree() {
    local child
    for child in $(pgrep -P "$1" || true); do tree "$child"; done
    echo "$1"
}

stop_cluster() {
    local dir=${1:?usage: $ME stop DIR}
    dir=$(cd "$dir" 2>/dev/null && pwd) || die "no directory $1"
    [ -e "$dir/$MARK" ] || die "$dir is not a cluster of $ME (no $MARK in it); not touching it"
    local conf=$dir/slurm.conf pid
    # Its jobs first (every job in this cluster is ours), so that no job step outlives slurmd.
    if [ -s "$conf" ] && pid_of "$dir/run/slurmctld.pid" slurmctld >/dev/null; then
        SLURM_CONF=$conf scancel --partition=local 2>/dev/null || true
        for _ in $(seq 60); do
            [ -z "$(SLURM_CONF=$conf squeue -h -o %i 2>/dev/null | head -1)" ] && break
            sleep 0.5
        done
    fi
    for daemon in slurmd slurmctld munged; do
        case $daemon in munged) file=$dir/munge/munged.pid ;; *) file=$dir/run/$daemon.pid ;; esac
        if pid=$(pid_of "$file" "$daemon"); then
            kill -TERM "$pid" 2>/dev/null || true
            reap "$pid" 15
            echo "$ME: stopped $daemon (pid $pid)" >&2
        fi
        # Job steps this slurmd started and left behind: slurmstepd processes that carry this cluster's SLURM_CONF.
        if [ "$daemon" = slurmd ]; then
            for pid in $(pgrep -x slurmstepd || true); do
                if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$conf"; then
                    # shellcheck disable=SC2046  # one PID a word
                    kill -KILL $(tree "$pid") 2>/dev/null || true
                    echo "$ME: killed leftover slurmstepd (pid $pid) and its processes" >&2
                fi
            done
        fi
    done
    rm -rf "$dir"
    echo "$ME: removed $dir" >&2
}

start_cluster() {
    local force=
    for arg in "$@"; do
        case $arg in --force) force=1 ;; *) die "unknown argument $arg (usage: $ME start [--force])" ;; esac
    done
    need_root
    local running
    running=$(for d in slurmctld slurmd munged; do { pgrep -x "$d" || true; } | sed "s/^/$d pid /"; done | paste -sd, - | sed 's/,/, /g')
    if [ -n "$running" ] && [ -z "$force" ]; then
        CODE=2 die "Slurm/munge daemons already run on this machine ($running); not starting another cluster beside them (pass --force to run one anyway, on its own ports and socket)"
    fi
    install_packages >&2

    local dir
    dir=$(mktemp -d /tmp/lightning-ft-cluster.XXXXXX)
    touch "$dir/$MARK"
    # From here on a failed start stops what it started and removes the directory, after showing its logs.
    # shellcheck disable=SC2154  # rc is set inside the trap
    trap 'rc=$?; if [ $rc -ne 0 ]; then tail -n 20 "'"$dir"'"/log/*.log >&2 2>/dev/null || true; stop_cluster "'"$dir"'" || true; fi' EXIT
    chmod 0755 "$dir"  # clients of other users may read slurm.conf and reach the munge socket
    mkdir -p "$dir"/{munge,state,spool,log,run}
    chmod 0700 "$dir/state"
    echo "$ME: cluster directory $dir" >&2

    # munged with its own key, socket, pid, log and seed files
    local key=$dir/munge/munge.key socket=$dir/munge/munge.socket
    dd if=/dev/urandom bs=1024 count=1 of="$key" 2>/dev/null
    chmod 0400 "$key"
    munged --key-file="$key" --socket="$socket" --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"
    for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
    munge -n -S "$socket" | unmunge -S "$socket" >/dev/null || die "munged does not answer on $socket"

    local host cpus memory ctld_port slurmd_port
    host=$(hostname -s)
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # GNU nproc would report OMP_NUM_THREADS
    memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
    ctld_port=$(free_port) || die "found no free port"
    slurmd_port=$(free_port "$ctld_port") || die "found no free port"
    cat >"$dir/slurm.conf" <<CONF
# written by $ME; everything of this cluster is under $dir
ClusterName=lightningft
SlurmctldHost=${host}
SlurmctldPort=${ctld_port}
SlurmdPort=${slurmd_port}
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=${socket}
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobRequeue=1
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool
SlurmctldPidFile=${dir}/run/slurmctld.pid
SlurmdPidFile=${dir}/run/slurmd.pid
SlurmctldLogFile=${dir}/log/slurmctld.log
SlurmdLogFile=${dir}/log/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=local Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
    printf 'export SLURM_CONF=%s LOCAL_SLURM_DIR=%s\n' "$dir/slurm.conf" "$dir" >"$dir/env"
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed"; then
            echo "$ME: slurmctld port $ctld_port, slurmd port $slurmd_port, munge socket $socket; stop with: $ME stop $dir" >&2
            sinfo >&2
            cat "$dir/env"
            trap - EXIT
            return 0
        fi
        sleep 1
    done
    die "Slurm did not come up"
}

case ${1:-} in
    install) need_root; install_packages ;;
    start) shift; start_cluster "$@" ;;
    stop) shift; need_root; stop_cluster "$@" ;;
    *) CODE=2 die "usage: $ME install | start [--force] | stop DIR" ;;
esac
