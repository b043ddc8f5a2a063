#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine (root only), for tests/test_slurm.py
# and for trying profiles/slurm by hand. Idempotent: installs what is missing, rewrites the
# configuration only when it changed (restarting the daemons then), starts what is not
# running, waits for the node to be idle and prints its state.
#
#   sudo tests/slurm/start_slurm.sh          # then: sinfo, sbatch, snakemake --workflow-profile …
#   sudo tests/slurm/stop_slurm.sh
#
# What it sets up (Debian/Ubuntu slurm-wlm 22.05, munge):
# - one node "localhost" with all CPUs and 90 % of the memory, partition "debug" (default);
# - two fake GPUs (GRES on dummy device files), so rules that ask for `gpu` submit with
#   --gpus and run: SLURM sets CUDA_VISIBLE_DEVICES per job, the workflow's GPU lease honours
#   it and torch/faiss fall back to the CPU because no real device exists;
# - no accounting database (sacct does not work): the SLURM executor plugin must query job
#   states with `--slurm-status-command squeue`, which sees finished jobs for MinJobAge
#   seconds (set to an hour, far above the plugin's 3 × init-seconds requirement);
# - per-job completion records (jobcomp/filetxt) in $JOBCOMP_FILE: one line per finished
#   job with its JobId, Name, JobState, WorkDir…, which the test reads.
#
# Environment: SLURM_TEST_GPUS (fake GPUs, default 2), SLURM_TEST_MEM_FRACTION (default 90).
set -euo pipefail

CONF_DIR=/etc/slurm
STATE_DIR=/var/lib/slurm
LOG_DIR=/var/log/slurm
JOBCOMP_FILE=$LOG_DIR/jobcomp.txt
FAKE_GPU_DIR=$STATE_DIR/fake-gpus
GPUS=${SLURM_TEST_GPUS:-2}
MEM_FRACTION=${SLURM_TEST_MEM_FRACTION:-90}
CONF_MARKER="# Written by tests/slurm/start_slurm.sh"
DEVICES_CHANGED=0  # set when a fake GPU device is (re)made: slurmd reads them at start only

log() { echo "start_slurm: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (installs packages, starts daemons)"

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || [[ -x /usr/sbin/munged ]] || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Other processes may hold the dpkg lock for a while: wait for it rather than fail.
    local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q --no-install-recommends)
    if ! "${apt[@]}" install "${missing[@]}" >/dev/null; then
        log "install failed; refreshing the package lists and retrying"
        apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null
        "${apt[@]}" install "${missing[@]}" >/dev/null
    fi
}

node_memory_mb() {
    # RealMemory must not exceed what slurmd measures, or the node is drained as invalid.
    local total_kb
    total_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    echo $((total_kb / 1024 * MEM_FRACTION / 100))
}

render_slurm_conf() {
    cat <<EOF
$CONF_MARKER: a single-node test cluster.
ClusterName=local
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
# No accounting database: finished jobs stay visible to squeue/scontrol for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
JobCompType=jobcomp/filetxt
JobCompLoc=$JOBCOMP_FILE
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$(node_memory_mb) Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

render_gres_conf() {
    # Fake GPUs: GRES wants one character device per GPU (a plain file is rejected); copies
    # of /dev/null made by prepare_dirs do.
    echo "AutoDetect=off"
    echo "NodeName=localhost Name=gpu File=$FAKE_GPU_DIR/gpu[0-$((GPUS - 1))]"
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() {
    local pidfile=$1
    pid_alive "$pidfile" || return 0
    kill "$(cat "$pidfile")"
    for _ in $(seq 50); do pid_alive "$pidfile" || return 0; sleep 0.1; done
    die "daemon of $pidfile did not stop"
}

write_if_changed() {  # write stdin to $1; exit status 0 when the content changed
    local new
    new=$(cat)
    [[ -f $1 && $(cat "$1") == "$new" ]] && return 1
    printf '%s\n' "$new" >"$1"
}

prepare_dirs() {
    mkdir -p "$CONF_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd" "$LOG_DIR" "$FAKE_GPU_DIR" \
        /run/munge
    chown slurm: "$STATE_DIR/slurmctld" "$LOG_DIR"
    chown munge: /run/munge
    touch "$JOBCOMP_FILE"
    chown slurm: "$JOBCOMP_FILE"
    local device
    for ((i = 0; i < GPUS; i++)); do
        device=$FAKE_GPU_DIR/gpu$i
        [[ -c $device ]] && continue
        rm -f "$device"
        DEVICES_CHANGED=1
        mknod -m 666 "$device" c 1 3 || die "cannot make the fake GPU device $device (mknod)"
    done
}

configure() {
    local changed=0
    # Never overwrite the configuration of a real cluster: only files this script wrote.
    if [[ -f $CONF_DIR/slurm.conf ]] && ! grep -q "^$CONF_MARKER" "$CONF_DIR/slurm.conf"; then
        die "$CONF_DIR/slurm.conf exists and was not written by this script; not touching it"
    fi
    render_slurm_conf | write_if_changed "$CONF_DIR/slurm.conf" && changed=1
    render_gres_conf | write_if_changed "$CONF_DIR/gres.conf" && changed=1
    if ((changed || DEVICES_CHANGED)); then
        log "configuration (in $CONF_DIR) or fake GPU devices changed: restarting the SLURM daemons"
        stop_daemon /run/slurmd.pid
        stop_daemon /run/slurmctld.pid
    fi
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    [[ -s /etc/munge/munge.key ]] || die "no /etc/munge/munge.key (the munge package makes it)"
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
    die "munged does not answer"
}

start_slurm_daemons() {
    if ! pid_alive /run/slurmctld.pid; then
        log "starting slurmctld"
        /usr/sbin/slurmctld
    fi
    if ! pid_alive /run/slurmd.pid; then
        log "starting slurmd"
        /usr/sbin/slurmd -N localhost
    fi
}

wait_for_idle_node() {
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo --noheader --nodes=localhost --format=%T 2>/dev/null || true)
        case $state in
            idle* | mixed* | allocated*) return ;;
            drain* | down* | inval* | fail*)
                # A node left down by an earlier, differently configured run: resume it.
                scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    die "node not idle after 60 s (state: '${state:-no answer}'); see $LOG_DIR/slurmctld.log"
}

install_packages
prepare_dirs
configure
start_munge
start_slurm_daemons
wait_for_idle_node
sinfo --Node --long
scontrol show node localhost | grep -E 'CPUTot|RealMemory|Gres=' | sed 's/^ */  /'
echo "jobcomp records: $JOBCOMP_FILE"
