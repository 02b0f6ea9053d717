"""The exact per-cell fold test (a bilinear / trilinear cell folds when the determinant of its
one-sided edges is <= 0 at any corner) and its statistics, against hand-built maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rdmm_pipelines.evaluation import FOLD_KEYS, fold_statistics, folded_cells, jacobian_determinant_physical
from rdmm_pipelines.spatial import Grid

def identity_voxels(*shape: int) -> torch.Tensor:
    """(1, d, *shape) float64 identity voxel map."""
    axes = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    return torch.stack(axes)[None].clone()


def central_difference_folds(voxels: torch.Tensor) -> int:
    g = Grid.from_shape(tuple(voxels.shape[2:]))
    return fold_statistics(jacobian_determinant_physical(voxels, g, g))["folding_voxels"]


def test_identity_folds_no_cell_in_2d_and_3d():
    for shape in ((5, 6), (4, 5, 6)):
        v = identity_voxels(*shape)
        cells = folded_cells(v)
        assert cells.shape == (1, *(n - 1 for n in shape)) and cells.dtype == torch.bool
        assert not cells.any()
        g = Grid.from_shape(shape, spacing=(0.5,) * len(shape))
        assert not folded_cells(v, g, g).any()
    # a batch, and an axis with one voxel (no cells)
    assert folded_cells(identity_voxels(4, 5).expand(3, -1, -1, -1)).shape == (3, 3, 4)
    assert folded_cells(identity_voxels(4, 1)).shape == (1, 3, 0)


def test_node_pushed_across_its_neighbour_folds_the_cells_behind_it():
    # node (2, 2) moved by +1.5 along axis 0, past node (3, 2): the edges (2,2)->(3,2) point
    # backwards, so the two cells with lower corners (2, 1) and (2, 2) fold; the cells on the other
    # side are only stretched (their corner determinants are 1 or 2.5)
    v = identity_voxels(5, 5)
    v[0, 0, 2, 2] += 1.5
    cells = folded_cells(v)[0]
    assert torch.nonzero(cells).tolist() == [[2, 1], [2, 2]]
    # central differences step over the node: (V(3,2) - V(1,2)) / 2 = 1, no voxel with det < 0
    assert central_difference_folds(v) == 0
    # pushed exactly onto its neighbour: the edge has length 0, corner det = 0 -> collapsed, folded
    v = identity_voxels(5, 5)
    v[0, 0, 2, 2] += 1.0
    assert torch.nonzero(folded_cells(v)[0]).tolist() == [[2, 1], [2, 2]]
    # pushed diagonally past node (3, 3): the cell (2, 2) and its two neighbours (1, 2), (2, 1)
    # (at their corners (2, 3) and (3, 2): det [[1, -1.5], [0, -0.5]] = -0.5) fold, (1, 1) stays convex
    v = identity_voxels(5, 5)
    v[0, :, 2, 2] += 1.5
    assert torch.nonzero(folded_cells(v)[0]).tolist() == [[1, 2], [2, 1], [2, 2]]


def test_period_two_zigzag_folds_cells_that_central_differences_miss():
    # V_0(i, j) = i + a z(i), z(i) = (-1)^i inside, 0 on the border; a = 0.75.
    # cell edges along axis 0: 1 - a at both borders, 1 - 2a z(i) inside -> -0.5 for i = 2, 4
    # central differences: (2 + a (z(i+1) - z(i-1))) / 2 = 1 inside, (2 + a) / 2 next to the border,
    # one-sided 1 - a = 0.25 on it: det J > 0 everywhere
    n, m, a = 8, 5, 0.75
    z = torch.tensor([0.0] + [(-1.0) ** i for i in range(1, n - 1)] + [0.0], dtype=torch.float64)
    v = identity_voxels(n, m)
    v[0, 0] += a * z[:, None]
    g = Grid.from_shape((n, m))
    det = jacobian_determinant_physical(v, g, g)
    assert float(det.min()) == pytest.approx(0.25)
    cells = folded_cells(v, g, g)
    assert torch.nonzero(cells[0, :, 0]).flatten().tolist() == [2, 4]
    s = fold_statistics(det, cells=cells)
    assert s["folding_voxels"] == 0 and s["folds"] == 0.0
    assert s["folded_cells"] == 2 * (m - 1) == 8
    assert s["folded_cells_percent"] == pytest.approx(100 * 8 / ((n - 1) * (m - 1)))


def test_3d_node_pushed_across_its_neighbour_folds_four_cells():
    # node (1, 2, 2) moved by +1.5 along axis 0: of its 8 cells, the 4 with lower corner (1, j, k)
    # start with the reversed edge (-0.5, 0, 0) there (corner det = -0.5 * 1 * 1); the 4 with lower
    # corner (0, j, k) are stretched (corner det 2.5 or 1)
    v = identity_voxels(4, 5, 6)
    v[0, 0, 1, 2, 2] += 1.5
    cells = folded_cells(v)
    assert cells.shape == (1, 3, 4, 5)
    assert torch.nonzero(cells[0]).tolist() == [[1, 1, 1], [1, 1, 2], [1, 2, 1], [1, 2, 2]]
    assert central_difference_folds(v) == 0
    # a reflection folds every cell; a shear that keeps det > 0 folds none
    flipped = identity_voxels(3, 4, 5)
    flipped[0, 2] *= -1
    assert folded_cells(flipped).all()
    sheared = identity_voxels(3, 4, 5)
    sheared[0, 0] += 3.0 * sheared[0, 1]
    assert not folded_cells(sheared).any()


def test_folded_cells_matches_a_loop_over_cells_and_corners_on_random_maps():
    gen = torch.Generator().manual_seed(3)
    for shape in ((5, 4), (4, 3, 5)):
        d = len(shape)
        v = identity_voxels(*shape) + 0.45 * torch.randn(1, d, *shape, generator=gen, dtype=torch.float64)
        vv = v[0].numpy()
        expected = np.zeros([n - 1 for n in shape], dtype=bool)
        for cell in np.ndindex(*expected.shape):
            for corner in np.ndindex(*(2,) * d):
                jac = np.empty((d, d))
                for k in range(d):
                    hi = [c + (1 if j == k else o) for j, (c, o) in enumerate(zip(cell, corner))]
                    lo = [c + (0 if j == k else o) for j, (c, o) in enumerate(zip(cell, corner))]
                    jac[:, k] = vv[(slice(None), *hi)] - vv[(slice(None), *lo)]
                expected[cell] |= np.linalg.det(jac) <= 0
        assert 0 < expected.sum() < expected.size
        assert np.array_equal(folded_cells(v)[0].numpy(), expected)


def test_fold_statistics_of_cells_with_a_mask_and_errors():
    det = torch.ones(1, 3, 4)
    cells = torch.zeros(1, 2, 3, dtype=torch.bool)
    cells[0, 0, 0] = cells[0, 1, 2] = True
    s = fold_statistics(det, cells=cells)
    assert list(s) == list(FOLD_KEYS) and FOLD_KEYS[:7] == (
        "folds", "folding_voxels", "folding_percent", "det_min", "det_max", "det_mean", "det_std")
    assert s["folded_cells"] == 2 and isinstance(s["folded_cells"], int)
    assert s["folded_cells_percent"] == pytest.approx(100 * 2 / 6)
    # a cell counts when its 4 corners are all in the mask: rows 0 and 1 -> the cells of row 0
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[:2] = True
    m = fold_statistics(det, mask=mask, cells=cells)
    assert m["folded_cells"] == 1 and m["folded_cells_percent"] == pytest.approx(100 / 3)
    assert fold_statistics(det[0], cells=cells)["folded_cells"] == 2  # det without the batch axis
    # no cells: not measured
    n = fold_statistics(det)
    assert list(n) == list(FOLD_KEYS) and math.isnan(n["folded_cells"]) and math.isnan(n["folded_cells_percent"])
    # a mask holding no whole cell
    one_row = torch.zeros(3, 4, dtype=torch.bool)
    one_row[0] = True
    e = fold_statistics(det, mask=one_row, cells=cells)
    assert e["folded_cells"] == 0 and math.isnan(e["folded_cells_percent"])
    with pytest.raises(ValueError, match="cells shape"):
        fold_statistics(det, cells=torch.zeros(1, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="cells shape"):
        fold_statistics(torch.ones(2, 3, 4), mask=torch.ones(2, 3, 4, dtype=torch.bool),
                        cells=torch.zeros(3, 2, 3, dtype=torch.bool))
    g = Grid.from_shape((3, 4))
    with pytest.raises(ValueError, match="both"):
        folded_cells(identity_voxels(3, 4), g)
    with pytest.raises(ValueError, match="does not match the fixed grid shape"):
        folded_cells(identity_voxels(3, 5), g, g)
    with pytest.raises(ValueError, match="must be"):
        folded_cells(torch.zeros(1, 2, 3, 4, 5))
