"""Time (and optionally profile) one forward + backward pass of the shooting objective.

    python benchmarks/profile_objective.py --methods rdmm-optimized --shape 40 40 40 --profile
    python benchmarks/profile_objective.py --shape 64 64 64 --repeat 2

One evaluation + gradient is what L-BFGS pays per function evaluation (about 1.2-2 per
iteration with the strong-Wolfe line search).
"""

from __future__ import annotations

import argparse
import time

import torch
from problems import METHODS, make_problem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--shape", type=int, nargs="+", default=[64, 64, 64])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpointed", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for method in args.methods:
        p = make_problem(method, args.shape, steps=args.steps, integrator={"checkpointed": args.checkpointed})
        times = []
        for _ in range(args.repeat):
            for q in p.params:
                q.grad = None
            t0 = time.perf_counter()
            p.loss().backward()
            times.append(time.perf_counter() - t0)
        print(f"{method:16s} {'x'.join(map(str, args.shape))} steps {args.steps}: forward+backward "
              f"{min(times):.3f} s (best of {args.repeat})", flush=True)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                p.loss().backward()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
