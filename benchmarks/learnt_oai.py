"""Learnt registration trained on real anatomy: OAI knee cartilage slices (issue 16).

    python benchmarks/learnt_oai.py train --out runs/learnt_oai            # the real run's settings
    python benchmarks/learnt_oai.py train --epochs 1 --pairs-per-epoch 8 --out /tmp/oai_smoke
    python benchmarks/learnt_oai.py evaluate --weights runs/learnt_oai/best.pt --out runs/learnt_oai_eval

Data: the 2D OAI slices of ``real_pairs`` (75 subjects, one knee each, two visits; 160x384 at
0.3646 mm); each image is made from its labels as ``real_pairs`` makes it (femoral cartilage 0.6,
tibial 1.0), labels 1 and 2 give the validation Dice.

Subjects:

* held out: every subject of the real case set's OAI pairs (``heldout_cases()``: oai-x01..x12,
  oai-l01..l06; 30 subjects), never seen in training or validation, so those cases can score the
  network;
* validation: ``--validation-subjects`` of the other 45, drawn subject-wise with ``--split-seed``
  (:func:`rdmm_pipelines.learning.split.split_by_subject`);
* training: the rest.

Pairs: cross-subject pairs of the same knee side on the first visits, both directions, and each
subject's longitudinal pair (second visit to first and back). Training draws ``--pairs-per-epoch``
of them per epoch; validation uses a fixed ``--validation-pairs`` of the validation subjects' pairs
(half cross-subject, half longitudinal). The network is ``default_network_config``: the kernel,
similarity and regulariser of ``register()`` at the defaults on this grid, so a trained network's
prediction can start the default optimisation. ``--out`` receives the training's files (curves.png
shows the validation Dice per epoch) and split.json (the subjects and pairs of each set).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from real_pairs import OAI_CROSS, OAI_LONG, OAI_SPACING, SHARED, _oai_image, oai_pairs, oai_scans  # noqa: E402

from rdmm_pipelines.learning import NetworkPair, TrainingConfig, prepare_pair, train  # noqa: E402
from rdmm_pipelines.learning.setup import default_network_config  # noqa: E402
from rdmm_pipelines.learning.split import split_by_subject  # noqa: E402
from rdmm_pipelines.provenance import write_json_atomic  # noqa: E402
from rdmm_pipelines.spatial import Grid, Image  # noqa: E402

#: (subject, date, side): a scan key of ``real_pairs.oai_scans``
Scan = tuple[str, str, str]
#: (moving scan, fixed scan)
ScanPair = tuple[Scan, Scan]

IMAGE_SHAPE = (160, 384)


def heldout_cases() -> tuple[str, ...]:
    """The real case set's OAI cases (``real_pairs``): the held-out pairs a trained network is scored on."""
    return OAI_CROSS + OAI_LONG


def heldout_subjects(folder: Path) -> set[str]:
    """Every subject of :func:`heldout_cases` (both scans of each pair)."""
    cases = oai_pairs(folder)
    return {scan[0] for case in heldout_cases() for scan in cases[case]}


def candidate_pairs(scans: Sequence[Scan]) -> list[ScanPair]:
    """Cross-subject pairs of one knee side on first visits (both directions) and longitudinal
    pairs (second visit to first and back) of the subjects of ``scans``, in a fixed order."""
    visits: dict[tuple[str, str], list[str]] = {}
    for subject, date, side in scans:
        visits.setdefault((subject, side), []).append(date)
    firsts = {key: (key[0], min(dates), key[1]) for key, dates in sorted(visits.items())}
    out: list[ScanPair] = []
    for a in firsts.values():
        out += [(a, b) for b in firsts.values() if b[0] != a[0] and b[2] == a[2]]
    for (subject, side), dates in sorted(visits.items()):
        d = sorted(dates)
        if len(d) >= 2:
            out += [((subject, d[1], side), (subject, d[0], side)), ((subject, d[0], side), (subject, d[1], side))]
    return out


def is_longitudinal(pair: ScanPair) -> bool:
    return pair[0][0] == pair[1][0]


def pair_name(pair: ScanPair) -> str:
    (ms, md, side), (fs, fd, _) = pair
    return f"{ms}_{md}_to_{fs}_{fd}_{side.lower()}"


