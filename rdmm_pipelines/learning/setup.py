"""Network configurations from registration presets or defaults, and training pairs from a list of files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import RegistrationConfig
from ..presets import get_preset
from ..spatial import Grid
from .config import NetworkConfig
from .data import NetworkPair, load_pair

__all__ = ["default_network_config", "load_pairs", "network_from_preset"]


def default_network_config(model: str, grid: Grid | Sequence[int], spacing: float | Sequence[float] = 1.0,
                           **changes: Any) -> NetworkConfig:
    """The network whose shooting is that of ``register()`` at the defaults on images of ``grid``.

    The kernel is the default's with its sigmas as the registration uses them on that grid
    (:func:`rdmm_pipelines.registration.kernel_sigmas`: domain units, the narrowest raised to
    ``kernel.min_voxels`` voxels of the map grid), with the default's weights, border and
    ``min_voxels``; the default similarity, regularity weight, RDMM regulariser (pre-weights
    from the network: ``regional.source = "optimized"``), integrator and the default optimiser's
    ``map_low_res_factor``. So the network's momentum (and pre-weights) can start the default
    optimisation of the same pair with the same kernel (instance optimisation).

    Args:
        model: "vsvf", "lddmm" or "rdmm".
        grid: the images' grid, or its shape (n_0, ..., n_{d-1}) (the network's ``image_shape``).
        spacing: with a shape: the voxel size per axis (mm or domain units: only the ratios
            matter); ignored with a Grid.
        changes: other NetworkConfig fields (features, inverse_consistency_weight, ...), applied last.
    """
    from ..registration import kernel_sigmas  # the registration module is heavy; imported on use

    if not isinstance(grid, Grid):
        shape = tuple(int(n) for n in grid)
        sp = (float(spacing),) * len(shape) if isinstance(spacing, (int, float)) else tuple(map(float, spacing))
        grid = Grid.from_shape(shape, sp)
    rc = RegistrationConfig(model=model)
    if rc.optimizer.map_low_res_factor not in (0.5, 1.0, None):
        raise ValueError(f"the default map_low_res_factor {rc.optimizer.map_low_res_factor} is not one a network takes")
    kernel = rc.kernel.replace(sigmas=tuple(kernel_sigmas(rc, grid)), units="domain")
    settings = {"kernel": kernel, "regional": rc.regional.replace(source="optimized", region_weights=()),
                "integrator": rc.integrator.replace(method="rk4"),
                "similarity": rc.similarity, "regularity_weight": rc.regularity_weight,
                "map_low_res_factor": float(rc.optimizer.map_low_res_factor or 1.0), **changes}
    return NetworkConfig(model=model, image_shape=tuple(grid.shape), **settings)


def network_from_preset(model: str, image_shape: Sequence[int], preset: str = "synthetic-optimized",
                        **changes: Any) -> NetworkConfig:
    """A :class:`NetworkConfig` with a registration preset's kernel, regulariser, similarity and
    regularity weight (RDMM's pre-weights always come from the network: the regulariser's source is
    set to "optimized")."""
    cfg = get_preset(preset, model)
    regional = cfg.regional.replace(source="optimized", region_weights=())
    settings = {"kernel": cfg.kernel, "regional": regional, "similarity": cfg.similarity,
                "regularity_weight": cfg.regularity_weight, **changes}
    return NetworkConfig(model=model, image_shape=tuple(int(n) for n in image_shape), **settings)


def load_pairs(rows: Sequence[dict[str, Any]], image_shape: Sequence[int], resample: bool = False) -> list[NetworkPair]:
    """Load every pair of ``rows`` ({"id", "fixed", "moving"[, "fixed_labels", "moving_labels"]}),
    collecting the problems of all of them into one ValueError (one line per pair)."""
    pairs, problems = [], []
    for row in rows:
        try:
            pairs.append(load_pair(row["fixed"], row["moving"], image_shape, fixed_labels=row.get("fixed_labels"),
                                   moving_labels=row.get("moving_labels"), resample=resample, name=str(row["id"])))
        except (ValueError, OSError) as err:
            msg = str(err)
            problems.append(msg if msg.startswith(f"{row['id']}:") else f"{row['id']}: {msg}")
    if problems:
        raise ValueError(f"{len(problems)} of {len(rows)} pairs cannot be used:\n  " + "\n  ".join(problems))
    return pairs


