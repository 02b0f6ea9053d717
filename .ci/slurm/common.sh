# Shared by start.sh and stop.sh (sourced, not run). See docs/slurm.md.

# The cluster directory: first argument, else $RDMM_SLURM_DIR, else /tmp/rdmm-slurm. Kept short on
# purpose: munged and slurmd put UNIX sockets in it and those paths must stay under ~107 characters.
slurm_dir_from_args() {
  local dir="${1:-${RDMM_SLURM_DIR:-/tmp/rdmm-slurm}}"
  case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
  printf '%s\n' "${dir%/}"
}

# The daemons' executables live in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# proc_running PID NAME: true when PID is a live (not zombie) process whose command name is NAME, so
# a recycled pid that now belongs to something else is never mistaken for our daemon. A daemon that
# died stays a zombie until pid 1 reaps it (seconds, in this container), hence the state check.
proc_running() {
  local pid="$1" name="$2" stat
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }" # the fields after "(comm) "; the first is the state
  case "${stat%% *}" in Z | X | x) return 1 ;; esac
  return 0
}

# pid_alive PIDFILE NAME: proc_running for the pid that PIDFILE holds.
pid_alive() {
  [ -s "$1" ] || return 1
  proc_running "$(tr -dc '0-9' <"$1")" "$2"
}

pid_of() { tr -dc '0-9' <"$1"; }

# Daemons in start order: name and pid file (relative to the cluster directory).
SLURM_DAEMONS="munged:run/munged.pid slurmctld:run/slurmctld.pid slurmd:run/slurmd.pid"
