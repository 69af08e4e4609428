#!/usr/bin/env bash
# Single-node SLURM cluster for the `slurm` test tier (Debian 12, run as root).
#
#   tests/slurm/cluster.sh up      reuse a running cluster, or install/configure/start one
#   tests/slurm/cluster.sh down    stop only the daemons that `up` started
#   tests/slurm/cluster.sh status  exit 0 when the controller answers and the node is usable
#
# Global side effects (one cluster per machine): /etc/slurm/{slurm,gres}.conf, ports 6817
# (slurmctld) and 6818 (slurmd), /var/spool/slurm{ctld,d}, /var/log/slurm, /var/lib/fakegpu,
# /run/{slurmctld,slurmd}.pid, /run/munge, /run/ism-slurm. See tests/slurm/README.md.
set -euo pipefail

readonly CONF_DIR=/etc/slurm
readonly CONF=$CONF_DIR/slurm.conf
readonly GRES_CONF=$CONF_DIR/gres.conf
readonly MARKER="# Written by ism tests/slurm/cluster.sh"
readonly STATE_DIR=/run/ism-slurm
readonly STATE_FILE=$STATE_DIR/started
readonly LOCK_FILE=$STATE_DIR/lock
readonly LOG_DIR=/var/log/slurm
readonly FAKEGPU_DIR=/var/lib/fakegpu
readonly CTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID=/run/slurmd.pid
readonly MUNGE_PID=/run/munge/munged.pid
readonly NODE=localhost
readonly PACKAGES=(slurmctld slurmd slurm-client munge)
readonly IDLE_WAIT_S=${ISM_SLURM_IDLE_WAIT_S:-60}

log() { printf 'ism-slurm: %s\n' "$*"; }
err() { printf 'ism-slurm: ERROR: %s\n' "$*" >&2; }
now_ms() { date +%s%3N; }
secs_since() { # $1 = start in ms; prints seconds with one decimal
    local d=$(($(now_ms) - $1))
    printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}

# The config must live at the default path (see PIPELINE.md §5, pitfall 1).
if [[ -n ${SLURM_CONF:-} ]]; then
    log "ignoring SLURM_CONF=$SLURM_CONF; this script only manages $CONF"
    unset SLURM_CONF
fi

# True when `scontrol ping` reports the primary controller UP.
controller_up() {
    command -v scontrol >/dev/null 2>&1 || return 1
    local out
    out=$(timeout -s KILL 10 scontrol ping 2>&1) || true
    [[ $out == *"is UP"* ]]
}

# First node state reported by sinfo ("" when sinfo fails). $1 = optional node name.
node_state() {
    local out args=(-h -o %T)
    [[ -n ${1:-} ]] && args+=(-n "$1")
    out=$(timeout -s KILL 10 sinfo "${args[@]}" 2>/dev/null) || out=""
    printf '%s' "${out%%$'\n'*}"
}

# pid_alive NAME PID: PID runs a process whose comm is NAME.
pid_alive() {
    local comm
    [[ -n $2 && -r /proc/$2/comm ]] || return 1
    comm=$(<"/proc/$2/comm") || return 1
    [[ $comm == "$1" ]]
}

# pidfile_pid FILE: the pid stored in FILE, or "".
pidfile_pid() {
    local pid=""
    if [[ -r $1 ]]; then
        read -r pid <"$1" || true
    fi
    [[ $pid =~ ^[0-9]+$ ]] && printf '%s' "$pid"
    return 0
}

need_root() {
    if [[ $EUID -ne 0 ]]; then
        err "'$1' must run as root (it installs packages, writes $CONF_DIR and starts daemons)"
        exit 1
    fi
}

tail_logs() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" "$LOG_DIR"/*.out /var/log/munge/munged.log; do
        [[ -s $f ]] || continue
        echo "---- last lines of $f"
        tail -n 8 "$f" || true
    done
}

packages_missing() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || status=""
        [[ $status == "install ok installed" ]] || printf ' %s' "$p"
    done
}

apt_update() {
    log "apt-get update"
    timeout -s KILL 180 apt-get update -q >/dev/null
}

