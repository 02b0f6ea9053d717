"""Register one benchmark pair with one method, score it, and print one JSON line.

    python benchmarks/run_case.py --case brain2mm --method lddmm --threads 1 --work runs/bench/work

Meant to run in a fresh process per case (``suite.py`` does this), so that the peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` plus that of child processes, which is how
NiftyReg runs) belongs to this registration alone. Every method is scored the same way: its full
transform is written as an ITK displacement field and evaluated by
``rdmm_pipelines.evaluation.evaluate_displacement_field`` (Dice over the labels, folds of the full
Jacobian determinant).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

OURS = ("vsvf", "lddmm", "rdmm-predefined", "rdmm-optimized")
PEERS = ("ants-syn", "sitk-demons-fss", "niftyreg-f3d")
#: iterations per scale of our methods (coarse to fine)
ITERATIONS = {"quick": (10, 10, 5), "full": (30, 30, 20)}
#: --mode defaults: our methods at the defaults of ``rdmm register`` (the real case set)
MODES = ("quick", "full", "defaults")
BRAIN_SIGMAS = (0.03, 0.06, 0.09, 0.12)
BRAIN_WEIGHTS = (0.1, 0.3, 0.3, 0.3)


def _our_config(case: str, method: str, mode: str, steps: int | None = None, preset: str = "default"):
    cfg = _base_config(case, method, mode, preset)
    if steps is not None:
        cfg = cfg.replace(integrator=cfg.integrator.replace(steps=steps))
    return cfg


def _base_config(case: str, method: str, mode: str, preset: str = "default"):
    from rdmm_pipelines.config import OptimizerConfig
    from rdmm_pipelines.demo import method_config
    from rdmm_pipelines.presets import default_region_weights, get_preset

    if mode == "defaults":  # the real case set: exactly what `rdmm register --model M [--preset P]` runs
        if method == "rdmm-predefined":
            raise ValueError("the real case set runs the defaults: rdmm-optimized, not rdmm-predefined")
        return get_preset(preset, "rdmm" if method.startswith("rdmm") else method)
    if preset != "default":
        raise ValueError("--preset applies to --mode defaults (the real case set) only")
    iters = ITERATIONS[mode]
    if case == "2d200":
        return method_config(method, iters)
    model = "rdmm" if method.startswith("rdmm") else method
    cfg = get_preset("default", model)
    # the default preset's kernel (sigma 0.05-0.25 of the longest side) is made for knees; brains
    # and the phantom need finer scales (sigma 0.03-0.12: 7-27 mm on the 224 mm brain box)
    cfg = cfg.replace(kernel=cfg.kernel.replace(sigmas=BRAIN_SIGMAS, weights=BRAIN_WEIGHTS))
    if method == "rdmm-predefined":
        cfg = cfg.replace(regional=cfg.regional.replace(source="predefined",
                                                        region_weights=default_region_weights(cfg.kernel)))
    return cfg.replace(optimizer=OptimizerConfig(scales=cfg.optimizer.scales, iterations=iters,
                                                 map_low_res_factor=cfg.optimizer.map_low_res_factor))


def _regions(case: str, moving_labels: Path):
    """Region map for pre-defined RDMM: the lung (phantom), the objects' foreground (2D), the
    brain (brain2mm): label > 0 except the phantom's body (label 2)."""
    from rdmm_pipelines.spatial import load_labels

    lab = load_labels(moving_labels)
    region = (lab.data == 1) if case.startswith("phantom") else (lab.data > 0)
    return lab.with_data(region.long())


