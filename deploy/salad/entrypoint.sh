#!/usr/bin/env bash
# One SaladCloud container runs both halves of Chorus: chorus-synth on [::] (SaladCloud reaches containers over IPv6;
# [::] takes IPv4 too) and chorus-orchestrator calling it over loopback. Each keeps its own settings from CHORUS_*
# variables; the few names both read (the metrics port, the drain grace) are set per process here:
#
#   SYNTH_PORT (50051)            SYNTH_METRICS_PORT (9100)          SYNTH_DRAIN_GRACE_S (30)
#   ORCHESTRATOR_METRICS_PORT (9200)                                  ORCHESTRATOR_DRAIN_GRACE_S (60)
#
# SIGTERM (or SIGINT) goes to both: the orchestrator stops taking jobs and finishes or releases what it holds, the
# synth server finishes the calls in flight. The script exits when both have: 0 if both exited 0. If either exits on
# its own, the other is stopped and the script exits non-zero, so that SaladCloud restarts the container.
set -uo pipefail

synth_port="${SYNTH_PORT:-50051}"
synth_metrics_port="${SYNTH_METRICS_PORT:-9100}"
synth_grace_s="${SYNTH_DRAIN_GRACE_S:-30}"
orchestrator_metrics_port="${ORCHESTRATOR_METRICS_PORT:-9200}"
orchestrator_grace_s="${ORCHESTRATOR_DRAIN_GRACE_S:-60}"

log() { echo "entrypoint: $*" >&2; }

synth_pid=""
orchestrator_pid=""
stopping=0

stop_both() {
    stopping=1
    # The orchestrator first: it stops taking jobs before the synth server starts refusing calls.
    for pid in "$orchestrator_pid" "$synth_pid"; do
        if [[ -n "$pid" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
}

# shellcheck disable=SC2329  # called by the traps below
on_signal() {
    log "$1: stopping chorus-orchestrator and chorus-synth"
    stop_both
}
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGINT' INT

chorus-synth --host "[::]" --port "$synth_port" --metrics-port "$synth_metrics_port" \
    --drain-grace-s "$synth_grace_s" &
synth_pid=$!
log "chorus-synth pid $synth_pid on [::]:$synth_port, metrics :$synth_metrics_port"

# The orchestrator waits for the synth server to load its model: it takes jobs only as capacity appears.
chorus-orchestrator run --synth "127.0.0.1:$synth_port" --metrics-port "$orchestrator_metrics_port" \
    --drain-grace-s "$orchestrator_grace_s" &
orchestrator_pid=$!
log "chorus-orchestrator pid $orchestrator_pid, synth 127.0.0.1:$synth_port, metrics :$orchestrator_metrics_port"

if (( stopping )); then
    stop_both  # a signal came before both were started
fi

# Until one child exits or a signal arrives (a trapped signal cuts the wait short with a status > 128 and no pid).
declare -A statuses=()
first_pid=""
wait -n -p first_pid "$synth_pid" "$orchestrator_pid"
first_status=$?
if [[ -n "${first_pid:-}" ]]; then
    statuses[$first_pid]=$first_status
fi
if (( ! stopping )); then
    log "pid ${first_pid:-?} exited $first_status on its own: stopping the other"
    stop_both
    stopping=2
fi

# Each child's exit status; a wait cut short by another signal is resumed.
wait_for() {
    local pid=$1 status
    while true; do
        wait "$pid"
        status=$?
        if (( status > 128 )) && kill -0 "$pid" 2>/dev/null; then
            continue
        fi
        return "$status"
    done
}
for pid in "$orchestrator_pid" "$synth_pid"; do
    if [[ -z "${statuses[$pid]:-}" ]]; then
        wait_for "$pid"
        statuses[$pid]=$?
    fi
    # Killed by our SIGTERM before it had installed its handler: it had not started any work, nothing to lose.
    if (( stopping == 1 && statuses[$pid] == 143 )); then
        statuses[$pid]=0
    fi
done
orchestrator_status=${statuses[$orchestrator_pid]}
synth_status=${statuses[$synth_pid]}
log "chorus-orchestrator exited $orchestrator_status, chorus-synth exited $synth_status"

if (( orchestrator_status != 0 )); then
    exit "$orchestrator_status"
elif (( synth_status != 0 )); then
    exit "$synth_status"
elif (( stopping == 2 )); then
    exit 1  # both ended without being asked to: not a clean stop
fi
exit 0
