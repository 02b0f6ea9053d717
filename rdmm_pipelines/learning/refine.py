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

from ..config import AffineConfig, ConfigError, OptimizerConfig, RegistrationConfig, _Config
from .network import RegistrationNetwork

__all__ = ["RefineConfig", "refine_config"]


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
        n = len(OptimizerConfig().scales)
        if isinstance(self.scales, bool) or not isinstance(self.scales, int) or not 1 <= self.scales <= n:
            raise ConfigError(f"refine.scales must be an integer from 1 to {n}; got {self.scales!r}")
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ConfigError(f"refine.iterations must be a positive integer; got {self.iterations!r}")


def refine_config(net: RegistrationNetwork, refine: RefineConfig) -> tuple[RegistrationConfig, int]:
    """(the registration configuration of the refinement, the penalty schedule's starting iteration).

    The network's objective (:attr:`RegistrationNetwork.registration_config`) with the kernel's
    ``min_voxels`` off, no affine stage, and the default optimiser's last ``refine.scales`` scales
    at the network's map resolution."""
    if net.cfg.refine_steps != 1:
        raise ValueError(f"this network composes {net.cfg.refine_steps} predicted shots (refine_steps); instance "
                         "optimisation starts from a single momentum: use a network with refine_steps 1")
    default = OptimizerConfig()
    k = refine.scales
    optimizer = default.replace(scales=default.scales[-k:], iterations=(refine.iterations,) * k,
                                map_low_res_factor=net.cfg.map_low_res_factor)
    base = net.registration_config
    cfg = base.replace(kernel=base.kernel.replace(min_voxels=0.0), affine=AffineConfig(enabled=False),
                       optimizer=optimizer)
    return cfg, sum(default.iterations[:-k])