def run_ours(case: str, method: str, files: dict[str, Path], work: Path, mode: str, steps: int | None = None,
             preset: str = "default") -> dict:
    import torch

    from rdmm_pipelines.registration import register
    from rdmm_pipelines.transforms import DenseTransform

    cfg = _our_config(case, method, mode, steps, preset)
    regions = _regions(case, files["moving_labels"]) if method == "rdmm-predefined" else None
    t0 = time.perf_counter()
    result = register(str(files["fixed"]), str(files["moving"]), config=cfg, region_labels=regions, device="cpu")
    seconds = time.perf_counter() - t0
    disp = DenseTransform.from_result(result).save_displacement_field(work / f"{case}_{method}_displacement.nii.gz")
    iterations = len(result.history)
    return {"seconds": seconds, "iterations": iterations, "evaluations": result.evaluations,
            "step_difference_map_voxels": result.step_difference, "timings": result.timings,
            "seconds_per_iteration": result.timings.get("optimize", seconds) / max(iterations, 1),
            "displacement": str(disp), "threads": torch.get_num_threads(),
            "scales": result.scales, "shot_steps": result.shot_steps, "warnings": list(result.warnings)}


def run_peer(method: str, files: dict[str, Path], work: Path, threads: int) -> dict:
    from rdmm_pipelines.interfaces.baselines import BASELINES

    kwargs = {"threads": threads}
    if method.startswith("sitk-demons"):
        kwargs["levels"] = 3
    out = BASELINES[method](str(files["fixed"]), str(files["moving"]), work, prefix=f"{method}_", **kwargs)
    return {"seconds": out.seconds, "iterations": None, "displacement": str(out.displacement),
            "tool_version": out.tool_version}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", required=True)
    ap.add_argument("--method", required=True, choices=OURS + PEERS)
    ap.add_argument("--mode", default="quick", choices=MODES)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="RK4 steps of our methods (default: the preset's 10)")
    ap.add_argument("--preset", default="default", help="--mode defaults: the preset our methods run (default: the defaults)")
    ap.add_argument("--data", default="runs/bench_data")
    ap.add_argument("--work", default="runs/bench_work")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from pairs import make_pair
    from real_pairs import REAL_CASES, make_real_pair

    from rdmm_pipelines.evaluation.saved import evaluate_displacement_field

    files = (make_real_pair if args.case in REAL_CASES else make_pair)(args.case, Path(args.data))
    work = Path(args.work) / args.case
    work.mkdir(parents=True, exist_ok=True)
    if args.method in OURS:
        rec = run_ours(args.case, args.method, files, work, args.mode, args.steps, args.preset)
    else:
        rec = run_peer(args.method, files, work, args.threads)
    ev = evaluate_displacement_field(rec["displacement"], files["fixed_labels"], files["moving_labels"],
                                     subject_id=args.case, method=args.method, seconds=rec["seconds"])
    before = evaluate_dice_before(files)
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rec.update(case=args.case, method=args.method, mode=args.mode, threads=args.threads, steps=args.steps,
               dice=ev.mean_dice, dice_before=before, folds=dict(ev.folds or {}),
               peak_rss_mb=max(self_kb, child_kb) / 1024.0, **similarity_after(files, rec["displacement"]))
    print(json.dumps(rec), flush=True)


def similarity_after(files: dict[str, Path], displacement: str) -> dict[str, float]:
    """Global NCC of the fixed image and the registered moving image (every method's displacement
    field applied the same way), before and after, over the fixed image's label mask (the head
    for the brain pairs)."""
    from rdmm_pipelines.spatial import load_image, load_labels
    from rdmm_pipelines.transforms import DenseTransform

    fixed, moving = load_image(files["fixed"]), load_image(files["moving"])
    mask = load_labels(files["fixed_labels"]).data[0] > 0
    warped = DenseTransform.from_displacement_field(displacement, moving.grid).apply(moving)

    def ncc(a, b) -> float:
        a, b = a[0][mask].double(), b[0][mask].double()
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))

    return {"ncc_before": ncc(moving.data, fixed.data) if moving.grid.shape == fixed.grid.shape else float("nan"),
            "ncc_after": ncc(warped.data, fixed.data)}


def evaluate_dice_before(files: dict[str, Path]) -> float:
    """Mean Dice of the moving labels on the fixed labels without registration (same grid)."""
    from rdmm_pipelines.evaluation import dice_per_label, mean_dice
    from rdmm_pipelines.spatial import load_labels

    return mean_dice(dice_per_label(load_labels(files["moving_labels"]).data[0],
                                    load_labels(files["fixed_labels"]).data[0]))


if __name__ == "__main__":
    sys.exit(main())
