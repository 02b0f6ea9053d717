"""Inversion of a dense fixed -> moving transform by fixed-point iteration.

Given T on the fixed grid (``DenseTransform.moving_voxels``: moving voxel indices of T(p) for each
fixed voxel p), :func:`invert` returns T^-1 on the MOVING grid: for each moving voxel q the fixed
voxel indices of T^-1(q). Applied to a fixed-space image (``inverse.apply(image)``) it resamples
that image onto the moving grid.

Method. A least-squares affine G (fixed voxel -> moving voxel) is fitted to T and factored out, so
that in the common frame F = G^-1(moving voxel space), expressed in fixed voxel indices,

    T(x) = G(x + w(x)),        w(x) = G^-1(T(x)) - x,

with w the (small) non-affine displacement, interpolated linearly between fixed voxels. For a
moving voxel q with z = G^-1(q), x = T^-1(q) solves x + w(x) = z and is found by the fixed-point
iteration ``x_{k+1} = z - w(x_k)`` from x_0 = z; it converges where the displacement is contractive
(|grad w| < 1, no folds), large affine parts (rotations, scalings, flips) included. The residual
T(x_k) - q = G_lin (x_k + w(x_k) - z) is measured in world mm through the moving grid's affine.
Moving voxels whose preimage leaves the fixed grid ("outside") are not counted in the residual
(T is unknown there; w is extrapolated constantly); applying the inverse gives zero there.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.interpolation import sample_voxel
from .dense import DenseTransform

__all__ = ["InversionReport", "invert"]

logger = logging.getLogger(__name__)

_FIT_POINTS = 50_000  # at most this many fixed voxels are used for the affine fit
_OUTSIDE_TOL = 1e-3  # voxels


@dataclass(frozen=True)
class InversionReport:
    """How well T(T^-1(q)) = q holds on the moving grid (moving voxels outside excluded).

    Attributes:
        iterations: fixed-point iterations done.
        converged: max residual <= tol_mm.
        residual_max_mm, residual_mean_mm: |T(T^-1(q)) - q| in world mm over the inside voxels.
        tol_mm: the tolerance used.
        unconverged_fraction: fraction of inside moving voxels with residual > tol_mm.
        outside_fraction: fraction of moving voxels whose preimage lies outside the fixed grid.
    """

    iterations: int
    converged: bool
    residual_max_mm: float
    residual_mean_mm: float
    tol_mm: float
    unconverged_fraction: float
    outside_fraction: float


def _homogeneous(m: Tensor, coords: Tensor) -> Tensor:
    d = coords.shape[1]
    return torch.einsum("kl,bl...->bk...", m[:d, :d], coords) + m[:d, d].view(1, d, *([1] * d))


def _fit_affine(idx: Tensor, target: Tensor) -> Tensor:
    """Least-squares (d+1, d+1) affine with target ~ G @ [idx, 1] (float64, subsampled)."""
    d = idx.shape[1]
    numel = idx[0, 0].numel()
    stride = max(1, math.ceil((numel / _FIT_POINTS) ** (1.0 / d)))
    sl = (slice(None), slice(None)) + (slice(None, None, stride),) * d
    x = idx[sl].reshape(d, -1).T
    y = target[sl].reshape(d, -1).T
    ok = torch.isfinite(y).all(dim=1)
    x, y = x[ok], y[ok]
    xh = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    beta = torch.linalg.solve(xh.T @ xh, xh.T @ y)  # (d+1, d)
    g = torch.eye(d + 1, dtype=idx.dtype, device=idx.device)
    g[:d] = beta.T
    return g


def invert(
    transform: DenseTransform,
    iterations: int = 30,
    tol: float | None = None,
    *,
    return_report: bool = False,
) -> DenseTransform | tuple[DenseTransform, InversionReport]:
    """The inverse of a dense transform, on the moving grid.

    Args:
        transform: T, fixed -> moving (``moving_voxels`` on ``transform.fixed_grid``).
        iterations: maximum fixed-point iterations.
        tol: convergence tolerance on max |T(T^-1(q)) - q| in world mm (default: 1% of the moving
            grid's smallest voxel spacing).
        return_report: also return an :class:`InversionReport`.

    Returns:
        ``DenseTransform(fixed_grid=transform.moving_grid, moving_grid=transform.fixed_grid,
        moving_voxels=fixed voxel indices of T^-1(q))`` in ``transform.moving_voxels``' dtype and
        device (computed in float64), and the report if asked. A warning is logged when the
        iteration does not reach ``tol`` (folds, or a displacement too large to invert).
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    fg, mg = transform.fixed_grid, transform.moving_grid
    d = fg.ndim
    tol_mm = float(0.01 * mg.spacing.min()) if tol is None else float(tol)
    if not tol_mm > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    mv = transform.moving_voxels
    dev = mv.device
    m = mv.to(torch.float64)
    if not torch.isfinite(m).all():
        raise ValueError("the transform has non-finite moving voxel indices")

    idx_f = fg.voxel_indices(torch.float64, dev)
    try:
        g = _fit_affine(idx_f, m)
        g_inv = torch.linalg.inv(g)
        if not torch.isfinite(g_inv).all():
            raise RuntimeError("non-finite")
    except RuntimeError:  # degenerate map: fall back to the plain world-space frame
        g = torch.as_tensor(fg.voxel_map_to(mg), dtype=torch.float64, device=dev)
        g_inv = torch.linalg.inv(g)
    w = _homogeneous(g_inv, m) - idx_f  # non-affine displacement, fixed voxel units
    z = _homogeneous(g_inv, mg.voxel_indices(torch.float64, dev))  # targets in the frame F
    # residual in the frame F -> world mm: moving affine's linear part times G's
    to_mm = torch.as_tensor(mg.affine_matrix[:3, :d], dtype=torch.float64, device=dev) @ g[:d, :d]
    hi = torch.tensor([n - 1 for n in fg.shape], dtype=torch.float64, device=dev).view(
        1, d, *([1] * d)
    )

    x = z.clone()
    done = 0
    while True:
        wx = sample_voxel(w, x, mode="linear", padding="border")
        err = x + wx - z
        res = torch.einsum("kl,bl...->bk...", to_mm, err).norm(dim=1)[0]  # (*S_moving) mm
        inside = ((x >= -_OUTSIDE_TOL) & (x <= hi + _OUTSIDE_TOL)).all(dim=1)[0]
        res_in = res[inside]
        res_max = float(res_in.max()) if res_in.numel() else 0.0
        if res_max <= tol_mm or done >= iterations:
            break
        x = z - wx
        done += 1

    n_in = int(inside.sum())
    report = InversionReport(
        iterations=done,
        converged=bool(res_max <= tol_mm),
        residual_max_mm=res_max,
        residual_mean_mm=float(res_in.mean()) if n_in else 0.0,
        tol_mm=tol_mm,
        unconverged_fraction=float((res_in > tol_mm).sum()) / n_in if n_in else 0.0,
        outside_fraction=1.0 - n_in / inside.numel(),
    )
    if report.converged:
        logger.info(
            "inverted the transform in %d iterations: max residual %.3g mm (tol %.3g mm), "
            "%.1f%% of the moving grid maps outside the fixed grid",
            done, res_max, tol_mm, 100 * report.outside_fraction,
        )
    else:
        logger.warning(
            "transform inversion did not converge after %d iterations: max |T(T^-1(q)) - q| = "
            "%.3g mm (tol %.3g mm, mean %.3g mm) at %.2f%% of the moving voxels; the transform may "
            "fold (det J <= 0) or map points outside the fixed grid",
            done, res_max, tol_mm, report.residual_mean_mm, 100 * report.unconverged_fraction,
        )
    inverse = DenseTransform(mg, fg, x.to(mv.dtype))
    return (inverse, report) if return_report else inverse