apt_install() {
    DEBIAN_FRONTEND=noninteractive timeout -s KILL 300 \
        apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$STATE_DIR/apt.log" 2>&1
}

ensure_packages() {
    local missing t0
    missing=$(packages_missing)
    if [[ -z $missing ]]; then
        return 0
    fi
    t0=$(now_ms)
    log "installing Debian packages:$missing"
    if ! apt-cache show slurmctld >/dev/null 2>&1; then
        apt_update
    fi
    if ! apt_install; then
        apt_update
        if ! apt_install; then
            tail -n 15 "$STATE_DIR/apt.log" >&2 || true
            err "apt-get install ${PACKAGES[*]} failed"
            exit 1
        fi
    fi
    log "packages installed in $(secs_since "$t0") s ($(dpkg-query -W -f='${Version}' slurmctld))"
}

write_if_changed() { # write_if_changed FILE (content on stdin)
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
        return 0
    fi
    if [[ -f $1 ]] && ! grep -qF "$MARKER" "$1"; then
        cp -p "$1" "$1.ism-backup"
        log "kept the previous $1 as $1.ism-backup"
    fi
    chmod 0644 "$tmp"
    mv -f "$tmp" "$1"
}

write_config() {
    local cpus mem_kib mem_mib margin real def_mem
    cpus=$(nproc)
    mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem_mib=$((mem_kib / 1024))
    margin=$((mem_mib / 10))
    ((margin < 1024)) && margin=1024
    real=$((mem_mib - margin))
    ((real < 512)) && real=$((mem_mib / 2))
    def_mem=$((real / cpus))
    ((def_mem > 1024)) && def_mem=1024

    mkdir -p "$CONF_DIR" "$FAKEGPU_DIR" /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
    touch "$FAKEGPU_DIR/nvidia0" "$FAKEGPU_DIR/nvidia1"

    write_if_changed "$CONF" <<EOF
$MARKER: single-node CI cluster, no accounting.
ClusterName=ci
SlurmctldHost=$NODE
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# Look at pending jobs (e.g. requeued ones once eligible) every few seconds, not 30-60 s.
SchedulerParameters=bf_interval=5,sched_interval=10
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Keep finished jobs visible to squeue (Snakemake's status check) for 10 minutes.
MinJobAge=600
# SIGTERM -> SIGKILL grace; submitit ignores SIGTERM, so keep cancel/requeue quick.
KillWait=10
# Jobs without --mem get this much per CPU instead of the whole node.
DefMemPerCPU=$def_mem
# Credential lifetime; also how long a requeued job waits before it may start again
# (default 120 s, which would dominate any requeue test).
AuthInfo=cred_expire=20
# Silences "Configured MailProg is invalid" (no mail in CI).
MailProg=/bin/true
# Real preemption: a job in partition urgent (higher PriorityTier) requeues the debug/gpu jobs in its way.
# They get their --signal (submitit: USR2) at once and GraceTime seconds to checkpoint before SLURM kills them.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=urgent Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
    write_if_changed "$GRES_CONF" <<EOF
$MARKER: two fake GPUs (files, not devices).
AutoDetect=off
NodeName=$NODE Name=gpu File=$FAKEGPU_DIR/nvidia[0-1]
EOF
    CONF_SUMMARY="CPUs=$cpus RealMemory=${real}MiB DefMemPerCPU=${def_mem}MiB gres=gpu:2"
}

record_started() { # record_started NAME PID
    printf '%s %s\n' "$1" "$2" >>"$STATE_FILE"
    STARTED+=("$1")
    STARTED_PIDS+=("$2")
}

# EXIT trap of `up`: when it fails, stop what this invocation started (and forget it).
undo_failed_up() {
    local rc=$? i
    ((rc != 0 && ${#STARTED[@]} > 0)) || return 0
    err "up failed; stopping the daemons it started: ${STARTED[*]}"
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED[i]}" "${STARTED_PIDS[i]}" >&2 || true
        sed -i "/^${STARTED[i]} ${STARTED_PIDS[i]}\$/d" "$STATE_FILE" || true
    done
    [[ -s $STATE_FILE ]] || rm -f "$STATE_FILE"
}

# wait_pidfile NAME FILE SECONDS: wait until FILE names a live NAME process; print its pid.
wait_pidfile() {
    local pid deadline=$(($(now_ms) + $3 * 1000))
    while (($(now_ms) < deadline)); do
        pid=$(pidfile_pid "$2")
        if pid_alive "$1" "$pid"; then
            printf '%s' "$pid"
            return 0
        fi
        sleep 0.2
    done
    return 1
}

munge_works() { timeout -s KILL 5 munge -n >/dev/null 2>&1; }

start_munge() {
    local pid deadline
    if munge_works; then
        log "munged already running"
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        timeout -s KILL 30 runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    # Daemons must not inherit our stdout (a caller's pipe) nor the lock on fd 9.
    timeout -s KILL 15 runuser -u munge -- /usr/sbin/munged \
        </dev/null >>"$LOG_DIR/munged.out" 2>&1 9>&- || {
        err "munged failed to start"
        exit 1
    }
    pid=$(wait_pidfile munged "$MUNGE_PID" 10) || {
        err "munged did not write $MUNGE_PID"
        exit 1
    }
    record_started munged "$pid"
    deadline=$(($(now_ms) + 10000))
    until munge_works; do
        if (($(now_ms) > deadline)); then
            err "munged is not answering"
            exit 1
        fi
        sleep 0.2
    done
}

# start_daemon NAME PIDFILE CMD...
start_daemon() {
    local name=$1 pidfile=$2 pid
    shift 2
    pid=$(pidfile_pid "$pidfile")
    if pid_alive "$name" "$pid"; then
        log "$name already running (pid $pid), not starting another"
        return 0
    fi
    timeout -s KILL 30 "$@" </dev/null >>"$LOG_DIR/$name.out" 2>&1 9>&- || {
        err "$name failed to start"
        tail_logs >&2
        exit 1
    }
    pid=$(wait_pidfile "$name" "$pidfile" 15) || {
        err "$name did not write $pidfile"
        tail_logs >&2
        exit 1
    }
    record_started "$name" "$pid"
}

wait_idle() {
    local state deadline last_resume=0
    deadline=$(($(now_ms) + IDLE_WAIT_S * 1000))
    while :; do
        state=$(node_state "$NODE")
        case $state in
            idle | mixed | allocated) return 0 ;;
            drain* | down | inval | fail)
                # ReturnToService=2 usually suffices; resume at most every 5 s.
                if (($(now_ms) - last_resume > 5000)); then
                    log "node $NODE is '$state', resuming it"
                    timeout -s KILL 10 scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                    last_resume=$(now_ms)
                fi
                ;;
        esac
        if (($(now_ms) > deadline)); then
            err "node $NODE is '${state:-unknown}' after ${IDLE_WAIT_S} s, expected idle"
            timeout -s KILL 10 scontrol show node "$NODE" 2>&1 | grep -E 'State=|Reason=' >&2 || true
            tail_logs >&2
            exit 1
        fi
        sleep 0.5
    done
}

cmd_up() {
    local t0 version
    t0=$(now_ms)
    if controller_up; then
        log "reusing the running cluster (scontrol ping: UP; node state '$(node_state)'); nothing started"
        return 0
    fi
    need_root up
    mkdir -p "$STATE_DIR"
    exec 9>"$LOCK_FILE"
    flock -w 330 9 || {
        err "another cluster.sh holds $LOCK_FILE"
        exit 1
    }
    # Another `up` may have finished while we waited for the lock.
    if controller_up; then
        log "reusing the cluster started meanwhile by another cluster.sh up"
        return 0
    fi
    ensure_packages
    write_config
    STARTED=()
    STARTED_PIDS=()
    trap undo_failed_up EXIT
    start_munge
    # -c: start from a clean state (no jobs or node states from an earlier run).
    start_daemon slurmctld "$CTLD_PID" slurmctld -c
    start_daemon slurmd "$SLURMD_PID" slurmd -N "$NODE"
    wait_idle
    version=$(timeout -s KILL 10 sinfo -V 2>/dev/null) || version="slurm ?"
    log "up in $(secs_since "$t0") s: $version, node $NODE $CONF_SUMMARY," \
        "partitions debug (default), gpu, urgent (preempts); started: ${STARTED[*]:-nothing}"
    trap - EXIT
}

# stop_pid NAME PID: SIGTERM, wait up to 20 s, then SIGKILL.
stop_pid() {
    local name=$1 pid=$2 i t0
    t0=$(now_ms)
    if ! pid_alive "$name" "$pid"; then
        log "$name (pid $pid) is not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_alive "$name" "$pid" || {
            log "stopped $name (pid $pid) in $(secs_since "$t0") s"
            return 0
        }
        sleep 0.2
    done
    log "$name (pid $pid) ignored SIGTERM for 20 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 25; i++)); do
        pid_alive "$name" "$pid" || return 0
        sleep 0.2
    done
    err "$name (pid $pid) is still running"
    return 1
}

