"""Peak memory of one objective evaluation (forward + backward), plain backprop vs checkpointing.

    python benchmarks/memory.py --quick --out runs/memory_quick
    python benchmarks/memory.py --out runs/memory          # includes the 160x192x224 case
    python benchmarks/memory.py --big --out runs/memory_1mm   # only that case

Each case runs in a fresh process and reports ``ru_maxrss`` (peak resident memory of that
process, CPU); the baseline RSS of a process that built the problem without evaluating it is
reported beside it. The 1 mm brain-sized case is the optimiser's finest scale with its default
``map_low_res_factor = 0.5``: images 160x192x224, map and momentum 80x96x112, RDMM with the
default five Gaussians and RK4 with 10 steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(method: str, shape, image_shape, checkpointed: bool, evaluate: bool, steps: int) -> dict:
    import torch
    from problems import make_problem

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    p = make_problem(method, shape, steps=steps, image_shape=image_shape, integrator={"checkpointed": checkpointed})
    t0 = time.perf_counter()
    if evaluate:
        p.loss().backward()
    seconds = time.perf_counter() - t0
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "seconds": seconds}


def run(args_list: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *args_list],
                          capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": proc.stderr[-1500:]}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="runs/memory")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", default="rdmm-optimized")
    ap.add_argument("--shape", type=int, nargs="+")
    ap.add_argument("--image-shape", type=int, nargs="+")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--checkpointed", action="store_true")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--big", action="store_true", help="only the 1 mm brain-sized case (checkpointed)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.method, args.shape, args.image_shape, args.checkpointed, not args.no_eval,
                               args.steps)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # (map, image, modes): the 1 mm case runs checkpointed only: plain backprop there needs about
    # 8x the 40x48x56 case (~22 GB), more than a 23 GB machine shared with other jobs can give
    cases = [((32, 32, 32), None, (False, True)), ((40, 48, 56), None, (False, True)),
             ((48, 48, 48), None, (False, True))]
    if not args.quick:
        cases += [((64, 64, 64), None, (False, True))]
    if not args.quick or args.big:
        cases += [((80, 96, 112), (160, 192, 224), (True,))]
    if args.big:
        cases = cases[-1:]
    rows = []
    for shape, image_shape, modes in cases:
        base = ["--method", args.method, "--steps", str(args.steps), "--shape", *map(str, shape)]
        if image_shape:
            base += ["--image-shape", *map(str, image_shape)]
        idle = run(base + ["--no-eval"])
        for ckpt in modes:
            r = run(base + (["--checkpointed"] if ckpt else []))
            row = {"method": args.method, "map": shape, "image": image_shape or shape, "checkpointed": ckpt,
                   "steps": args.steps, "idle_rss_mb": idle.get("peak_rss_mb"), **r}
            rows.append(row)
            print(json.dumps(row), flush=True)
            (out / "memory.json").write_text(json.dumps(rows, indent=1))
    lines = ["| method | map | image | checkpointed | peak RSS (MB) | RSS before evaluation (MB) | s (fwd+bwd) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['map']} | {r['image']} | {r['checkpointed']} | failed ||")
            continue
        lines.append(f"| {r['method']} | {'x'.join(map(str, r['map']))} | {'x'.join(map(str, r['image']))} | "
                     f"{r['checkpointed']} | {r['peak_rss_mb']:.0f} | {r['idle_rss_mb']:.0f} | {r['seconds']:.1f} |")
    (out / "memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
