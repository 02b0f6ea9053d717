#!/usr/bin/env bash
# Self-test of the private SLURM cluster scripts (start.sh, stop.sh, the sacct shim), with timings.
# Starts, checks jobs, stops, starts again (job ids restart), checks the shim again, stops.
#
#   .ci/slurm/selftest.sh [DIR]      # DIR defaults to /tmp/rdmm-slurm-selftest
#
# Leaves no daemons behind (stop.sh runs on exit). Exit status 0 when every check passes.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${1:-/tmp/rdmm-slurm-selftest}"
WORK="$(mktemp -d /tmp/rdmm-slurm-selftest-out.XXXXXX)"
trap '"$HERE/stop.sh" "$DIR" >/dev/null 2>&1 || true' EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# wait_done ID: until squeue no longer lists the job (what pydra's worker polls).
wait_done() {
  local deadline=$((SECONDS + 60))
  while [ -n "$(squeue -h -j "$1" 2>/dev/null)" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "job $1 did not finish in 60 s"
    sleep 0.05
  done
}
# sacct_line ID: what pydra reads.
sacct_line() { sacct -n -X -j "$1" -o JobID,State,ExitCode | tr -s ' ' | sed 's/^ //; s/ $//'; }

t=$(now); "$HERE/start.sh" "$DIR"; T_START=$(secs "$t" "$(now)")
# shellcheck disable=SC1091
. "$DIR/env.sh"
[ "$(command -v sacct)" = "$DIR/bin/sacct" ] || fail "sacct on PATH is $(command -v sacct), not the shim"

t=$(now); "$HERE/start.sh" "$DIR" >/dev/null; T_RESTART_NOOP=$(secs "$t" "$(now)")
ok "start.sh again while running: reused (${T_RESTART_NOOP}s)"

# 1. a plain job completes, and the shim reports it the way pydra parses it
t=$(now)
id=$(sbatch --parsable -o "$WORK/host-%j.out" --wrap 'hostname')
wait_done "$id"
T_TURN=$(secs "$t" "$(now)")
[ "$(sacct_line "$id")" = "$id COMPLETED 0:0" ] || fail "sacct for job $id: '$(sacct_line "$id")'"
[ -s "$WORK/host-$id.out" ] || fail "job $id wrote no output"
ok "sbatch --wrap hostname: job $id COMPLETED 0:0 in ${T_TURN}s (output: $(cat "$WORK/host-$id.out"))"

# 2. a failing job: FAILED with its exit code
id=$(sbatch --parsable -o /dev/null --wrap 'exit 3')
wait_done "$id"
[ "$(sacct_line "$id")" = "$id FAILED 3:0" ] || fail "sacct for failing job $id: '$(sacct_line "$id")'"
ok "failing job $id: $(sacct_line "$id")"

# 3. fake GPUs: --gres=gpu:N sets CUDA_VISIBLE_DEVICES, no --gres leaves it unset
g1=$(sbatch --parsable --gres=gpu:1 -o "$WORK/gpu1-%j.out" --wrap 'echo "${CUDA_VISIBLE_DEVICES-unset}"')
g2=$(sbatch --parsable --gres=gpu:2 -o "$WORK/gpu2-%j.out" --wrap 'echo "${CUDA_VISIBLE_DEVICES-unset}"')
g0=$(sbatch --parsable -o "$WORK/gpu0-%j.out" --wrap 'echo "${CUDA_VISIBLE_DEVICES-unset}"')
for j in "$g1" "$g2" "$g0"; do wait_done "$j"; done
v1=$(cat "$WORK/gpu1-$g1.out") v2=$(cat "$WORK/gpu2-$g2.out") v0=$(cat "$WORK/gpu0-$g0.out")
[[ "$v1" =~ ^[0-9]+$ ]] || fail "--gres=gpu:1 job saw CUDA_VISIBLE_DEVICES='$v1'"
[[ "$v2" =~ ^[0-9]+,[0-9]+$ ]] || fail "--gres=gpu:2 job saw CUDA_VISIBLE_DEVICES='$v2'"
[ "$v0" = unset ] || fail "job without --gres saw CUDA_VISIBLE_DEVICES='$v0'"
ok "CUDA_VISIBLE_DEVICES: gpu:1 -> '$v1', gpu:2 -> '$v2', no gres -> $v0"
if sbatch --parsable --gres=gpu:3 --wrap true >/dev/null 2>&1; then fail "gpu:3 accepted on a 2-GPU node"; fi
ok "--gres=gpu:3 rejected at submission (node has 2)"

# 4. two 1-CPU jobs run side by side on a 2-CPU node; a third waits for a free core
ncpu=$(sinfo -h -N -n localhost -o '%c')
t=$(now)
ids=()
for _ in $(seq "$ncpu"); do ids+=("$(sbatch --parsable -n1 -o /dev/null --wrap 'sleep 3')"); done
extra=$(sbatch --parsable -n1 -o /dev/null --wrap 'sleep 1')
sleep 1.5
running=$(squeue -h -t R -o '%i' | wc -l)
[ "$running" -eq "$ncpu" ] || fail "$running jobs running at once, expected $ncpu"
[ "$(squeue -h -j "$extra" -o '%T')" = PENDING ] || fail "job $extra should wait for a core"
for j in "${ids[@]}"; do wait_done "$j"; done
T_CONC=$(secs "$t" "$(now)")
wait_done "$extra"
for j in "${ids[@]}" "$extra"; do
  [ "$(sacct_line "$j")" = "$j COMPLETED 0:0" ] || fail "sacct for job $j: '$(sacct_line "$j")'"
done
ok "$ncpu concurrent 'sleep 3' jobs all done in ${T_CONC}s; job $extra pended until a core freed"

# 5. stop, start again: fresh controller state, so job ids restart; the shim must not mix them up
t=$(now); "$HERE/stop.sh" "$DIR"; T_STOP=$(secs "$t" "$(now)")
for p in munged slurmctld slurmd; do [ ! -e "$DIR/run/$p.pid" ] || fail "$p pid file left behind"; done
t=$(now); "$HERE/start.sh" "$DIR"; T_START2=$(secs "$t" "$(now)")
id=$(sbatch --parsable -o /dev/null --wrap 'exit 5')
grep -q "^JobId=$id .*JobState=COMPLETED" "$DIR/jobcomp.prev.txt" ||
  fail "expected job id $id to be reused (the previous run's job $id COMPLETED, in jobcomp.prev.txt)"
wait_done "$id"
[ "$(sacct_line "$id")" = "$id FAILED 5:0" ] || fail "after restart, sacct for job $id: '$(sacct_line "$id")' (old job $id was COMPLETED)"
ok "after stop/start: job $id (id reused) reported as $(sacct_line "$id"), not the previous run's job $id"
t=$(now); "$HERE/stop.sh" "$DIR"; T_STOP2=$(secs "$t" "$(now)")
"$HERE/stop.sh" "$DIR" >/dev/null || fail "stop.sh on a stopped cluster failed"
ok "stop.sh on a stopped cluster: no-op"
rm -rf "$WORK"

echo "timings: start ${T_START}s, start again (reuse) ${T_RESTART_NOOP}s, job turnaround ${T_TURN}s," \
  "stop ${T_STOP}s, second start ${T_START2}s, second stop ${T_STOP2}s"
echo "ALL OK"
