"""Learnt vs optimised registration on the paper's 2D synthetic data, side by side, on one machine.

Trains vSVF-net, LDDMM-net and RDMM-net (unsupervised, the paper's loss) on synthetic pairs, then
registers held-out pairs with each network and with the optimisation counterparts (vSVF, LDDMM,
RDMM with optimised pre-weights; the same kernels), and prints mean Dice, folds and seconds per
pair. Writes scores.csv, summary.json, summary.md and each network's training folder into --out.

    python benchmarks/learnt2d.py                          # defaults: 96x96, 200 training pairs
    python benchmarks/learnt2d.py --train-pairs 40 --epochs 2 --test-pairs 2   # a smoke run

Kernels are the paper's optimised-RDMM settings scaled to the image size (as ``rdmm demo``).
Held-out pairs use another seed than the training pairs.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from rdmm_pipelines.demo import (
    PairScore,
    _image,
    format_summary,
    method_config,
    score_pair,
    score_result,
    summarize,
    write_scores_csv,
)
from rdmm_pipelines.learning import (
    NetworkConfig,
    TrainingConfig,
    register_with_network,
    synthetic_network_pairs,
    train,
)
from rdmm_pipelines.provenance import (
    device_description,
    resolve_device,
    versions,
    write_json_atomic,
)
from rdmm_pipelines.synthetic import make_pairs_2d

#: network model -> its optimisation counterpart in rdmm_pipelines.demo.METHODS
COUNTERPARTS = {"vsvf": "vsvf", "lddmm": "lddmm", "rdmm": "rdmm-optimized"}


def score_network(pair, net, method: str, device: str, refine: bool = False) -> PairScore:
    """Register a synthetic pair with a network (and, with ``refine``, instance optimisation from
    its prediction) and score it."""
    fixed, moving = _image(pair.target, pair.spacing), _image(pair.source, pair.spacing)
    t0 = time.perf_counter()
    result = register_with_network(fixed, moving, net, device=device, refine=refine)
    seconds = time.perf_counter() - t0
    return score_result(result, _image(pair.source_labels[None], pair.spacing), pair.target_labels,
                        pair=pair.name, method=method, seconds=seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--train-pairs", type=int, default=200)
    ap.add_argument("--test-pairs", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--models", nargs="+", default=list(COUNTERPARTS), choices=list(COUNTERPARTS))
    ap.add_argument("--iterations", type=int, nargs="+", default=[60, 60, 60],
                    help="optimisation iterations per scale for the counterparts")
    ap.add_argument("--train-seed", type=int, default=7)
    ap.add_argument("--test-seed", type=int, default=2018)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="runs/learnt2d")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    dev = resolve_device(args.device)
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    training = synthetic_network_pairs(args.train_pairs, seed=args.train_seed, size=args.size)
    print(f"{len(training)} training pairs {args.size}x{args.size} made in {time.perf_counter() - t0:.1f} s", flush=True)
    test = make_pairs_2d(args.test_pairs, seed=args.test_seed, size=args.size)
    nets, train_seconds = {}, {}
    for model in args.models:
        rc = method_config(COUNTERPARTS[model], size=args.size)
        cfg = NetworkConfig(model=model, image_shape=(args.size, args.size), kernel=rc.kernel, regional=rc.regional,
                            integrator=rc.integrator.replace(steps=5), regularity_weight=rc.regularity_weight)
        t0 = time.perf_counter()
        run = train(cfg, TrainingConfig(epochs=args.epochs, learning_rate=args.learning_rate, validation_fraction=0.05),
                    training, out / f"train_{model}", device=str(dev), progress=False,
                    on_epoch=lambda row, m=model: print(
                        f"{m}-net epoch {row['epoch']}: train {row['train_total']:.4f} val {row.get('val_loss', float('nan')):.4f} "
                        f"val Dice {row.get('val_dice', float('nan')):.3f} ({row['seconds']:.0f} s)", flush=True))
        train_seconds[model] = time.perf_counter() - t0
        nets[model] = run.network
    scores = []
    for pair in test:
        for model in args.models:
            for s in (score_network(pair, nets[model], f"{model}-net", str(dev)),
                      score_network(pair, nets[model], f"{model}-net+io", str(dev), refine=True),
                      score_pair(pair, COUNTERPARTS[model], args.iterations, str(dev))):
                scores.append(s)
                print(f"{pair.name} {s.method:16s} Dice {s.dice_before:.3f} -> {s.dice_after:.3f}  folds {s.folds:.4f} "
                      f"({s.folding_voxels} voxels)  {s.seconds:.2f} s", flush=True)
    rows = summarize(scores)
    table = format_summary(rows)
    print("\n" + table)
    print("\ntraining: " + ", ".join(f"{m}-net {s / 60:.1f} min" for m, s in train_seconds.items()))
    write_scores_csv(scores, out / "scores.csv")
    meta = {"machine": platform.processor() or platform.machine(), "device": device_description(dev),
            "threads": torch.get_num_threads(), "versions": versions(), "args": vars(args),
            "training_seconds": train_seconds, "wall_seconds": time.perf_counter() - t_start, "summary": rows}
    write_json_atomic(out / "summary.json", meta)
    (out / "summary.md").write_text(
        f"# Learnt vs optimised, synthetic 2D ({args.size}x{args.size}; {args.train_pairs} training pairs, "
        f"{args.epochs} epochs; {args.test_pairs} held-out pairs, seed {args.test_seed})\n\n"
        f"device: {meta['device']}, threads {meta['threads']}, torch {torch.__version__}\n\n```\n{table}\n```\n\n"
        "training: " + ", ".join(f"{m}-net {s / 60:.1f} min" for m, s in train_seconds.items()) + "\n")


if __name__ == "__main__":
    main()
