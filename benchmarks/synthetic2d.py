"""The paper's 2D synthetic experiment at full size: vSVF, LDDMM, RDMM pre-defined and optimised.

Prints per-method mean Dice (before/after), folds (|sum of det J < 0|, full determinant) and
seconds per pair, and writes scores.csv, summary.json and summary.md into --out.

    python benchmarks/synthetic2d.py --pairs 40                 # the paper's protocol (long on a CPU)
    python benchmarks/synthetic2d.py --pairs 4 --iterations 60 60 60

Times are wall-clock on whatever machine runs it; methods run one after the other on the same
pairs in one process so they can be compared side by side.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from rdmm_pipelines.demo import (
    METHODS,
    format_summary,
    score_pair,
    summarize,
    write_scores_csv,
)
from rdmm_pipelines.provenance import (
    device_description,
    resolve_device,
    versions,
    write_json_atomic,
)
from rdmm_pipelines.synthetic import make_pairs_2d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--start", type=int, default=0, help="first pair index (to split a run over processes)")
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--iterations", type=int, nargs="+", default=None,
                    help="iterations per scale for every method (default: each preset's, as in the paper)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="runs/synthetic2d")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    dev = resolve_device(args.device)
    pairs = make_pairs_2d(args.start + args.pairs, seed=args.seed, size=args.size)[args.start:]
    scores = []
    t0 = time.perf_counter()
    for pair in pairs:
        for method in args.methods:
            s = score_pair(pair, method, args.iterations, str(dev))
            scores.append(s)
            print(f"{pair.name} {method:16s} Dice {s.dice_before:.3f} -> {s.dice_after:.3f}  folds {s.folds:.4f} "
                  f"({s.folding_voxels} voxels, {s.folded_cells} folded cells)  {s.seconds:.1f} s", flush=True)
    rows = summarize(scores)
    table = format_summary(rows)
    print("\n" + table)
    write_scores_csv(scores, out / "scores.csv")
    meta = {"machine": platform.processor() or platform.machine(), "device": device_description(dev),
            "threads": torch.get_num_threads(), "versions": versions(), "args": vars(args),
            "wall_seconds": time.perf_counter() - t0, "summary": rows}
    write_json_atomic(out / "summary.json", meta)
    (out / "summary.md").write_text(
        f"# Synthetic 2D ({args.size}x{args.size}, {args.pairs} pairs, seed {args.seed})\n\n"
        f"device: {meta['device']}, torch {torch.__version__}\n\n```\n{table}\n```\n")


if __name__ == "__main__":
    main()
