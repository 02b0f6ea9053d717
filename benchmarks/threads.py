"""Threads of one registration: seconds with 1 .. N threads, on a quiet and on a loaded machine.

    python benchmarks/threads.py --cases oai-x01 brain-2mm --threads 1 2 --load 0 1

Each (case, threads, load) is a fresh process running ``rdmm_pipelines.register`` at the defaults
(LDDMM unless ``--model``), with ``--iterations`` per scale (default 10: enough to time, and the
same work for every thread count); ``--load L`` starts L busy processes (one spinning Python loop
each) beside it, as other jobs on a shared node would. Prints one line per run and the ratio to one
thread. The rule of ``rdmm_pipelines.threads.registration_threads`` is chosen from this.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, {here!r})
from pathlib import Path
from real_pairs import make_real_pair
from rdmm_pipelines.presets import get_preset
from rdmm_pipelines.registration import register
case, model, threads, iterations, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
cfg = get_preset("default", model)
cfg = cfg.replace(optimizer=cfg.optimizer.replace(iterations=(iterations,) * 3, window=0),
                  integrator=cfg.integrator.replace(step_check=False))
files = make_real_pair(case, Path(data))
t0 = time.perf_counter()
r = register(str(files["fixed"]), str(files["moving"]), config=cfg, device="cpu", threads=threads)
print(json.dumps({{"seconds": time.perf_counter() - t0, "optimize": r.timings["optimize"],
                  "evaluations": r.evaluations, "device": r.device}}))
"""


def _spin() -> None:  # pragma: no cover - a load generator
    while True:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["oai-x01", "brain-2mm"])
    ap.add_argument("--model", default="lddmm")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--load", nargs="+", type=int, default=[0, 1], help="busy processes beside the run")
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--data", default="runs/real_data")
    args = ap.parse_args()
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    print(f"machine: {os.cpu_count()} CPUs; model {args.model}; {args.iterations} iterations per scale")
    for case in args.cases:
        for load in args.load:
            spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(load)]
            for p in spinners:
                p.start()
            time.sleep(0.5)
            base = None
            try:
                for n in args.threads:
                    out = subprocess.run([sys.executable, "-c", _CHILD.format(here=str(HERE)), case, args.model, str(n),
                                          str(args.iterations), args.data], capture_output=True, text=True, env=env)
                    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                    if out.returncode or not lines:
                        print(f"{case} load {load} threads {n}: failed\n{out.stderr[-800:]}")
                        continue
                    rec = json.loads(lines[-1])
                    base = base or rec["optimize"]
                    print(f"{case:10s} load {load}  threads {n}:  optimise {rec['optimize']:7.2f} s "
                          f"({rec['evaluations']} evaluations, {rec['device']})  x{rec['optimize'] / base:.2f} of the first",
                          flush=True)
            finally:
                for p in spinners:
                    p.terminate()


if __name__ == "__main__":
    main()
