"""optimizer.reject_folds: the line search rejects trial points whose map folds more cells than the
best point so far, so a registration that folds without it does not fold with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rdmm_pipelines.config import ConfigError, OptimizerConfig
from rdmm_pipelines.core.cells import folded_cell_mask
from rdmm_pipelines.evaluation import folded_cells
from rdmm_pipelines.presets import get_preset
from rdmm_pipelines.registration import register
from rdmm_pipelines.spatial import Grid, Image


def test_the_cell_test_is_the_evaluations_in_any_dtype():
    g = torch.Generator().manual_seed(0)
    for shape in ((9, 11), (5, 6, 7)):
        d = len(shape)
        idm = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij"))
        v = (idm + 0.45 * torch.randn((d, *shape), generator=g, dtype=torch.float64)).unsqueeze(0)
        ref = folded_cells(v)
        assert 0 < int(ref.sum()) < ref.numel()
        assert torch.equal(folded_cell_mask(v), ref)
        assert torch.equal(folded_cell_mask((v * 0.01).float()), ref)  # scaled coordinates, float32
        assert bool(folded_cell_mask(v, sign=-1.0)[~ref].all())  # orientation reversed: all others fold


def test_reject_folds_is_validated():
    with pytest.raises(ConfigError, match="reject_folds"):
        OptimizerConfig(reject_folds=1)
    assert OptimizerConfig.from_dict(OptimizerConfig(reject_folds=True).to_dict()).reject_folds is True


def _disks(n: int = 40):
    """A large disk (moving) and a small one (fixed): matching them compresses the large one."""
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32), indexing="ij")
    r = ((y - n / 2) ** 2 + (x - n / 2) ** 2).sqrt()
    fixed = (r < 0.12 * n).float().unsqueeze(0)
    moving = (r < 0.36 * n).float().unsqueeze(0)
    return fixed, moving


def _cfg(reject: bool):
    cfg = get_preset("default", "lddmm")
    return cfg.replace(
        affine=cfg.affine.replace(enabled=False),
        kernel=cfg.kernel.replace(sigmas=(0.02, 0.05), weights=(0.5, 0.5), min_voxels=0.5),
        regularity_weight=0.5,
        optimizer=cfg.optimizer.replace(scales=(0.5, 1.0), iterations=(15, 25), map_low_res_factor=None,
                                        preconditioner_floor=1e-3, reject_folds=reject),
    )


def test_a_registration_that_folds_does_not_when_folds_are_rejected():
    fixed, moving = _disks()
    free = register(fixed, moving, config=_cfg(False), threads=1)
    guarded = register(fixed, moving, config=_cfg(True), threads=1)
    n_free = int(folded_cells(free.moving_voxels()).sum())
    n_guarded = int(folded_cells(guarded.moving_voxels()).sum())
    assert n_free > 0, "the test pair must fold without the guard"
    assert n_guarded == 0
    finest = guarded.scales[-1]
    assert finest["folded_cells"] == 0 and sum(s["rejected_folding_trials"] for s in guarded.scales) > 0
    assert free.scales[-1]["folded_cells"] is None and free.scales[-1]["rejected_folding_trials"] == 0
    # still a registration: most of the way the unguarded one goes (measured: SSD 0.368 before,
    # 0.153 folding, 0.177 guarded)
    before = float(((moving - fixed) ** 2).mean())
    gain_free = before - float(((free.warped().data - fixed) ** 2).mean())
    gain_guarded = before - float(((guarded.warped().data - fixed) ** 2).mean())
    assert gain_guarded > 0.7 * gain_free > 0


def test_the_cell_test_in_1d_and_its_margin():
    x = torch.arange(5.0).view(1, 1, 5)
    assert int(folded_cell_mask(x).sum()) == 0 and int(folded_cell_mask(x, sign=-1.0).sum()) == 4
    assert int(folded_cell_mask(-x, sign=-1.0).sum()) == 0
    squashed = torch.tensor([[[0.0, 1.0, 1.0005, 2.0]]])  # the middle cell keeps 5e-4 of its length
    assert int(folded_cell_mask(squashed).sum()) == 0
    assert folded_cell_mask(squashed, margin=1e-3).tolist() == [[False, True, False]]


def _disk_on(grid, radius: float, n: int):
    """A disk of ``radius`` about (n/2, n/2) in world units, on ``grid``."""
    a = torch.tensor(grid.affine_matrix, dtype=torch.float64)
    idx = torch.stack(torch.meshgrid(*[torch.arange(m, dtype=torch.float64) for m in grid.shape], indexing="ij"))
    w = torch.einsum("kl,l...->k...", a[:2, :2], idx) + a[:2, 3].view(2, 1, 1)
    r = ((w[0] - n / 2) ** 2 + (w[1] - n / 2) ** 2).sqrt()
    return Image((r < radius).float().unsqueeze(0), grid)


def test_a_finer_scale_that_starts_folded_starts_from_a_shorter_momentum():
    """The coarser scale ends unfolded on its grid, but its momentum shot on the finer map folds
    cells there (a review's case: the moving disk on a rotated grid); the finer scale then starts
    from that momentum halved, and the result has no folded cell in the moving image's voxels."""
    n = 40
    a = np.eye(4)
    a[:2, :2] = [[0.621996, -0.723295], [0.723295, 0.621996]]
    a[:2, 3] = [21.97534, -6.233173]
    fixed = _disk_on(Grid.from_shape((n, n)), 0.12 * n, n)
    moving = _disk_on(Grid((n, n), tuple(map(tuple, a))), 0.36 * n, n)
    counts = {}
    for reject in (False, True):
        res = register(fixed, moving, config=_cfg(reject), threads=1)
        counts[reject] = int(folded_cells(res.moving_voxels().double(), res.fixed.grid, res.moving.grid).sum())
        if reject:
            assert res.scales[0]["start_momentum_scaled"] == 1.0 and res.scales[-1]["start_momentum_scaled"] < 1.0
            assert [s["folded_cells"] for s in res.scales] == [0, 0]
    assert counts[False] > 0 and counts[True] == 0, counts
