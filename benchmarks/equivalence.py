"""Before/after check for speed work: the objective, its gradients and the shot map must not change.

    python benchmarks/equivalence.py --save runs/equivalence/ref.pt      # on the code before a change
    python benchmarks/equivalence.py --check runs/equivalence/ref.pt     # on the code after it

Every benchmark method on a small 2D and 3D grid, in float64 and float32, with plain backprop and
with per-step checkpointing. Prints the largest relative difference per quantity and exits
non-zero where one exceeds the tolerance (1e-10 in float64, 1e-4 in float32).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from problems import METHODS, make_problem

CASES = [((40, 48), torch.float64), ((18, 20, 16), torch.float64), ((40, 48), torch.float32),
         ((18, 20, 16), torch.float32)]
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def results() -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shape, dtype in CASES:
        for method in METHODS:
            for ckpt in (False, True):
                p = make_problem(method, shape, dtype=dtype, integrator={"checkpointed": ckpt}, steps=4)
                e = p.energies()
                e["total"].backward()
                key = f"{method}/{'x'.join(map(str, shape))}/{str(dtype)[6:]}/ckpt{int(ckpt)}"
                for name, value in e.items():
                    out[f"{key}/{name}"] = value.detach().clone()
                for name, param in (("grad_m0", p.m0), ("grad_z", p.z)):
                    if param is not None:
                        out[f"{key}/{name}"] = param.grad.detach().clone()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--save", type=Path)
    g.add_argument("--check", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    now = results()
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        torch.save(now, args.save)
        print(f"saved {len(now)} quantities to {args.save}")
        return 0
    ref = torch.load(args.check)
    bad = 0
    for key, r in ref.items():
        x = now[key]
        rel = float((x - r).abs().max() / r.abs().max().clamp_min(1e-30))
        tol = TOL[r.dtype]
        flag = "FAIL" if rel > tol else "ok"
        bad += rel > tol
        print(f"{flag:4s} {key:60s} rel. diff {rel:.2e}")
    print(f"{bad} of {len(ref)} quantities differ beyond tolerance")
    return int(bad > 0)


if __name__ == "__main__":
    sys.exit(main())