def _one_way_first(pairs: list[ScanPair], rng: random.Random) -> list[ScanPair]:
    """``pairs`` shuffled, then ordered so that a pair's reverse comes only after every pair whose
    reverse is not yet in."""
    rng.shuffle(pairs)
    first, later, seen = [], [], set()
    for p in pairs:
        (later if (p[1], p[0]) in seen else first).append(p)
        seen.add(p)
    return first + later


def pick_validation(pairs: Sequence[ScanPair], n: int, seed: int) -> list[ScanPair]:
    """A fixed, seeded choice of ``n`` pairs: half cross-subject, the rest longitudinal (either
    kind filling in where the other runs short), a pair's reverse only when needed to fill."""
    rng = random.Random(seed)
    cross = _one_way_first([p for p in pairs if not is_longitudinal(p)], rng)
    longi = _one_way_first([p for p in pairs if is_longitudinal(p)], rng)
    n_cross = min(len(cross), max(n - len(longi), n // 2))
    return cross[:n_cross] + longi[:n - n_cross]


def make_split(folder: Path, validation_subjects: int, validation_pairs: int, seed: int) -> dict:
    """The subjects and scan pairs of each set (see the module docstring)."""
    scans = sorted(oai_scans(folder))
    if not scans:
        raise SystemExit(f"no OAI scans under {folder}")
    heldout = heldout_subjects(folder)
    pool = candidate_pairs(scans)
    n_subjects = len({s[0] for s in scans} - heldout)
    split = split_by_subject(pool, lambda p: (p[0][0], p[1][0]), validation_subjects / n_subjects, seed,
                             exclude=heldout)
    return {"train": split.train, "validation": pick_validation(split.validation, validation_pairs, seed),
            "train_subjects": list(split.train_subjects), "validation_subjects": list(split.validation_subjects),
            "heldout_subjects": sorted(heldout), "heldout_cases": list(heldout_cases()),
            "dropped_pairs": split.dropped, "excluded_pairs": split.excluded}


def prepared_scans(folder: Path, keys: set[Scan]) -> dict[Scan, NetworkPair]:
    """Each scan as a :class:`NetworkPair` with itself (normalised image and labels on the network's
    grid, via ``prepare_pair``); pairs are then assembled from these, sharing their tensors."""
    files = oai_scans(folder)
    grid = Grid.from_shape(IMAGE_SHAPE, (OAI_SPACING, OAI_SPACING))
    out = {}
    for key in sorted(keys):
        image, labels = _oai_image(files[key])
        if tuple(image.shape) != IMAGE_SHAPE:
            raise SystemExit(f"{key}: slice of size {image.shape}, expected {IMAGE_SHAPE}")
        img = Image(torch.from_numpy(image)[None], grid)
        lab = Image(torch.from_numpy(labels.astype("int64"))[None], grid)
        out[key] = prepare_pair(img, img, IMAGE_SHAPE, fixed_labels=lab, moving_labels=lab, name="_".join(key))
    return out


def network_pairs(pairs: Sequence[ScanPair], scans: dict[Scan, NetworkPair]) -> list[NetworkPair]:
    """The pairs on the network's grid (every scan shares one grid, so a pair is the fixed scan's
    prepared pair with the moving scan's image and labels as its source)."""
    return [dataclasses.replace(scans[fixed], source=scans[moving].target, source_labels=scans[moving].target_labels,
                                name=pair_name((moving, fixed))) for moving, fixed in pairs]


def _split_record(split: dict, args: argparse.Namespace) -> dict:
    counts = {k: {"pairs": len(split[k]), "cross": sum(not is_longitudinal(p) for p in split[k]),
                  "longitudinal": sum(is_longitudinal(p) for p in split[k])} for k in ("train", "validation")}
    return {"data": str(args.data), "split_seed": args.split_seed, "counts": counts,
            **{k: split[k] for k in ("train_subjects", "validation_subjects", "heldout_subjects", "heldout_cases",
                                     "dropped_pairs", "excluded_pairs")},
            "validation_pairs": [pair_name(p) for p in split["validation"]]}


def train_command(args: argparse.Namespace) -> None:
    out = Path(args.out)
    t0 = time.perf_counter()
    split = make_split(Path(args.data), args.validation_subjects, args.validation_pairs, args.split_seed)
    record = _split_record(split, args)
    path = out / "split.json"
    if args.resume and path.is_file() and json.loads(path.read_text()) != record:
        raise SystemExit(f"{path}: the split differs from the one this training began with (other --data, "
                         "--split-seed, --validation-subjects or --validation-pairs)")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    c = record["counts"]
    print(f"subjects: {len(split['train_subjects'])} training, {len(split['validation_subjects'])} validation "
          f"({', '.join(split['validation_subjects'])}), {len(split['heldout_subjects'])} held out "
          f"({len(split['heldout_cases'])} cases); pairs: {c['train']['pairs']} training ({c['train']['cross']} cross, "
          f"{c['train']['longitudinal']} longitudinal), {c['validation']['pairs']} validation "
          f"({c['validation']['cross']} cross, {c['validation']['longitudinal']} longitudinal); "
          f"{split['dropped_pairs']} cross-set pairs dropped", flush=True)
    keys = {s for p in split["train"] + split["validation"] for s in p}
    scans = prepared_scans(Path(args.data), keys)
    training, validation = network_pairs(split["train"], scans), network_pairs(split["validation"], scans)
    print(f"{len(scans)} scans prepared in {time.perf_counter() - t0:.1f} s", flush=True)
    net_cfg = default_network_config(args.model, Grid.from_shape(IMAGE_SHAPE, (OAI_SPACING, OAI_SPACING)),
                                     inverse_consistency_weight=args.ic_weight, affine_steps=args.affine_steps,
                                     momentum_clamp=args.momentum_clamp)
    warmup = min(args.warmup_epochs, args.epochs - 1) if args.schedule == "cosine" else 0  # none in a 1-epoch run
    train_cfg = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                               schedule=args.schedule, warmup_epochs=warmup,
                               pairs_per_epoch=args.pairs_per_epoch, augment_affine=args.augment_affine,
                               augment_intensity=args.augment_intensity, seed=args.seed, threads=args.threads)
    run = train(net_cfg, train_cfg, training, out, validation=validation, resume=args.resume, device=args.device,
                progress=args.progress,
                on_epoch=lambda row: print(
                    f"epoch {row['epoch']}: lr {row['lr']:.3g} train {row['train_total']:.4f} "
                    f"val {row.get('val_loss', float('nan')):.4f} val Dice {row.get('val_dice', float('nan')):.3f} "
                    f"({row['seconds']:.0f} s)", flush=True))
    print(f"best epoch {run.best_epoch}: {run.checkpoint}")


#: evaluate's methods: the optimisation at the defaults, the network alone, the network refined
EVALUATE_METHODS = ("optimisation", "net", "net+io")


def _group_rows(scores: Sequence, reference: str) -> list[dict]:
    """Per group (cross-subject, longitudinal, all) and method: mean +- sd Dice, min, folds,
    seconds per pair and the time relative to ``reference``'s."""
    import statistics

    groups = {"cross-subject": [s for s in scores if s.pair.startswith("oai-x")],
              "longitudinal": [s for s in scores if s.pair.startswith("oai-l")], "all": list(scores)}
    rows = []
    for group, ss in groups.items():
        ref = [s.seconds for s in ss if s.method == reference]
        for method in dict.fromkeys(s.method for s in ss):
            m = [s for s in ss if s.method == method]
            dice = [s.dice_after for s in m]
            seconds = statistics.fmean(s.seconds for s in m)
            rows.append({"group": group, "method": method, "pairs": len(m),
                         "dice_before": statistics.fmean(s.dice_before for s in m),
                         "dice": statistics.fmean(dice), "dice_sd": statistics.stdev(dice) if len(dice) > 1 else 0.0,
                         "dice_min": min(dice), "folding_voxels": sum(s.folding_voxels for s in m),
                         "diagonal_folding_voxels": sum(s.folding_voxels_diagonal for s in m),
                         "folded_cells": sum(s.folded_cells for s in m), "seconds": seconds,
                         "time_vs_optimisation": seconds / statistics.fmean(ref) if ref else float("nan"),
                         "iterations": statistics.fmean(s.iterations for s in m)})
    return rows


def _markdown(rows: Sequence[dict]) -> str:
    lines = ["| pairs | method | Dice (mean +- sd) | min | Dice before | folding voxels / diag. / cells | s/pair | x optimisation |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['group']} ({r['pairs']}) | {r['method']} | {r['dice']:.3f} +- {r['dice_sd']:.3f} | "
                     f"{r['dice_min']:.3f} | {r['dice_before']:.3f} | {r['folding_voxels']} / "
                     f"{r['diagonal_folding_voxels']} / {r['folded_cells']} | {r['seconds']:.3g} | "
                     f"{r['time_vs_optimisation']:.3g} |")
    return "\n".join(lines) + "\n"


def evaluate_command(args: argparse.Namespace) -> None:
    """Score the network, the network + refinement and the default optimisation on the held-out
    cases, side by side in this process (same threads for all; the network warmed up first)."""
    import platform

    from real_pairs import make_real_pair

    from rdmm_pipelines import load_image, load_labels, register
    from rdmm_pipelines.demo import score_result, write_scores_csv
    from rdmm_pipelines.learning import RefineConfig, load_checkpoint, register_with_network
    from rdmm_pipelines.provenance import device_description, resolve_device, versions

    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    ckpt = load_checkpoint(args.weights, device=dev)
    model = ckpt.network.cfg.model
    refine = RefineConfig(scales=args.refine_scales, iterations=args.refine_iterations)
    names = {"optimisation": model, "net": f"{model}-net", "net+io": f"{model}-net+io"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases = args.cases or list(heldout_cases())
    unknown = sorted(set(cases) - set(heldout_cases()))
    if unknown:
        raise SystemExit(f"not held-out cases: {', '.join(unknown)} (choose from {', '.join(heldout_cases())})")

    def run(method: str, fixed, moving):
        if method == "optimisation":
            return register(fixed, moving, model, device=dev, threads=args.threads)
        return register_with_network(fixed, moving, ckpt, device=dev, refine=refine if method == "net+io" else False,
                                     threads=args.threads)

    scores = []
    for k, case in enumerate(cases):
        files = make_real_pair(case, args.data_dir)
        fixed, moving = load_image(files["fixed"]), load_image(files["moving"])
        moving_labels, fixed_labels = load_labels(files["moving_labels"]), load_labels(files["fixed_labels"])
        if k == 0:  # one untimed prediction: the first call's one-off costs (allocations, FFT plans)
            register_with_network(fixed, moving, ckpt, device=dev)
        for method in args.methods:
            t0 = time.perf_counter()
            result = run(method, fixed, moving)
            seconds = time.perf_counter() - t0
            score = score_result(result, moving_labels, fixed_labels.data[0], pair=case, method=names[method],
                                 seconds=seconds)
            scores.append(score)
            print(f"{case} {score.method:14s} Dice {score.dice_before:.3f} -> {score.dice_after:.3f}  folding voxels "
                  f"{score.folding_voxels} (diag. {score.folding_voxels_diagonal}, cells {score.folded_cells})  "
                  f"{score.iterations} it  {seconds:.2f} s", flush=True)
    rows = _group_rows(scores, names["optimisation"])
    table = _markdown(rows)
    print("\n" + table)
    write_scores_csv(scores, out / "scores.csv")
    meta = {"machine": platform.processor() or platform.machine(), "device": device_description(dev),
            "threads": args.threads, "versions": versions(), "weights": str(Path(args.weights).resolve()),
            "epoch": ckpt.epoch, "refine": refine.to_dict(), "cases": cases, "rows": rows}
    write_json_atomic(out / "summary.json", meta)
    (out / "summary.md").write_text(
        f"# Learnt vs optimised on held-out OAI pairs\n\nweights {args.weights} (epoch {ckpt.epoch}); "
        f"refinement {refine.to_dict()}; {meta['device']}, {args.threads} thread(s), torch {torch.__version__}\n\n"
        + table)


#: ablate's variants: train options changed from the base (a short LDDMM-net training)
ABLATIONS = {
    "base": [],
    "augmentation": ["--augment-affine", "1", "--augment-intensity", "1"],
    "cosine": ["--schedule", "cosine", "--warmup-epochs", "1"],
    "inverse-consistency": ["--ic-weight", "2000"],
    "learning-rate 1e-3": ["--learning-rate", "1e-3"],
    "affine network": ["--affine-steps", "1"],
}
ABLATION_BASE = ["--model", "lddmm", "--epochs", "8", "--pairs-per-epoch", "40", "--schedule", "step",
                 "--warmup-epochs", "0", "--momentum-clamp", "2", "--learning-rate", "3e-4"]


def ablate_command(args: argparse.Namespace) -> None:
    """Train each variant of :data:`ABLATIONS` for the same short budget, one after the other,
    and print the validation Dice per epoch and the best of each (same split, seed and pairs)."""
    parser = _parser()
    rows = []
    for name in args.variants:
        out = Path(args.out) / name.replace(" ", "_")
        argv = ["train", "--out", str(out), "--threads", str(args.threads), *ABLATION_BASE, *ABLATIONS[name]]
        t0 = time.perf_counter()
        if not (out / "training.json").is_file():
            train_command(parser.parse_args(argv))
        history = json.loads((out / "training.json").read_text())["history"]
        dice = [h["val_dice"] for h in history]
        rows.append({"variant": name, "options": " ".join(ABLATIONS[name]) or "-", "val_dice": dice,
                     "best": max(dice), "last": dice[-1], "seconds": sum(h["seconds"] for h in history)})
        print(f"{name}: best {max(dice):.3f}, last {dice[-1]:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    lines = ["| variant | options | validation Dice per epoch | best | s (training) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['options']} | {' '.join(f'{d:.3f}' for d in r['val_dice'])} | "
                     f"{r['best']:.3f} | {r['seconds']:.0f} |")
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    write_json_atomic(Path(args.out) / "ablation.json", {"base": ABLATION_BASE, "rows": rows})
    (Path(args.out) / "ablation.md").write_text(f"base: {' '.join(ABLATION_BASE)}\n\n" + table)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a network on the training subjects' pairs")
    t.add_argument("--out", default="runs/learnt_oai", help="training folder (checkpoints, curves, split.json)")
    t.add_argument("--data", type=Path, default=SHARED / "oai_cartilage2d", help="the OAI 2D slices")
    t.add_argument("--model", choices=("rdmm", "lddmm", "vsvf"), default="rdmm")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--pairs-per-epoch", type=int, default=160, help="pairs drawn per epoch (0: all)")
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--learning-rate", type=float, default=3e-4)
    t.add_argument("--schedule", choices=("cosine", "step"), default="cosine")
    t.add_argument("--warmup-epochs", type=int, default=1, help="linear warm-up epochs of the cosine schedule (at most --epochs - 1)")
    t.add_argument("--augment-affine", type=float, default=0.0, help="affine augmentation strength (0: off)")
    t.add_argument("--augment-intensity", type=float, default=0.0, help="intensity augmentation strength (0: off)")
    t.add_argument("--affine-steps", type=int, default=0,
                   help="steps of the network's affine stage (0: none; the pairs are only centre-of-mass aligned)")
    t.add_argument("--momentum-clamp", type=float, default=0.3,
                   help="bound c of the predicted momentum, c tanh(u / c) (domain units)")
    t.add_argument("--ic-weight", type=float, default=0.0, help="inverse-consistency weight (0: off)")
    t.add_argument("--validation-subjects", type=int, default=6)
    t.add_argument("--validation-pairs", type=int, default=12)
    t.add_argument("--split-seed", type=int, default=16)
    t.add_argument("--seed", type=int, default=0, help="weights, pair order and augmentation")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    t.add_argument("--device", default="auto")
    t.add_argument("--resume", action="store_true", help="continue the training in --out")
    t.add_argument("--progress", action="store_true", help="show a progress bar per epoch")
    t.set_defaults(func=train_command)
    e = sub.add_parser("evaluate", help="the network, the network + refinement and the default optimisation on "
                                        "the held-out cases, side by side")
    e.add_argument("--weights", required=True, help="a checkpoint (best.pt of a training)")
    e.add_argument("--out", default="runs/learnt_oai_eval", help="scores.csv, summary.json, summary.md")
    e.add_argument("--data-dir", type=Path, default=Path("runs/real_data_ras"),
                   help="where the real case set's NIfTI files are (written there once)")
    e.add_argument("--cases", nargs="+", default=None, help="a subset of the held-out cases (default: all 18)")
    e.add_argument("--methods", nargs="+", choices=EVALUATE_METHODS, default=list(EVALUATE_METHODS))
    e.add_argument("--refine-scales", type=int, default=1)
    e.add_argument("--refine-iterations", type=int, default=30)
    e.add_argument("--threads", type=int, default=1, help="torch CPU threads for every method")
    e.add_argument("--device", default="auto")
    e.set_defaults(func=evaluate_command)
    a = sub.add_parser("ablate", help="short trainings that change one training option each; validation Dice")
    a.add_argument("--out", default="runs/learnt_oai_ablation")
    a.add_argument("--variants", nargs="+", choices=list(ABLATIONS), default=list(ABLATIONS))
    a.add_argument("--threads", type=int, default=1)
    a.set_defaults(func=ablate_command)
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
