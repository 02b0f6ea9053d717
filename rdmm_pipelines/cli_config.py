"""The configuration of ``rdmm register`` from its options: ``--config`` or ``--preset``, then the
options users change most (``--iterations``, ``--steps``, ``--map-resolution``, ``--similarity``,
``--seed``, ``--no-affine``) applied on top. Checked before any file is written or any work
starts; an error names the flag."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import ConfigError, RegistrationConfig

__all__ = ["registration_config", "add_tuning_options", "read_json", "similarity_names"]


def similarity_names() -> tuple[str, ...]:
    """The similarity measures a registration can use (:data:`rdmm_pipelines.similarity.SIMILARITIES`)."""
    from .similarity import SIMILARITIES

    return tuple(SIMILARITIES)


def add_tuning_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``rdmm register`` that change the configuration's most-tuned numbers."""
    parser.add_argument("--iterations", type=int, nargs="+", default=None, metavar="N",
                        help="the most optimiser iterations per scale, coarse to fine: one number for "
                             "every scale or one per scale (default 30 30 30; 30 30 0 skips the finest "
                             "scale, about 4x faster on a 3D brain)")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="the fewest time steps of the shooting (default 5; the Courant limit adds "
                             "steps where the flow is fast)")
    parser.add_argument("--map-resolution", type=float, default=None, metavar="F",
                        help="resolution of the momentum and the map relative to the image, in (0, 1] "
                             "(default 0.5; 1 is slower and finer, 0.25 faster)")
    parser.add_argument("--similarity", choices=similarity_names(), default=None, metavar="NAME",
                        help=f"similarity measure of the registration, one of {', '.join(similarity_names())} "
                             "(default: the configuration's, mk-lncc); mi (mutual information) for images of "
                             "different contrasts, e.g. a T2 to a T1: the affine stage then uses mi too")


def _flagged(flag: str, change):
    """``change()``, with a configuration error re-worded to name ``flag``."""
    try:
        return change()
    except ConfigError as err:
        raise ValueError(f"{flag}: {err}") from None


def registration_config(args: argparse.Namespace, base: RegistrationConfig | None,
                        ) -> tuple[RegistrationConfig | None, str | None]:
    """(config, preset) for :func:`~rdmm_pipelines.registration.register`.

    ``base`` is the ``--config`` file's configuration (or None). Without tuning options the
    (config, preset) pair is passed on as given; with any, the resolved configuration with the
    options applied (and no preset).
    """
    from .registration import resolve_config

    tuned = {name: getattr(args, name, None) for name in ("seed", "iterations", "steps", "map_resolution",
                                                          "similarity")}
    no_affine = bool(getattr(args, "no_affine", False))
    if all(v is None for v in tuned.values()) and not no_affine:
        return base, args.preset
    cfg = resolve_config(args.model, base, args.preset, None)
    if tuned["seed"] is not None:
        cfg = cfg.replace(seed=tuned["seed"])
    if no_affine:
        cfg = cfg.replace(affine=cfg.affine.replace(enabled=False))
    iters = tuned["iterations"]
    if iters is not None:
        n = len(cfg.optimizer.scales)
        if len(iters) not in (1, n):
            raise ValueError(f"--iterations: give one number, or one per scale ({n} scales: "
                             f"{', '.join(f'{s:g}' for s in cfg.optimizer.scales)}); got {len(iters)}")
        if min(iters) < 0:
            raise ValueError(f"--iterations: iterations cannot be negative; got {' '.join(map(str, iters))}")
        if sum(iters) == 0:
            raise ValueError("--iterations: every scale at 0 iterations would register nothing")
        per_scale = tuple(iters) * n if len(iters) == 1 else tuple(iters)
        cfg = _flagged("--iterations", lambda: cfg.replace(optimizer=cfg.optimizer.replace(iterations=per_scale)))
    steps = tuned["steps"]
    if steps is not None:
        if steps < 1:
            raise ValueError(f"--steps: the shooting needs at least 1 time step; got {steps}")
        integ = cfg.integrator
        cfg = _flagged("--steps", lambda: cfg.replace(
            integrator=integ.replace(steps=steps, max_steps=max(integ.max_steps, steps))))
    res = tuned["map_resolution"]
    if res is not None:
        if not 0 < res <= 1:
            raise ValueError(f"--map-resolution: a fraction of the image resolution in (0, 1]; got {res:g}")
        cfg = _flagged("--map-resolution",
                       lambda: cfg.replace(optimizer=cfg.optimizer.replace(map_low_res_factor=float(res))))
    name = tuned["similarity"]
    if name is not None:
        cfg = _flagged("--similarity", lambda: cfg.with_similarity(name))
    return cfg, None


def read_json(given: str):
    """A configuration file's JSON, with one-line errors for a missing or malformed file."""
    path = Path(given)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: configuration file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
