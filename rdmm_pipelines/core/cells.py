"""The per-cell orientation test of a sampled map (the exact fold test of its multilinear interpolant).

A cell is the box of ``2^d`` neighbouring grid nodes ``i + c``, ``c in {0, 1}^d``. At each corner
``c`` the cell's Jacobian is built from the ``d`` cell edges that leave that corner, all taken
along +axis::

    J_c[:, k] = p(i + c with c_k = 1) - p(i + c with c_k = 0)        k = 0 .. d-1

and the cell is folded iff ``sign * det J_c <= 0`` at some corner (or the determinant is not
finite). In 2D the four corner determinants having one strict sign is exactly the condition for
the bilinear cell map to be injective; in 3D it is the standard corner test of a trilinear cell.
The points may be in any coordinates that are a positive scaling of the grid's axes (voxel
indices, domain or world units along the same axes): the signs do not change.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

__all__ = ["folded_cell_mask", "corner_determinants", "determinant_of_columns"]


def determinant_of_columns(columns: list[Tensor]) -> Tensor:
    """det of the d x d matrices whose column k is ``columns[k]`` (each (B, d, *C)) -> (B, *C)."""
    d = len(columns)
    if d == 1:
        return columns[0][:, 0]
    if d == 2:
        a, b = columns
        return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    if d == 3:
        a, b, c = columns
        return (a[:, 0] * (b[:, 1] * c[:, 2] - b[:, 2] * c[:, 1])
                - a[:, 1] * (b[:, 0] * c[:, 2] - b[:, 2] * c[:, 0])
                + a[:, 2] * (b[:, 0] * c[:, 1] - b[:, 1] * c[:, 0]))
    return torch.linalg.det(torch.stack(columns, dim=-1).movedim(1, -2))


def corner_determinants(points: Tensor):
    """Yield det J_c for every corner c in {0, 1}^d (module doc), each (B, n_0 - 1, ..., n_{d-1} - 1),
    differentiable in ``points`` (B, d, *S)."""
    d = points.shape[1]
    cells_shape = tuple(max(n - 1, 0) for n in points.shape[2:])
    edges = [torch.diff(points, dim=2 + k) for k in range(d)]  # p(i + e_k) - p(i)
    for corner in itertools.product((0, 1), repeat=d):
        columns = []
        for k in range(d):
            col = edges[k]
            for j in range(d):
                if j != k:
                    col = col.narrow(2 + j, corner[j], cells_shape[j])
            columns.append(col.contiguous())
        yield determinant_of_columns(columns)


def folded_cell_mask(points: Tensor, sign: float = 1.0, margin: float = 0.0) -> Tensor:
    """Which cells of the sampled map ``points`` fold (module doc), computed in its dtype.

    Args:
        points: (B, d, *S) with len(S) == d: the map's value (a point, d coordinates) per node.
        sign: +1, or -1 when the map is meant to reverse orientation (mirrored grids).
        margin: a cell also counts when a corner determinant is at most ``margin`` (in the
            points' units: a fraction of the cell volume times that volume); > 0 leaves room for
            rounding, so that a cell the test passes is not folded in other coordinates.

    Returns:
        (B, n_0 - 1, ..., n_{d-1} - 1) bool (an axis with a single node gives zero cells).
    """
    spatial = tuple(points.shape[2:])
    cells_shape = tuple(max(n - 1, 0) for n in spatial)
    if min(cells_shape, default=0) == 0:
        return torch.zeros((points.shape[0], *cells_shape), dtype=torch.bool, device=points.device)
    smallest = None  # the smallest signed corner determinant per cell (NaN propagates: folded)
    for det in corner_determinants(points):
        if sign < 0:
            det = -det  # not in place: in 1D the determinant is a view of the edges
        smallest = det if smallest is None else torch.minimum(smallest, det)
    return ~(smallest > margin)
