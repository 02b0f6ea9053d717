"""Command line: ``rdmm register``, ``train`` (in :mod:`.cli_train`), ``apply``, ``evaluate``, ``demo``, ``cohort``,
``manifest`` and ``presets``.

Exit codes: 0 success, 2 bad input or usage (a one-line message on stderr), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .cli_config import add_tuning_options, registration_config
from .cli_inputs import check_input_files, read_config
from .cli_outputs import check_free_space, check_output_dir, output_lock, output_names, prepare_output_dir
from .cli_progress import progress_bar
from .cli_records import field_path, method_of_record, read_record
from .cli_network import NETWORK_MODELS, network_weights, register_with_network_args
from .cli_network import check_network_options as _check_network_options  # the name tests and callers use
from .cli_train import add_train_parser
from .config import MODELS, RegistrationConfig

log = logging.getLogger("rdmm")

def _load_config(args: argparse.Namespace) -> RegistrationConfig | None:
    if not args.config:
        return None
    return read_config(args.config)  # a registration.json record: its configuration is reused


def cmd_register(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.threads is not None and args.threads < 0:
        raise ValueError(f"--threads must be a non-negative integer (0: all CPUs); got {args.threads}")
    for given in (args.fixed, args.moving, args.region_labels, args.fixed_labels, args.moving_labels,
                  args.fixed_mask, args.moving_mask, args.affine, args.config):
        if given and Path(given).resolve().parent == out.resolve() and Path(given).name in output_names():
            raise ValueError(f"{given}: an input would be overwritten by an output in {out}; choose another --out")
    check_input_files(args)  # every input file read, an error naming its flag, before the heavy work
    _check_network_options(args)
    # the configuration with --iterations/--steps/--map-resolution: errors before anything is written
    configured = None if args.model in NETWORK_MODELS else registration_config(args, _load_config(args))
    check_output_dir(out)
    with output_lock(out):  # one run at a time writes into a folder
        prepare_output_dir(out, args.overwrite)
        check_free_space(out, args.fixed)
        return _run_register(args, configured)


def _run_register(args: argparse.Namespace, configured: tuple) -> int:
    """The registration of ``rdmm register`` once its inputs and --out are checked."""
    from .registration import register, resolve_config

    if args.model in NETWORK_MODELS:
        return _finish_register(args, register_with_network_args(args))
    config, preset = configured
    model = args.model or resolve_config(None, config, preset, args.regularizer).model  # what the bar names
    progress, close = progress_bar(not args.quiet, model)  # drawn from the first iteration
    try:
        result = register(args.fixed, args.moving, args.model, config=config, preset=preset,
                          regularizer=args.regularizer, region_labels=args.region_labels,
                          affine=args.affine, device=args.device, progress=progress, threads=args.threads,
                          deterministic=args.deterministic, fixed_mask=args.fixed_mask, moving_mask=args.moving_mask)
    finally:
        close()
    return _finish_register(args, result)


def _finish_register(args: argparse.Namespace, result) -> int:
    """Evaluate (with labels), save and report a registration result."""
    out = Path(args.out)
    fixed_labels = moving_labels = None
    if args.fixed_labels:  # both given and readable (checked before the registration)
        from .spatial import load_labels

        fixed_labels, moving_labels = load_labels(args.fixed_labels), load_labels(args.moving_labels)
    extra = None
    if fixed_labels is not None:
        from .evaluation import evaluation_record, folded_cells, identity_labels

        cells = folded_cells(result.moving_voxels().double(), result.fixed.grid, result.moving.grid)
        method = (method_of_record({"config": result.config.to_dict(), "inputs": result.inputs})
                  if args.model in NETWORK_MODELS else method_of_record({"config": result.config.to_dict()}))
        record = evaluation_record(out.name, method, warped_labels=result.apply(moving_labels),
                                   fixed_labels=fixed_labels, moving_labels=moving_labels,
                                   before_labels=identity_labels(moving_labels, result.fixed.grid),
                                   det=result.jacobian_determinant(), cells=cells, seconds=result.timings["total"])
        extra = {"evaluation": record.to_dict()}
        print(f"mean Dice {record.mean_dice:.4f} over {len(record.dice)} labels "
              f"(before registration {record.mean_dice_before:.4f})")
    if args.overwrite:  # the whole previous result goes (record first): nothing stale is left
        from .result import clear_result

        clear_result(out)
    paths = {}
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_qc:  # before the record: registration.json is the last file written
        from .qc import qc_report

        paths.update(qc_report(result, out, fixed_labels, moving_labels))
    paths.update(result.save(out, extra=extra))
    folds = result.fold_statistics()
    if args.model not in NETWORK_MODELS:
        how = f"{len(result.history)} iterations"
    elif result.inputs.get("refine") is not None:
        how = f"a network + {len(result.history)} refinement iterations"
    else:
        how = "a network"
    print(f"{result.config.model}: {how} in {result.timings['total']:.2f} s on "
          f"{result.device}; min det J {folds['det_min']:.3g}, folding voxels {folds['folding_voxels']}")
    print(f"outputs in {out}: " + ", ".join(p.name for p in paths.values()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("NO_ET", "1")  # pydra's online version check fails offline
    from .workflows.demo import demo_methods, run_demo_cohort

    methods = args.methods or demo_methods(baseline=not args.no_baseline)
    out = Path(args.out)
    print(f"rdmm demo: {args.pairs} synthetic {args.size}x{args.size} pairs x {', '.join(methods)} "
          f"({args.worker} worker); outputs in {out}/", file=sys.stderr)
    options = {"n_procs": args.jobs} if args.worker == "cf" and args.jobs else {}
    result, summary = run_demo_cohort(out, pairs=args.pairs, size=args.size, methods=methods,
                                      iterations=args.iterations, device=args.device, worker=args.worker,
                                      progress=not args.quiet, **options)
    print(summary)
    for pair_id, method, message in result.failed:
        print(f"  failed: {pair_id} {method}: {message.splitlines()[0] if message else ''}")
    print(f"\ntable: {result.table}\nreport (open it in a browser): {result.report}")
    return 0 if not result.failed else 1


def cmd_apply(args: argparse.Namespace) -> int:
    from .spatial import load_image, save_image
    from .transforms import DenseTransform

    loaded = check_input_files(args)  # a label map is read there; an image's header only
    image = loaded["image"] if args.labels else load_image(args.image)
    out = Path(args.out)
    if out.resolve() == Path(args.image).resolve():
        raise ValueError(f"{out}: the output would overwrite the input image")
    field = field_path(args.result)
    if args.inverse:
        if not args.reference:
            raise ValueError("--inverse needs --reference: an image on the moving (source) grid")
        reference = load_image(args.reference)
        transform = DenseTransform.from_displacement_field(field, reference.grid).inverse()
    else:
        transform = DenseTransform.from_displacement_field(field, image.grid)
    warped = transform.apply(image, "nearest" if args.labels else args.interpolation)
    save_image(warped, out)
    direction = "fixed -> moving grid (inverse)" if args.inverse else "moving -> fixed grid"
    print(f"{args.image} warped {direction}: {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``rdmm evaluate``: folds and det J of a saved result, Dice with label maps, TRE with
    landmarks; the method and seconds come from the result's record (registration.json, or a
    baseline's log)."""
    from .evaluation import evaluate_displacement_field, write_csv

    loaded = check_input_files(args)  # labels and points: both or neither, readable, flags named
    field = field_path(args.result)
    found = read_record(field)
    if found.moving_grid is None and not args.moving_labels:
        why = "; ".join(found.notes) or "it does not record the moving image's grid"
        raise ValueError(f"{args.result}: the grid the transform maps into is unknown ({why}); "
                         "give --fixed-labels and --moving-labels (the moving label map gives it)")
    method = args.method or found.method
    if method is None:
        method = "unknown"
        why = "; ".join(found.notes) or "no method recorded"
        print(f"rdmm evaluate: the record names the method 'unknown' ({why}); --method names it",
              file=sys.stderr)
    record = evaluate_displacement_field(
        field, loaded.get("--fixed-labels"), loaded.get("--moving-labels"), moving_image=found.moving_grid,
        subject_id=args.pair_id or Path(args.result).name, method=method, seconds=found.seconds,
        fixed_landmarks=args.fixed_points, moving_landmarks=args.moving_points,
        label_warp="onehot" if args.onehot else "nearest",
        names={"fixed_labels": f"--fixed-labels {args.fixed_labels}",
               "moving_labels": f"--moving-labels {args.moving_labels}"})
    out = Path(args.out)
    record.to_json(out)
    if args.csv:
        write_csv([record], args.csv)
    seconds = f"{record.seconds:.2f} s" if record.seconds is not None else "time not recorded"
    print(f"{record.method} ({seconds}): {record.summary()}; written to {out}")
    if record.message:
        print(f"rdmm evaluate: {record.message}", file=sys.stderr)
    return 0


