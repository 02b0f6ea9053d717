#!/usr/bin/env bash
# Stop the private SLURM cluster that .ci/slurm/start.sh started in DIR (default $RDMM_SLURM_DIR, else
# /tmp/rdmm-slurm). Only the daemons named by DIR's pid files are signalled, never processes by name;
# jobs still queued or running on this cluster are cancelled first. Files are kept (logs, jobcomp.txt);
# nothing outside DIR is touched. Safe to call when nothing is running.
#
#   .ci/slurm/stop.sh [DIR]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/common.sh"

DIR="$(slurm_dir_from_args "${1:-}")"
WAIT="${RDMM_SLURM_STOP_TIMEOUT:-15}"
export SLURM_CONF="$DIR/slurm.conf"

if [ ! -d "$DIR/run" ]; then
  echo "slurm: nothing to stop in $DIR"
  exit 0
fi

# Cancel this cluster's jobs while the controller is still up, so no job step outlives slurmd.
if pid_alive "$DIR/run/slurmctld.pid" slurmctld && [ -f "$SLURM_CONF" ]; then
  jobs="$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')" || jobs=""
  if [ -n "${jobs// /}" ]; then
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while [ -n "$(squeue -h -o '%i' 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  fi
fi

# SIGTERM slurmd and slurmctld together (each takes ~2 s to exit; in turn they took ~4 s), wait,
# then munged, which both need while they shut down. SIGKILL whatever ignores SIGTERM for $WAIT s.
stopped=""
stop_daemons() { # NAME:PIDFILE ...
  local d name pidfile pid pids="" deadline
  for d in "$@"; do
    name="${d%%:*}" pidfile="$DIR/${d#*:}"
    if pid_alive "$pidfile" "$name"; then
      pid="$(pid_of "$pidfile")"
      kill -TERM "$pid" 2>/dev/null || true
      pids="$pids $name:$pid"
      stopped="$stopped $name"
    fi
  done
  deadline=$((SECONDS + WAIT))
  for d in $pids; do
    name="${d%%:*}" pid="${d#*:}"
    while proc_running "$pid" "$name"; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "slurm/stop.sh: $name (pid $pid) ignored SIGTERM for ${WAIT}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
        break
      fi
      sleep 0.05
    done
  done
  for d in "$@"; do rm -f "$DIR/${d#*:}"; done
}
stop_daemons slurmd:run/slurmd.pid slurmctld:run/slurmctld.pid munged:run/munged.pid
echo "slurm: stopped${stopped:- nothing} in $DIR"
