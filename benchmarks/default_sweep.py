"""Sweep configuration variants over the real case set: the measurements behind the defaults.

    python benchmarks/default_sweep.py --model lddmm --variants default --cases oai
    python benchmarks/default_sweep.py --model lddmm --set kernel.sigmas=[2,4,8,16] kernel.units=mm ...

Each variant is the default configuration of ``--model`` with ``--set`` overrides (dotted keys,
JSON values), or a named variant of ``VARIANTS``. One process, one thread (``--threads``), the
pairs of ``real_pairs.py`` in order; prints one line per (variant, case) with the mean Dice over
the labels, the folded cells, seconds, iterations and evaluations per scale, and a summary per
variant (mean and standard deviation of Dice, mean seconds). ``--syn`` adds ANTs SyN (antspyx
defaults) on the same pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from overrides import apply_overrides  # noqa: E402
from real_pairs import OAI_CROSS, OAI_LONG, REAL_CASES, make_real_pair  # noqa: E402
from run_case import similarity_after  # noqa: E402

#: named variants: dotted overrides of the default configuration
VARIANTS: dict[str, dict] = {
    "default": {},
    "paper-knee": {"kernel.sigmas": [0.05, 0.1, 0.15, 0.2, 0.25], "kernel.units": "domain",
                   "kernel.weights": [0.067, 0.133, 0.2, 0.267, 0.333]},
}




def _cases(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        out += {"oai": list(OAI_CROSS + OAI_LONG), "oai-x": list(OAI_CROSS), "oai-l": list(OAI_LONG)}.get(n, [n])
    return out


def run_ours(files: dict, cfg) -> dict:
    from rdmm_pipelines.evaluation import dice_per_label, mean_dice
    from rdmm_pipelines.registration import register
    from rdmm_pipelines.spatial import load_labels

    t0 = time.perf_counter()
    result = register(str(files["fixed"]), str(files["moving"]), config=cfg, device="cpu")
    seconds = time.perf_counter() - t0
    warped = result.apply(load_labels(files["moving_labels"]))
    dice = mean_dice(dice_per_label(warped.data[0], load_labels(files["fixed_labels"]).data[0]))
    per_scale: dict[float, int] = {}
    for rec in result.history:
        per_scale[rec.scale] = per_scale.get(rec.scale, 0) + 1
    cells = int(result.fold_statistics().get("folded_cells", 0))
    # a folder of this process's own: two sweeps on one case at once must not clear each other's saves
    with tempfile.TemporaryDirectory(prefix="sweep-", dir=Path(files["fixed"]).parent) as work:
        field = result.save(work, overwrite=True)["displacement"]
        after = similarity_after(files, str(field))
    return {"dice": dice, "seconds": seconds, "iterations": list(per_scale.values()),
            "evaluations": result.evaluations, "folded_cells": cells, **after}


def run_syn(files: dict, work: Path) -> dict:
    from rdmm_pipelines.evaluation.saved import evaluate_displacement_field
    from rdmm_pipelines.interfaces.baselines import BASELINES

    out = BASELINES["ants-syn"](str(files["fixed"]), str(files["moving"]), work, prefix="syn_", threads=1)
    ev = evaluate_displacement_field(out.displacement, files["fixed_labels"], files["moving_labels"],
                                     subject_id="pair", method="ants-syn")
    return {"dice": ev.mean_dice, "seconds": out.seconds, "iterations": [], "evaluations": 0,
            "folded_cells": int((ev.folds or {}).get("folded_cells", 0) or 0),
            **similarity_after(files, str(out.displacement))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lddmm", choices=("vsvf", "lddmm", "rdmm"))
    ap.add_argument("--variants", nargs="*", default=[], help=f"named variants: {', '.join(VARIANTS)}")
    ap.add_argument("--set", nargs="*", default=[], help="one extra variant: key=JSON overrides")
    ap.add_argument("--cases", nargs="+", default=["oai"], help=f"'oai', 'oai-x', 'oai-l' or names of {REAL_CASES}")
    ap.add_argument("--syn", action="store_true", help="also ANTs SyN on the same pairs")
    ap.add_argument("--preset", default="default", help="the configuration the variants change")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="runs/real_data")
    ap.add_argument("--out", default=None, help="append every record as a JSON line to this file")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from rdmm_pipelines.config import RegistrationConfig
    from rdmm_pipelines.presets import get_preset

    variants = {name: VARIANTS[name] for name in args.variants}
    if args.set:
        variants["set:" + " ".join(args.set)] = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    base = get_preset(args.preset, args.model).to_dict()
    cases = _cases(args.cases)
    rows: dict[str, list[dict]] = {}
    for case in cases:
        files = make_real_pair(case, Path(args.data))
        todo = [(name, None) for name in variants] + ([("ants-syn", None)] if args.syn else [])
        for name, _ in todo:
            if name == "ants-syn":
                work = Path(args.data) / case / "syn"
                work.mkdir(exist_ok=True)
                rec = run_syn(files, work)
            else:
                cfg = RegistrationConfig.from_dict(apply_overrides(json.loads(json.dumps(base)), variants[name]))
                rec = run_ours(files, cfg)
            rec.update(case=case, variant=name, model=args.model)
            rows.setdefault(name, []).append(rec)
            print(f"{case:9s} {name[:60]:60s} Dice {rec['dice']:.3f} NCC {rec['ncc_after']:.4f} {rec['seconds']:6.1f} s  "
                  f"its {rec['iterations']} evals {rec['evaluations']} folded {rec['folded_cells']}", flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
    print()
    for name, recs in rows.items():
        d = [r["dice"] for r in recs]
        s = [r["seconds"] for r in recs]
        ncc = statistics.mean(r["ncc_after"] for r in recs)
        print(f"{name[:70]:70s} n={len(d)} Dice {statistics.mean(d):.4f} +- {statistics.pstdev(d):.4f} NCC {ncc:.4f} "
              f"(min {min(d):.3f})  {statistics.mean(s):.1f} s/pair  folded pairs "
              f"{sum(r['folded_cells'] > 0 for r in recs)}")


if __name__ == "__main__":
    main()