# Cancel whatever is still queued or running, so no job steps outlive slurmd.
cancel_jobs() {
    local out ids i
    out=$(timeout -s KILL 10 squeue -h -t PD,CF,R,S,CG,RQ,RS -o %A 2>/dev/null) || return 0
    mapfile -t ids <<<"$out"
    [[ -n ${ids[0]:-} ]] || return 0
    log "cancelling ${#ids[@]} job(s): ${ids[*]}"
    timeout -s KILL 15 scancel "${ids[@]}" >/dev/null 2>&1 || true
    for ((i = 0; i < 60; i++)); do
        out=$(timeout -s KILL 10 squeue -h -t R,CG -o %A 2>/dev/null) || return 0
        [[ -z $out ]] && return 0
        sleep 0.5
    done
}

# A config naming a controller that no longer runs makes every `scontrol` call wait ~9 s for it, and Snakemake's
# slurm plugin runs `scontrol show config` on import, i.e. in every snakemake call: put back what was there.
retire_config() { # retire_config FILE
    [[ -f $1 ]] && grep -qF "$MARKER" "$1" || return 0
    if [[ -f $1.ism-backup ]]; then
        mv -f "$1.ism-backup" "$1"
    else
        rm -f "$1"
    fi
}

cmd_down() {
    local t0 names=() pids=() name pid i rc=0
    t0=$(now_ms)
    if [[ ! -s $STATE_FILE ]]; then
        log "no daemons were started by cluster.sh up ($STATE_FILE absent); nothing to stop"
        rm -f "$STATE_FILE"
        return 0
    fi
    need_root down
    exec 9>"$LOCK_FILE"
    flock -w 60 9 || {
        err "another cluster.sh holds $LOCK_FILE"
        exit 1
    }
    while read -r name pid; do
        [[ -n $name ]] || continue
        names+=("$name")
        pids+=("$pid")
    done <"$STATE_FILE"
    if [[ " ${names[*]} " == *" slurmctld "* ]] && controller_up; then
        cancel_jobs
    fi
    for ((i = ${#names[@]} - 1; i >= 0; i--)); do
        stop_pid "${names[i]}" "${pids[i]}" || rc=1
    done
    if [[ " ${names[*]} " == *" slurmctld "* ]]; then
        retire_config "$CONF"
        retire_config "$GRES_CONF"
    fi
    rm -f "$STATE_FILE"
    log "down in $(secs_since "$t0") s"
    return "$rc"
}

cmd_status() {
    local state ping
    if ! command -v scontrol >/dev/null 2>&1; then
        log "SLURM client tools are not installed"
        return 1
    fi
    ping=$(timeout -s KILL 10 scontrol ping 2>&1) || true
    ping=${ping:-no answer}
    log "controller: ${ping%%$'\n'*}"
    if [[ $ping != *"is UP"* ]]; then
        return 1
    fi
    state=$(node_state)
    log "node state: ${state:-unknown}"
    timeout -s KILL 10 sinfo -o '%P %a %D %T %c %m %G' 2>/dev/null || true
    if [[ -s $STATE_FILE ]]; then
        log "started by cluster.sh: $(tr '\n' ' ' <"$STATE_FILE")"
    fi
    case $state in
        idle | mixed | allocated) return 0 ;;
        *) return 1 ;;
    esac
}

main() {
    case ${1:-} in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        *)
            echo "usage: $0 up|down|status" >&2
            exit 2
            ;;
    esac
}

main "$@"
