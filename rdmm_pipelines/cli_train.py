"""``rdmm train``: train a registration network (its arguments and what it runs)."""

from __future__ import annotations

import argparse
import sys

from .config import MODELS


def _network_config(args: argparse.Namespace, shape: tuple[int, ...]):
    from .learning import NetworkConfig
    from .learning.setup import network_from_preset

    changes = {k: v for k, v in (("inverse_consistency_weight", args.ic_weight), ("affine_steps", args.affine_steps),
                                 ("refine_steps", args.refine_steps)) if v is not None}
    if args.config:
        from .cli_config import read_json

        data = read_json(args.config)
        if isinstance(data, dict) and "rdmm_pipelines_training" in data:
            data = data["network"]  # a training.json record: reuse its network
        cfg = NetworkConfig.from_dict(data)
        return cfg.replace(**changes) if changes else cfg
    return network_from_preset(args.model, args.shape or shape, args.preset, **changes)


def cmd_train(args: argparse.Namespace) -> int:
    from .learning import TrainingConfig, synthetic_network_pairs, train
    from .learning.setup import load_pairs

    if bool(args.manifest) == bool(args.synthetic):
        raise ValueError("give a MANIFEST of training pairs or --synthetic N (built-in 2D pairs), not both or neither")
    if args.val_manifest and args.synthetic:
        raise ValueError("--val-manifest goes with a MANIFEST")
    training = TrainingConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                              validation_fraction=args.val_fraction, seed=args.seed, threads=args.threads,
                              schedule=args.schedule, warmup_epochs=args.warmup_epochs,
                              pairs_per_epoch=args.pairs_per_epoch, augment_affine=args.augment_affine,
                              augment_intensity=args.augment_intensity)
    validation = None
    if args.synthetic:
        cfg = _network_config(args, (args.size, args.size))
        if cfg.ndim != 2:
            raise ValueError(f"--synthetic pairs are 2D but the network is {cfg.ndim}D")
        pairs = synthetic_network_pairs(args.synthetic, seed=args.seed, size=cfg.image_shape[0])
        if cfg.image_shape[0] != cfg.image_shape[1]:
            raise ValueError(f"--synthetic pairs are square; the network takes {cfg.image_shape}")
    else:
        from .workflows.manifest import read_manifest

        def rows(path):
            return [{"id": p.id, "fixed": p.fixed, "moving": p.moving, "fixed_labels": p.fixed_labels,
                     "moving_labels": p.moving_labels} for p in read_manifest(path)]

        train_rows = rows(args.manifest)
        import nibabel as nib

        first = tuple(int(n) for n in nib.load(str(train_rows[0]["fixed"])).shape[:3] if n > 1)
        cfg = _network_config(args, first)
        pairs = load_pairs(train_rows, cfg.image_shape, resample=args.resample)
        if args.val_manifest:
            validation = load_pairs(rows(args.val_manifest), cfg.image_shape, resample=args.resample)
    print(f"rdmm train: {cfg.model} network for {cfg.image_shape} images on {len(pairs)} pairs"
          f"{f' (+{len(validation)} for validation)' if validation else ''}, {training.epochs} epochs; "
          f"outputs in {args.out}/", file=sys.stderr)
    run = train(cfg, training, pairs, args.out, validation=validation, resume=args.resume, device=args.device,
                progress=not args.quiet, on_epoch=None if args.quiet else _print_epoch)
    last = run.history[-1] if run.history else {}
    print(f"best checkpoint (epoch {run.best_epoch}): {run.checkpoint}"
          + (f"; last validation Dice {last['val_dice']:.3f}" if "val_dice" in last else ""))
    return 0


def _print_epoch(row: dict) -> None:
    extra = "".join(f", {name} {row[key]:.4g}" for key, name in (("val_loss", "validation loss"),
                                                                 ("val_dice", "validation Dice")) if key in row)
    print(f"epoch {row['epoch']}: training loss {row['train_total']:.4g}{extra} ({row['seconds']:.0f} s)",
          file=sys.stderr)


def add_train_parser(sub) -> None:
    """The ``train`` sub-command on ``sub`` (the parser's sub-parsers)."""
    t = sub.add_parser("train", help="train a network that predicts the registration (vSVF, LDDMM or RDMM)")
    t.add_argument("manifest", nargs="?", default=None,
                   help="CSV/TSV manifest of training pairs (id, fixed, moving[, fixed_labels, moving_labels])")
    t.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="train on N built-in synthetic 2D pairs instead of a manifest")
    t.add_argument("--size", type=int, default=96, help="--synthetic: image size (default 96)")
    t.add_argument("--out", required=True, help="output directory (checkpoints, training.json, curves.png)")
    t.add_argument("--model", choices=MODELS, default="rdmm", help="shooting model the network drives")
    t.add_argument("--shape", type=int, nargs="+", default=None,
                   help="network input size (default: the first fixed image's; axes multiples of 8)")
    t.add_argument("--preset", default="synthetic-optimized",
                   help="registration preset giving the kernel, similarity and regulariser")
    t.add_argument("--config", default=None, help="network configuration JSON (or a training.json to reuse)")
    t.add_argument("--epochs", type=int, default=20, help="passes over the training pairs")
    t.add_argument("--batch-size", type=int, default=1, help="pairs per optimiser step")
    t.add_argument("--learning-rate", type=float, default=1e-3, help="Adam step size")
    t.add_argument("--schedule", choices=("step", "cosine"), default="step",
                   help="learning-rate schedule: step (halved every 60 epochs) or cosine (down to 1 %% by the last "
                        "epoch)")
    t.add_argument("--warmup-epochs", type=int, default=0, help="cosine schedule: epochs of linear warm-up first")
    t.add_argument("--pairs-per-epoch", type=int, default=0,
                   help="pairs drawn per epoch from the training pairs (0: every pair once)")
    t.add_argument("--augment-affine", type=float, default=0.0,
                   help="random affine warp of each training image (1: up to 5 degrees, 5 %% scale, 4 voxels; 0: off)")
    t.add_argument("--augment-intensity", type=float, default=0.0,
                   help="random gamma, scale and shift of each training image (1: gamma 0.74-1.35; 0: off)")
    t.add_argument("--val-manifest", default=None, help="validation pairs (default: --val-fraction of the training pairs)")
    t.add_argument("--val-fraction", type=float, default=0.2,
                   help="fraction of the pairs held out for validation (the best epoch is kept)")
    t.add_argument("--ic-weight", type=float, default=None, help="inverse-consistency weight (bidirectional training)")
    t.add_argument("--affine-steps", type=int, default=None, help="steps of an affine network (default 0: none)")
    t.add_argument("--refine-steps", type=int, default=None, help="iterations of the deformable network (default 1)")
    t.add_argument("--resample", action="store_true", help="resize images of another size to the network's")
    t.add_argument("--resume", action="store_true", help="continue the training in --out")
    t.add_argument("--seed", type=int, default=0, help="random seed (split, initial weights, batches)")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-epoch lines")
    t.set_defaults(func=cmd_train)
