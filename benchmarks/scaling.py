"""How the cost of one objective evaluation (forward + backward) grows, measured beside the model.

    python benchmarks/scaling.py --quick --out runs/scaling_quick
    python benchmarks/scaling.py --out runs/scaling

Three sweeps (3D, ``--threads`` torch threads): grid size n^3 (LDDMM and RDMM), number of
Gaussians N (RDMM, optimised pre-weights), number of RK4 steps (LDDMM and RDMM). Expected
scaling, fitted through the first point of each sweep:

* size: the FFTs cost ~ M log M on the padded grid (M ~ n^3 points) and everything else is
  linear in n^3, so t ~ n^3 log n^3;
* Gaussians: RDMM filters N x d channels in nu = K_i(w_i m), N in the smoother and the force, so
  t ~ a + b N (a the parts that do not depend on N: the map, EPDiff, the similarity);
* steps: t ~ steps (every RK4 step costs the same four right-hand sides and their adjoints).

Writes ``scaling.json``, ``scaling.md`` and ``scaling.png`` (matplotlib, Agg) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from problems import make_problem


def measure(method: str, shape, repeat: int, **kw) -> float:
    p = make_problem(method, shape, **kw)
    best = math.inf
    for _ in range(repeat):
        for q in p.params:
            q.grad = None
        t0 = time.perf_counter()
        p.loss().backward()
        best = min(best, time.perf_counter() - t0)
    return best


def _fit(xs, ts, model) -> list[float]:
    """Expected times: model(x) scaled to the first measurement."""
    c = ts[0] / model(xs[0])
    return [c * model(x) for x in xs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", default="runs/scaling")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = (16, 24, 32, 40) if args.quick else (16, 24, 32, 48, 64)
    gaussians = (1, 2, 4, 8)
    steps = (2, 5, 10, 20) if args.quick else (5, 10, 20, 40)
    n_small = 24 if args.quick else 32
    res: dict[str, list[dict]] = {"size": [], "gaussians": [], "steps": []}
    for method in ("lddmm", "rdmm-optimized"):
        ts = [measure(method, (n, n, n), args.repeat, steps=5) for n in sizes]
        exp = _fit(sizes, ts, lambda n: n**3 * math.log(n**3))
        res["size"] += [{"method": method, "n": n, "seconds": t, "expected": e} for n, t, e in zip(sizes, ts, exp)]
        print(method, "size", [f"{t:.2f}" for t in ts], flush=True)
    sig = lambda k: tuple(0.05 * (i + 1) for i in range(k))
    ts = [measure("rdmm-optimized", (n_small,) * 3, args.repeat, steps=5, sigmas=sig(k)) for k in gaussians]
    b = (ts[-1] - ts[0]) / (gaussians[-1] - gaussians[0])  # a + b N through the end points
    exp = [ts[0] + b * (k - gaussians[0]) for k in gaussians]
    res["gaussians"] = [{"method": "rdmm-optimized", "N": k, "seconds": t, "expected": e}
                        for k, t, e in zip(gaussians, ts, exp)]
    print("gaussians", [f"{t:.2f}" for t in ts], flush=True)
    for method in ("lddmm", "rdmm-optimized"):
        ts = [measure(method, (n_small,) * 3, args.repeat, steps=s) for s in steps]
        exp = _fit(steps, ts, lambda s: s)
        res["steps"] += [{"method": method, "steps": s, "seconds": t, "expected": e} for s, t, e in zip(steps, ts, exp)]
        print(method, "steps", [f"{t:.2f}" for t in ts], flush=True)
    (out / "scaling.json").write_text(json.dumps({"threads": args.threads, "results": res}, indent=1))
    lines = [f"# Scaling of one objective evaluation (forward + backward), {args.threads} thread(s)", ""]
    for sweep, key, note in (("size", "n", "n^3 grid, RK4 5 steps; expected ~ n^3 log n^3"),
                             ("gaussians", "N", f"{n_small}^3, RK4 5 steps; expected a + b N (line through the ends)"),
                             ("steps", "steps", f"{n_small}^3; expected ~ steps")):
        lines += [f"## {sweep}: {note}", "", f"| method | {key} | measured s | expected s |", "|---|---|---|---|"]
        lines += [f"| {r['method']} | {r[key]} | {r['seconds']:.3f} | {r['expected']:.3f} |" for r in res[sweep]]
        lines.append("")
    (out / "scaling.md").write_text("\n".join(lines))
    _plot(res, out / "scaling.png")
    print("\n".join(lines))


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (sweep, key, xlabel) in zip(axes, (("size", "n", "grid side n (n^3 voxels)"),
                                              ("gaussians", "N", "number of Gaussians N"),
                                              ("steps", "steps", "RK4 steps"))):
        for method in dict.fromkeys(r["method"] for r in res[sweep]):
            rows = [r for r in res[sweep] if r["method"] == method]
            xs = [r[key] for r in rows]
            line = ax.plot(xs, [r["seconds"] for r in rows], "o-", label=f"{method} measured")[0]
            ax.plot(xs, [r["expected"] for r in rows], "--", color=line.get_color(), label=f"{method} expected")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds (forward + backward)")
        if sweep == "size":
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