def _worker_options(args: argparse.Namespace) -> dict:
    """The pydra worker's options from ``rdmm cohort``'s arguments (errors before anything runs)."""
    if args.worker == "slurm":
        gpu_args = args.slurm_gpu_args
        if gpu_args is None:
            gpu_args = f"--gres=gpu:{args.gpus}" if args.gpus else ""
        elif args.gpus:
            raise ValueError("give either --gpus or --slurm-gpu-args, not both")
        return {"sbatch_args": args.slurm_args or "", "gpu_args": gpu_args, "poll_delay": args.poll}
    if args.slurm_args or args.slurm_gpu_args or args.gpus:
        raise ValueError("--slurm-args, --slurm-gpu-args and --gpus apply to --worker slurm; "
                         "with cf, registrations use --device")
    return {"n_procs": args.jobs} if args.worker == "cf" and args.jobs else {}


def cmd_cohort(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("NO_ET", "1")  # pydra's online version check fails offline
    from .interfaces import TaskError
    from .workflows.cohort import run_cohort
    from .workflows.manifest import read_manifest
    from .workflows.pair import check_method

    for method in args.methods:
        check_method(method)
    options = _worker_options(args)
    config_json = None
    if args.config:
        _load_config(args)  # validate before anything runs
        config_json = str(Path(args.config).resolve())
    method_options = network_weights(args.weights or [], args.methods)
    pairs = read_manifest(args.manifest)  # every problem of the manifest, listed at once
    print(f"rdmm cohort: {len(pairs)} pairs x {len(args.methods)} methods on the {args.worker} worker",
          file=sys.stderr)
    try:
        result = run_cohort(pairs, Path(args.out), list(args.methods), worker=args.worker,
                            cache_root=args.cache, config_json=config_json, preset=args.preset,
                            device=args.device, threads=args.threads, report=not args.no_qc,
                            rerun=args.rerun, method_options=method_options or None, **options)
    except TaskError as err:
        print(f"rdmm cohort: a task crashed; finished pairs are cached, run again to resume.\n{err}",
              file=sys.stderr)
        return 1
    except RuntimeError as err:  # another run holds the cache; SLURM unreachable
        print(f"rdmm cohort: error: {err}", file=sys.stderr)
        return 2
    for pair_id, method, message in result.failed:
        print(f"  failed: {pair_id} {method}: {message.splitlines()[0] if message else ''}")
    print(f"table: {result.table}\nreport: {result.report}")
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    from .workflows import manifest as mf
    from .workflows import pairing

    if args.kind == "atlas":
        if not args.atlas:
            raise ValueError("--atlas is needed for 'atlas' pairs")
        pairs = pairing.pairs_to_atlas(args.folder, args.atlas, args.pattern, args.labels_pattern)
    elif args.kind == "all":
        pairs = pairing.all_pairs(args.folder, args.pattern, ordered=not args.unordered,
                             labels_pattern=args.labels_pattern)
    else:
        pairs = pairing.longitudinal_pairs(args.folder, suffix=args.suffix)
    path = mf.write_manifest(pairs, args.out, relative=args.relative)
    print(f"{path}: {len(pairs)} pairs")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    import shutil
    import textwrap

    from .presets import PRESETS, describe, get_preset, markdown_table

    if args.markdown:
        print(markdown_table(args.model), end="")
        return 0
    width = min(100, shutil.get_terminal_size((100, 24)).columns)
    for name in PRESETS:
        print(textwrap.fill(describe(name), width=width, initial_indent=f"{name:22s} ",
                            subsequent_indent=" " * 23))
        if args.show:
            print(textwrap.indent(json.dumps(get_preset(name, args.model).to_dict(), indent=2), " " * 23))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="rdmm", description="RDMM / LDDMM / vSVF image registration")
    p.add_argument("--version", action="version", version=f"rdmm_pipelines {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("register", help="register MOVING (source) to FIXED (target)")
    r.add_argument("fixed", help="fixed (target) image, NIfTI")
    r.add_argument("moving", help="moving (source) image, NIfTI")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--model", choices=(*MODELS, *NETWORK_MODELS), default=None,
                   help="shooting model (default: the preset's, rdmm); vsvf-net, lddmm-net, rdmm-net: a trained "
                        "network (with --weights)")
    r.add_argument("--weights", default=None, help="checkpoint of a trained network (from `rdmm train`)")
    r.add_argument("--resample", action="store_true",
                   help="with a network: resize images of another size to the network's input size")
    r.add_argument("--refine", action="store_true",
                   help="with a network: instance optimisation from its prediction, i.e. the default L-BFGS "
                        "(with its convergence test) on the network's own objective, started from the predicted "
                        "momentum on the finest scale (see --refine-scales, --refine-iterations); slower than the "
                        "network alone")
    r.add_argument("--refine-scales", type=int, default=None, metavar="K",
                   help="with a network: refine on the K finest scales of the default schedule (default 1: the "
                        "full resolution only); implies --refine")
    r.add_argument("--refine-iterations", type=int, default=None, metavar="N",
                   help="with a network: at most N L-BFGS iterations per refined scale (default 30; the "
                        "convergence test may stop earlier); implies --refine")
    r.add_argument("--regularizer", choices=("predefined", "optimized"), default=None,
                   help="RDMM pre-weights: from --region-labels, or optimised (default: the preset's)")
    r.add_argument("--region-labels", default=None, help="region label map of the moving image (predefined)")
    r.add_argument("--preset", default=None, help="configuration preset (see `rdmm presets`)")
    r.add_argument("--config", default=None, help="configuration JSON (or a registration.json to reuse)")
    add_tuning_options(r)
    r.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    r.add_argument("--threads", type=int, default=None,
                   help="CPU threads of the optimisation (and of a network's --refine) (default: one per million "
                        "fixed-image voxels, at most the CPUs available; a 2D slice or a 2 mm brain runs on one; "
                        "0: all available)")
    r.add_argument("--deterministic", action="store_true",
                   help="one thread and deterministic algorithms: a rerun gives a bit-identical result")
    r.add_argument("--seed", type=int, default=None, help="random seed recorded with the result")
    r.add_argument("--affine", default=None,
                   help="use this affine (ITK .txt or ANTs .mat, fixed-to-moving) instead of estimating one")
    r.add_argument("--no-affine", action="store_true", help="skip the affine pre-registration")
    r.add_argument("--fixed-labels", default=None, help="fixed label map: Dice in the record and the QC page")
    r.add_argument("--moving-labels", default=None, help="moving label map (with --fixed-labels)")
    r.add_argument("--fixed-mask", default=None,
                   help="mask of the fixed image, NIfTI (nonzero = inside; any grid of its world space): the "
                        "similarity, also in the affine stage, is measured only inside it")
    r.add_argument("--moving-mask", default=None,
                   help="mask of the moving image, NIfTI (nonzero = inside; any grid of its world space): "
                        "voxels mapped outside it are left out of the similarity")
    r.add_argument("--no-qc", action="store_true", help="do not write the QC figure and HTML page")
    r.add_argument("--overwrite", action="store_true",
                   help="replace a result already in --out (all of its files; without it such an --out is refused)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_register)

    add_train_parser(sub)

    d = sub.add_parser("demo", help="the cohort workflow on built-in synthetic pairs: every model and a baseline, "
                                    "a results table and an HTML report")
    d.add_argument("--out", default="rdmm_demo", help="output directory (default: ./rdmm_demo)")
    d.add_argument("--size", type=int, default=96, help="2D image size (default 96; the paper uses 200)")
    d.add_argument("--pairs", type=int, default=3, help="number of synthetic pairs (default 3)")
    d.add_argument("--methods", nargs="+", default=None,
                   choices=["vsvf", "lddmm", "rdmm-predefined", "rdmm-optimized", "sitk-demons", "ants-syn", "niftyreg"],
                   help="default: vsvf lddmm rdmm-predefined rdmm-optimized, and sitk-demons if SimpleITK is installed")
    d.add_argument("--no-baseline", action="store_true", help="leave the demons baseline out")
    d.add_argument("--iterations", type=int, nargs=3, default=None, metavar=("COARSE", "MID", "FINE"),
                   help="L-BFGS iterations per scale (default: 20 20 20)")
    d.add_argument("--worker", choices=("cf", "debug", "slurm"), default="cf",
                   help="cf: processes on this machine; slurm: one sbatch job per task; debug: in-process")
    d.add_argument("--jobs", type=int, default=None, help="cf worker: concurrent processes (default: all CPUs)")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("apply", help="apply a saved registration to another image or label map")
    a.add_argument("result", help="result directory (or its displacement_itk.nii.gz)")
    a.add_argument("image", help="image in moving space (with --inverse: in fixed space)")
    a.add_argument("--out", required=True, help="output NIfTI")
    a.add_argument("--labels", action="store_true", help="the image is a label map (nearest neighbour)")
    a.add_argument("--interpolation", choices=("linear", "nearest"), default="linear",
                   help="how intensities are resampled (label maps: nearest, see --labels)")
    a.add_argument("--inverse", action="store_true", help="go back: resample a fixed-space image onto the moving grid")
    a.add_argument("--reference", default=None, help="with --inverse: an image on the moving grid")
    a.set_defaults(func=cmd_apply)

    e = sub.add_parser("evaluate", help="Jacobian folds, and Dice (with label maps) and landmark TRE (with "
                                        "landmarks), of a saved registration")
    e.add_argument("result", help="result directory (or its displacement_itk.nii.gz; or a baseline's folder or "
                                  "*_displacement.nii.gz with its .log)")
    e.add_argument("--fixed-labels", default=None, help="label map of the fixed image (with --moving-labels: Dice)")
    e.add_argument("--moving-labels", default=None, help="label map of the moving image, on its grid "
                                                         "(with --fixed-labels)")
    e.add_argument("--fixed-points", default=None, help="landmarks in fixed space (text or CSV, world RAS mm)")
    e.add_argument("--moving-points", default=None, help="corresponding landmarks in moving space")
    e.add_argument("--onehot", action="store_true", help="warp labels by one-hot linear interpolation")
    e.add_argument("--pair-id", default=None, help="the pair's name in the record (default: the result folder's)")
    e.add_argument("--method", default=None,
                   help="method named in the record (default: what the result's record says was run, e.g. "
                        "rdmm-optimized, lddmm, rdmm-net, ants-syn)")
    e.add_argument("--out", required=True, help="evaluation JSON")
    e.add_argument("--csv", default=None, help="also write one CSV row here")
    e.set_defaults(func=cmd_evaluate)

    c = sub.add_parser("cohort", help="register every pair of a manifest with every method (pydra)")
    c.add_argument("manifest", help="CSV/TSV manifest: id, fixed, moving[, fixed_labels, moving_labels, ...]")
    c.add_argument("--out", required=True, help="output directory (table, report, sub-<id>/<method>/)")
    c.add_argument("--methods", nargs="+", default=["rdmm-optimized"],
                   help="vsvf lddmm rdmm-predefined rdmm-optimized ants-syn sitk-demons niftyreg, trained "
                        "networks vsvf-net lddmm-net rdmm-net (with --weights), and their predictions refined by "
                        "instance optimisation vsvf-net+io lddmm-net+io rdmm-net+io (as `rdmm register --refine`)")
    c.add_argument("--weights", action="append", default=None, metavar="METHOD=CHECKPOINT",
                   help="a trained network for a *-net or *-net+io method, e.g. rdmm-net=run/best.pt (repeatable; "
                        "rdmm-net+io uses rdmm-net's unless given its own)")
    c.add_argument("--worker", choices=("cf", "debug", "slurm"), default="cf",
                   help="cf: processes on this machine; slurm: one sbatch job per task; debug: in-process")
    c.add_argument("--jobs", type=int, default=None, help="cf worker: concurrent processes")
    c.add_argument("--slurm-args", default="", help='sbatch options of every job, e.g. "--partition=short --time=1:00:00"')
    c.add_argument("--gpus", type=int, default=0,
                   help="slurm: GPUs per registration job (--gres=gpu:N); other stages ask for none")
    c.add_argument("--slurm-gpu-args", default=None,
                   help='slurm: sbatch options of the registration jobs instead of --gpus, e.g. "--gpus-per-task=1 -p gpu"')
    c.add_argument("--poll", type=float, default=2.0, help="slurm: seconds between squeue polls")
    c.add_argument("--cache", default=None, help="pydra cache (default OUT/cache); reuse it to resume")
    c.add_argument("--rerun", action="store_true", help="ignore cached results and run everything again")
    c.add_argument("--config", default=None, help="registration configuration JSON for our methods")
    c.add_argument("--preset", default=None, help="configuration preset of our methods (see `rdmm presets`)")
    c.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (resolved in each task)")
    c.add_argument("--threads", type=int, default=0, help="threads per task (0: all)")
    c.add_argument("--no-qc", action="store_true", help="skip the per-pair QC figures")
    c.set_defaults(func=cmd_cohort)

    mp = sub.add_parser("manifest", help="write a cohort manifest of pairs found in a folder")
    mp.add_argument("kind", choices=("atlas", "all", "longitudinal"),
                    help="atlas: every image to --atlas; all: every pair of images; "
                         "longitudinal: consecutive sessions of each subject of a BIDS-like tree")
    mp.add_argument("folder", help="the images' folder (longitudinal: the BIDS root)")
    mp.add_argument("--out", required=True, help="manifest to write (.csv or .tsv)")
    mp.add_argument("--atlas", default=None, help="atlas image (kind 'atlas')")
    mp.add_argument("--pattern", default="*.nii.gz", help="glob of the images in FOLDER")
    mp.add_argument("--labels-pattern", default=None,
                    help="each image's label map next to it, e.g. '{stem}_seg.nii.gz'")
    mp.add_argument("--unordered", action="store_true", help="'all': one direction per pair")
    mp.add_argument("--suffix", default="T1w", help="'longitudinal': the BIDS suffix of the images")
    mp.add_argument("--relative", action="store_true", help="write paths relative to the manifest")
    mp.set_defaults(func=cmd_manifest)

    s = sub.add_parser("presets", help="list the configuration presets")
    s.add_argument("--show", action="store_true", help="print each preset's full configuration")
    s.add_argument("--markdown", action="store_true", help="print the README's table of the presets")
    s.add_argument("--model", choices=MODELS, default="rdmm", help="the model the presets are shown for")
    s.set_defaults(func=cmd_presets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(f"rdmm {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)  # one line
        return 2
    except KeyboardInterrupt:
        print(f"rdmm {args.command}: interrupted; no complete result was recorded", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
