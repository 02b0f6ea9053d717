"""The demo cohort: built-in synthetic pairs through the cohort workflow (``rdmm demo``).

:func:`run_demo_cohort` makes ``pairs`` synthetic 2D pairs like the paper's (seeded, nothing is
downloaded), writes them and a manifest under ``out/inputs/``, and runs the cohort workflow with
vSVF, LDDMM, RDMM (pre-defined and optimised regularisers) and, where SimpleITK is installed, the
SimpleITK demons baseline. It leaves ``out/cohort_report.html`` (every pair's QC figure linked),
``out/cohort_table.csv`` and the per-pair outputs, and returns a printable summary.
"""

from __future__ import annotations

import math
import statistics
import typing as ty
from pathlib import Path

__all__ = ["DEMO_METHODS", "demo_methods", "run_demo_cohort", "summarize_table"]

#: our methods in the demo (each with its paper configuration, see ``rdmm_pipelines.demo``)
DEMO_METHODS = ("vsvf", "lddmm", "rdmm-predefined", "rdmm-optimized")
#: the baseline of the demo, when its tool is installed
DEMO_BASELINE = "sitk-demons"


def demo_methods(baseline: bool = True) -> list[str]:
    """Our four methods, and the demons baseline when ``baseline`` and SimpleITK is installed."""
    from rdmm_pipelines.interfaces.baselines import available

    methods = list(DEMO_METHODS)
    if baseline and available("sitk-demons-fss")[0]:
        methods.append(DEMO_BASELINE)
    return methods


def _stats(values: ty.Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else 0.0)


def summarize_table(rows: ty.Sequence[dict[str, str]], dice_before: float | None = None) -> str:
    """A per-method summary of a cohort table: mean Dice +- sd, folding voxels, seconds, failures."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = [f"{'method':16s} {'pairs':>5s} {'failed':>6s} {'mean Dice':>16s} {'folding vox':>11s} {'s/pair':>7s}"]
    if dice_before is not None:
        lines.insert(0, f"Dice before registration: {dice_before:.3f}")
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        ok = [r for r in mine if r["status"] != "failed"]
        dice, sd = _stats([float(r["mean_dice"]) for r in ok])
        folds, _ = _stats([float(r["folding_voxels"]) for r in ok])
        seconds, _ = _stats([float(r["seconds"]) for r in ok])
        lines.append(f"{method:16s} {len(mine):5d} {len(mine) - len(ok):6d} {dice:9.3f} +- {sd:.3f} "
                     f"{folds:11.1f} {seconds:7.1f}")
    return "\n".join(lines)


def run_demo_cohort(
    out: Path,
    *,
    pairs: int = 3,
    size: int = 96,
    methods: ty.Sequence[str] | None = None,
    iterations: ty.Sequence[int] | None = None,
    device: str = "auto",
    worker: str = "cf",
    seed: int = 0,
    progress: ty.TextIO | None | bool = True,
    **worker_kwargs: ty.Any,
):
    """Run the demo cohort and return ``(CohortResult, summary text)``.

    Args:
        out: output folder (inputs, manifest, table, report, per-pair outputs, cache).
        pairs: number of synthetic pairs.
        size: image size (the paper's is 200; the sigmas are scaled to keep their voxel widths).
        methods: default :func:`demo_methods`.
        iterations: L-BFGS iterations per scale (default 20, 20, 20).
        device, worker, progress, **worker_kwargs: as for :func:`~.cohort.run_cohort`.
    """
    from rdmm_pipelines.demo import method_config, write_pair
    from rdmm_pipelines.evaluation import dice_per_label, mean_dice
    from rdmm_pipelines.provenance import write_json_atomic
    from rdmm_pipelines.synthetic import make_pairs_2d

    from .cohort import run_cohort
    from .manifest import PairSpec, write_manifest

    out = Path(out).absolute()
    methods = list(methods) if methods is not None else demo_methods()
    iterations = tuple(iterations) if iterations is not None else (20, 20, 20)
    inputs = out / "inputs"
    specs, before = [], []
    for i, pair in enumerate(make_pairs_2d(pairs, seed=seed, size=size)):
        files = write_pair(pair, inputs / f"pair{i + 1:02d}")
        specs.append(PairSpec(id=f"pair{i + 1:02d}", fixed=files["target"], moving=files["source"],
                              fixed_labels=files["target_labels"], moving_labels=files["source_labels"],
                              moving_regions=files["source_regions"], row=i + 2))
        before.append(mean_dice(dice_per_label(pair.source_labels, pair.target_labels)))
    write_manifest(specs, inputs / "manifest.csv")
    options: dict[str, dict[str, ty.Any]] = {}
    for method in methods:
        if method in DEMO_METHODS:
            config = write_json_atomic(inputs / f"config_{method}.json",
                                       method_config(method, iterations, size=size).to_dict())
            options[method] = {"config_json": str(config)}
        elif method == DEMO_BASELINE:
            options[method] = {"levels": 3, "iterations": 50}
    result = run_cohort(specs, out, methods, worker=worker, method_options=options, device=device,
                        threads=1 if worker == "cf" else 0, progress=progress, **worker_kwargs)
    return result, summarize_table(result.rows, statistics.fmean(before))
