"""Instance optimisation from a network's prediction: the network's speed, optimisation's accuracy.

The network predicts m0 (and RDMM's h0) in one pass; :func:`refine_prediction` then runs the same
multi-scale L-BFGS as :func:`~rdmm_pipelines.register` on the finest ``scales`` scales of the
default schedule, starting from the prediction (:class:`~rdmm_pipelines.optim.InitialConditions`)
instead of from zero, with the default convergence test. The objective is the network's own (its
kernel exactly, ``min_voxels`` off so the sigmas are not re-floored on another grid; its
similarity and regularity weight), and the moving image is aligned with the network's affine (or
the headers alone), so the start is the prediction itself: the refined objective is never above
the prediction's (the optimiser keeps its best point).

RDMM's penalty schedule starts at the iteration the full schedule reaches at the first refined
scale (the iterations of the scales skipped), so the pre-weights are as free as they would be there.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import AffineConfig, ConfigError, OptimizerConfig, RegistrationConfig
from ..config_base import _Config
from .network import RegistrationNetwork

__all__ = ["RefineConfig", "refine_config", "refine_value_problem"]


@dataclass(frozen=True)
class RefineConfig(_Config):
    """How a prediction is refined.

    Attributes:
        scales: how many of the default schedule's finest scales run (1: only the full
            resolution; 2: half and full; at most the schedule's number of scales).
        iterations: the most L-BFGS iterations per refined scale (the convergence test of
            :class:`~rdmm_pipelines.config.OptimizerConfig` usually stops earlier).
    """

    scales: int = 1
    iterations: int = 30

    def __post_init__(self) -> None:
        for name in ("scales", "iterations"):
            problem = refine_value_problem(name, getattr(self, name))
            if problem:
                raise ConfigError(f"refine.{name} {problem}")


def refine_value_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be :class:`RefineConfig`'s ``name`` ("scales" or "iterations"), as the
    end of a sentence that names it ("must be ...; got ..."), or None when it can (the one check
    behind the configuration, ``rdmm register --refine-*`` and the pydra task's inputs)."""
    if name == "scales":
        n = len(OptimizerConfig().scales)
        ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= n
        return None if ok else f"must be an integer from 1 to {n} (the default schedule's finest scales); got {value!r}"
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return None if ok else f"must be a positive integer; got {value!r}"


def refine_config(net: RegistrationNetwork, refine: RefineConfig) -> tuple[RegistrationConfig, int]:
    """(the registration configuration of the refinement, the penalty schedule's starting iteration).

    The network's objective (:attr:`RegistrationNetwork.registration_config`) with the kernel's
    ``min_voxels`` off, no affine stage, and the default optimiser's last ``refine.scales`` scales
    at the network's map resolution."""
    if net.cfg.refine_steps != 1:
        raise ValueError(f"this network composes {net.cfg.refine_steps} predicted shots (refine_steps); instance "
                         "optimisation starts from a single momentum: use a network with refine_steps 1")
    default = OptimizerConfig().resolved(net.cfg.ndim)
    k = refine.scales
    optimizer = default.replace(scales=default.scales[-k:], iterations=(refine.iterations,) * k,
                                map_low_res_factor=net.cfg.map_low_res_factor)
    base = net.registration_config
    cfg = base.replace(kernel=base.kernel.replace(min_voxels=0.0), affine=AffineConfig(enabled=False),
                       optimizer=optimizer)
    return cfg, sum(default.iterations[:-k])
