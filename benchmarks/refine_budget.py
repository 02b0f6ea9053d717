"""What a refinement's budget buys: one network's prediction refined several ways, side by side.

    python benchmarks/refine_budget.py --weights runs/learnt/learnt2d_rdmm/train_rdmm/best.pt --pairs 3 5

For each held-out synthetic pair (``make_pairs_2d(seed=--seed, size=--size)``, the test pairs of
``learnt2d.py``) the network predicts once; the same prediction is then refined with each budget
(finest scale 30 iterations, the default; 60 iterations with a tighter convergence test; the two
and three finest scales) and the Dice, iterations and seconds of each are printed.
"""

from __future__ import annotations

import argparse
import time

import torch

from rdmm_pipelines import register
from rdmm_pipelines.affine import AffineTransform
from rdmm_pipelines.demo import _image, score_result
from rdmm_pipelines.learning import RefineConfig, load_checkpoint, register_with_network
from rdmm_pipelines.learning.refine import refine_config
from rdmm_pipelines.optim.initial import InitialConditions
from rdmm_pipelines.synthetic import make_pairs_2d

#: name -> (scales, iterations per scale, convergence window, tolerance)
BUDGETS = {
    "finest, 30 iterations (default)": (1, 30, 5, 1e-3),
    "finest, 60 iterations, tolerance 1e-4": (1, 60, 5, 1e-4),
    "two finest scales, 30 each": (2, 30, 5, 1e-3),
    "three scales, 30 each": (3, 30, 5, 1e-3),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--pairs", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=6, help="held-out pairs made (as learnt2d.py --test-pairs)")
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.weights)
    pairs = make_pairs_2d(args.n, seed=args.seed, size=args.size)
    for i in args.pairs:
        p = pairs[i]
        fixed, moving = _image(p.target, p.spacing), _image(p.source, p.spacing)
        labels = _image(p.source_labels[None], p.spacing)
        pred = register_with_network(fixed, moving, ckpt, device="cpu")
        for name, (scales, iterations, window, tolerance) in BUDGETS.items():
            cfg, first = refine_config(ckpt.network, RefineConfig(scales=scales, iterations=iterations))
            cfg = cfg.replace(optimizer=cfg.optimizer.replace(window=window, tolerance=tolerance))
            affine = pred.affine if pred.affine is not None else AffineTransform.identity(2)
            t0 = time.perf_counter()
            result = register(fixed, moving, config=cfg, affine=affine, device="cpu", threads=args.threads,
                              initial=InitialConditions(m0=pred.m0, h0=pred.h0, iteration=first))
            s = score_result(result, labels, p.target_labels, pair=p.name, method=name,
                             seconds=time.perf_counter() - t0)
            print(f"{p.name}  {name:40s} Dice {s.dice_after:.3f}  {s.iterations:3d} iterations  {s.seconds:6.1f} s  "
                  f"({', '.join(x['stopped'] for x in result.scales)})", flush=True)


if __name__ == "__main__":
    main()
