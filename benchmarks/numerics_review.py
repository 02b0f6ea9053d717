"""The five findings of the numerical review, measured before (the old schemes, still selectable)
and after (the defaults), on the paper's synthetic pairs (200x200, seed 2018).

    python benchmarks/numerics_review.py --pairs 1 --iterations 60 60 60 --out runs/numerics_review

1. folds: LDDMM with the map advected by central differences and 10 fixed RK4 steps (before)
   against the defaults (map by composition, steps from the Courant number): Dice, folding voxels
   (central-difference det J) and folded cells (exact per-cell test).
2. Courant number: the map at full resolution with 10 fixed steps (before: the shot cannot be
   integrated; now a ShootingError, never a NaN map) against the defaults.
3. energy with momentum at the border: E(1)/E(0) of the registered LDDMM m0 without the border
   taper (kernel.border = 0) and with it (default).
4. optimised RDMM: sigma(x) at t = 0, 5th-95th percentile, logit_scale 1 (before) against the
   default, with Dice and folds.
5. mk-LNCC symmetry: LDDMM on the pair and on the pair flipped along both axes; Dice of each.

Prints one line per run and writes review.json into --out.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from rdmm_pipelines import register
from rdmm_pipelines.demo import _image, method_config
from rdmm_pipelines.evaluation import dice_per_label, mean_dice
from rdmm_pipelines.integrators import ShootingError, integrate
from rdmm_pipelines.models.shooting import RDMM
from rdmm_pipelines.provenance import versions, write_json_atomic
from rdmm_pipelines.synthetic import make_pairs_2d


def run(pair, method, iterations, flip=False, **changes):
    """Register one pair with ``method``'s configuration and ``changes`` (section -> dict)."""
    cfg = method_config(method, iterations, size=pair.source.shape[-1])
    for section, values in changes.items():
        cfg = cfg.replace(**{section: getattr(cfg, section).replace(**values)})
    src, tgt, src_l, tgt_l = pair.source, pair.target, pair.source_labels, pair.target_labels
    if flip:
        src, tgt = src.flip(-1, -2), tgt.flip(-1, -2)
        src_l, tgt_l = src_l.flip(-1, -2), tgt_l.flip(-1, -2)
    regions = None
    if method == "rdmm-predefined":
        r = pair.source_regions.flip(-1, -2) if flip else pair.source_regions
        regions = _image(r[None], pair.spacing)
    t0 = time.perf_counter()
    try:
        res = register(_image(tgt, pair.spacing), _image(src, pair.spacing), config=cfg, region_labels=regions,
                       device="cpu")
    except ShootingError as err:
        return {"error": str(err), "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    warped = res.apply(_image(src_l[None], pair.spacing))
    out = {"dice": mean_dice(dice_per_label(warped.data[0], tgt_l)), "seconds": seconds,
           "steps_taken": res.shot_steps, "step_difference": res.step_difference}
    folds = res.fold_statistics()
    out.update({k: folds[k] for k in ("folding_voxels", "folded_cells", "det_min")})
    model = res.model
    h0 = None if res.h0 is None else res.h0.double()
    state0 = model.initial_state(res.m0.double(), h0) if isinstance(model, RDMM) else model.initial_state(res.m0.double())
    if method != "vsvf":
        state1 = integrate(model, state0, **cfg.integrator.options())
        out["energy_ratio"] = float(model.energy(state1) / model.energy(state0))
    sig = res.sigma_maps()
    if sig is not None:
        s0 = sig[0].data.flatten().double() / res.fixed.grid.domain_scale
        q = torch.quantile(s0, torch.tensor([0.05, 0.95], dtype=torch.float64))
        out["sigma_p5_p95"] = [float(q[0]), float(q[1])]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--iterations", type=int, nargs="+", default=[60, 60, 60])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="runs/numerics_review")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    old_shot = {"map_update": "advection", "max_cfl": 0.0}
    cases = {
        "1 lddmm, map advected, 10 fixed steps": ("lddmm", {"integrator": old_shot}, False),
        "1 lddmm, defaults": ("lddmm", {}, False),
        "2 lddmm, full-res map, 10 fixed steps": ("lddmm", {"integrator": {"max_cfl": 0.0},
                                                            "optimizer": {"map_low_res_factor": None}}, False),
        "2 lddmm, full-res map, defaults": ("lddmm", {"optimizer": {"map_low_res_factor": None}}, False),
        "3 lddmm, no border taper": ("lddmm", {"kernel": {"border": 0.0}}, False),
        "4 rdmm-optimized, logit_scale 1": ("rdmm-optimized", {"regional": {"logit_scale": 1.0}}, False),
        "4 rdmm-optimized, defaults": ("rdmm-optimized", {}, False),
        "5 lddmm, flipped pair": ("lddmm", {}, True),
    }
    rows = []
    for pair in make_pairs_2d(args.pairs, seed=args.seed, size=200):
        for name, (method, changes, flip) in cases.items():
            r = run(pair, method, args.iterations, flip=flip, **changes)
            r.update(pair=pair.name, case=name)
            rows.append(r)
            print(pair.name, name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                                    if k not in ("pair", "case")}, flush=True)
    write_json_atomic(Path(args.out) / "review.json",
                      {"rows": rows, "args": vars(args), "versions": versions(),
                       "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
