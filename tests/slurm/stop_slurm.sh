#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by start_slurm.sh: cancel the jobs still queued
# or running, then stop slurmd, slurmctld and munged by their pid files (never by name, so
# nothing else on the machine is touched). Configuration, state and job records are kept.
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "stop_slurm: must run as root" >&2; exit 1; }

stop_pidfile() {
    local pidfile=$1 pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 0
    echo "stop_slurm: stopping $(cat "/proc/$pid/comm" 2>/dev/null || echo "pid $pid")" >&2
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    echo "stop_slurm: pid $pid still alive after 10 s" >&2
    return 1
}

if command -v scancel >/dev/null && scontrol ping >/dev/null 2>&1; then
    scancel --quiet "--user=$(id -un)" || true
fi
stop_pidfile /run/slurmd.pid
stop_pidfile /run/slurmctld.pid
stop_pidfile /run/munge/munged.pid
