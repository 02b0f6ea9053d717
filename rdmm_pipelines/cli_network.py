"""The trained-network options of ``rdmm register`` and ``rdmm cohort``: ``--weights``, ``--refine``
(instance optimisation from the prediction, :mod:`rdmm_pipelines.learning.refine`) and the network
methods of a cohort, checked before any work."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .cli_progress import progress_bar
from .config import NETWORK_METHODS as NETWORK_MODELS  # "rdmm-net" -> "rdmm"
from .config import REFINED_METHODS as REFINED_NETWORK_METHODS  # "rdmm-net+io" -> "rdmm-net"

def _refine_flags(args: argparse.Namespace) -> list[str]:
    """The --refine options given (``rdmm register``)."""
    given = [("--refine", getattr(args, "refine", False) or None),
             ("--refine-scales", getattr(args, "refine_scales", None)),
             ("--refine-iterations", getattr(args, "refine_iterations", None))]
    return [flag for flag, value in given if value is not None]


def _refine_option(args: argparse.Namespace):
    """The :class:`~rdmm_pipelines.learning.refine.RefineConfig` that --refine, --refine-scales and
    --refine-iterations ask for (the latter two imply --refine); None without them. A bad value
    is refused naming its flag."""
    if not _refine_flags(args):
        return None
    from .learning.refine import RefineConfig, refine_value_problem

    scales, iterations = args.refine_scales, args.refine_iterations
    for flag, value in (("--refine-scales", scales), ("--refine-iterations", iterations)):
        problem = None if value is None else refine_value_problem(flag.rsplit("-", 1)[1], value)
        if problem:
            raise ValueError(f"{flag} {problem}")
    given = {k: v for k, v in (("scales", scales), ("iterations", iterations)) if v is not None}
    return RefineConfig(**given)


def check_network_options(args: argparse.Namespace) -> None:
    """--weights and --refine with a network model only, no options that do not apply to one, and
    a checkpoint of that model (one that can be refined, with --refine): checked before anything else."""
    if args.weights and args.model not in NETWORK_MODELS:
        raise ValueError(f"--weights is for a trained network: use --model {' or '.join(NETWORK_MODELS)}")
    refine_flags = _refine_flags(args)
    if refine_flags and args.model not in NETWORK_MODELS:
        raise ValueError(f"{refine_flags[0]} refines a trained network's prediction: use --model "
                         f"{' or '.join(NETWORK_MODELS)} with --weights")
    if args.model not in NETWORK_MODELS:
        return
    if not args.weights:
        raise ValueError(f"--model {args.model} needs --weights: a checkpoint from `rdmm train`")
    unused = [flag for flag, value in (("--regularizer", args.regularizer), ("--region-labels", args.region_labels),
                                       ("--preset", args.preset), ("--config", args.config), ("--affine", args.affine),
                                       ("--deterministic", args.deterministic), ("--iterations", args.iterations),
                                       ("--steps", args.steps), ("--map-resolution", args.map_resolution),
                                       ("--similarity", args.similarity), ("--fixed-mask", args.fixed_mask),
                                       ("--moving-mask", args.moving_mask))
              if value]
    if unused:
        raise ValueError(f"{', '.join(unused)} do not apply to a trained network ({args.model})")
    refine = _refine_option(args)
    from .learning.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(args.weights, model=NETWORK_MODELS[args.model])
    if refine is not None:
        from .learning.refine import refine_config

        try:
            refine_config(checkpoint.network, refine)
        except ValueError as err:
            raise ValueError(f"--refine: {args.weights}: {err}") from None


def register_with_network_args(args: argparse.Namespace):
    from .learning import register_with_network

    refine = _refine_option(args)
    if refine is None:
        return register_with_network(args.fixed, args.moving, args.weights, model=NETWORK_MODELS[args.model],
                                     resample=args.resample, device=args.device)
    progress, close = progress_bar(not args.quiet, f"{args.model}+io", advice=_refine_advice)
    try:
        return register_with_network(args.fixed, args.moving, args.weights, model=NETWORK_MODELS[args.model],
                                     resample=args.resample, device=args.device, refine=refine,
                                     threads=args.threads, progress=progress)
    finally:
        close()


def _refine_advice(estimate) -> str:
    """The note on a long refinement: the options that shorten it are --refine's."""
    from .progress import format_duration

    size = "x".join(str(n) for n in estimate.shape)
    more = f"more --threads (this machine has {estimate.cpus} CPUs), " if estimate.threads < estimate.cpus else ""
    return (f"this refinement of a {size} image may take about {format_duration(estimate.seconds)} on this CPU "
            f"({estimate.threads} thread{'s' if estimate.threads != 1 else ''}; a rough estimate); shorter: fewer "
            f"--refine-iterations, --refine-scales 1, {more}or a GPU (--device cuda)")


def network_weights(given: Sequence[str], methods: Sequence[str]) -> dict:
    """``--weights METHOD=CHECKPOINT`` options -> method_options; every network method needs one.

    A refined method ("rdmm-net+io") takes its own --weights, or else its network's
    ("rdmm-net=best.pt" serves both when both are among --methods); its checkpoint must be one
    that can be refined (checked here)."""
    from .learning import load_checkpoint
    from .learning.refine import RefineConfig, refine_config

    names = [*NETWORK_MODELS, *REFINED_NETWORK_METHODS]
    options: dict = {}
    for item in given:
        method, sep, path = item.partition("=")
        if not sep or method not in names or not path:
            raise ValueError(f"--weights {item!r}: expected METHOD=CHECKPOINT with METHOD one of {', '.join(names)}")
        if method not in methods:
            raise ValueError(f"--weights {item!r}: {method} is not among --methods")
        options[method] = {"weights": str(Path(path).resolve())}
    for refined, network in REFINED_NETWORK_METHODS.items():
        if refined in methods and refined not in options and network in options:
            options[refined] = dict(options[network])  # the network's checkpoint, refined
    checked: dict = {}
    for method, option in options.items():  # refuse a wrong checkpoint before anything runs
        model = NETWORK_MODELS[REFINED_NETWORK_METHODS.get(method, method)]
        if (option["weights"], model) not in checked:
            checked[option["weights"], model] = load_checkpoint(option["weights"], model=model)
        if method in REFINED_NETWORK_METHODS:
            try:
                refine_config(checked[option["weights"], model].network, RefineConfig())
            except ValueError as err:
                raise ValueError(f"--weights {method}={option['weights']}: {err}") from None
    missing = [m for m in methods if m in names and m not in options]
    if missing:
        raise ValueError(f"{', '.join(missing)} need a trained network: --weights {missing[0]}=path/to/best.pt")
    return options
