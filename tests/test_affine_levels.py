"""The affine levels within ``affine.max_voxels`` (``affine.pyramid.level_factors``): which factors
run, and that a capped level still recovers a known 3D affine."""

from __future__ import annotations

import numpy as np

from rdmm_pipelines.affine import affine_register
from rdmm_pipelines.affine.pyramid import level_factors
from rdmm_pipelines.config import AffineConfig
from geometry import rotation
from test_affine import FAST, Blobs, affine_about, centred_grid, corner_error, make_pair


def test_scale_plan_keeps_every_level_within_max_voxels():
    cfg = AffineConfig()  # scales 0.25, 0.5, 1; at most 2^18 voxels
    assert level_factors(cfg, (160, 384)) == (0.25, 0.5, 1.0)  # 2D images stay whole
    assert level_factors(cfg, (256, 256, 1)) == (0.25, 0.5, 1.0)
    assert level_factors(cfg, (80, 96, 112)) == (0.25, 0.5, 0.672)  # 2 mm brain: 860,160 voxels
    assert 0.672 ** 3 * 80 * 96 * 112 <= 2 ** 18 < 0.673 ** 3 * 80 * 96 * 112
    assert level_factors(cfg, (160, 192, 224)) == (0.25, 0.336, 0.0)  # 1 mm: the last would repeat 0.336
    assert level_factors(AffineConfig(max_voxels=0), (160, 192, 224)) == (0.25, 0.5, 1.0)
    assert level_factors(AffineConfig(iterations=(100, 0, 25)), (80, 96, 112)) == (0.25, 0.0, 0.672)
    assert level_factors(AffineConfig(iterations=(100, 50, 0)), (160, 384)) == (0.25, 0.5, 0.0)
    assert AffineConfig(dof="rigid").num_parameters(3) == 6


def test_levels_above_max_voxels_run_smaller_and_still_recover_the_affine():
    centre = np.array([-4.0, 10.0, 3.0])
    fixed_grid = centred_grid((32, 30, 26), rotation([1, 1, 0], 20), (1.2, 1.0, 1.4), centre)
    moving_grid = centred_grid((30, 34, 28), rotation([0.2, 0.3, 1], -25), (1.4, 1.1, 1.3), centre + [3, -2, 2])
    a_true = affine_about(centre, rotation([0.3, -0.5, 1.0], 12) * 1.05, [4.0, -3.0, 2.5])
    fixed, moving = make_pair(Blobs(centre, 11.0, seed=3, planar=False), fixed_grid, moving_grid, a_true)
    cfg = FAST.replace(max_voxels=6000)  # 24,960 voxels: the finest level runs at 0.621
    plan = level_factors(cfg, fixed_grid.shape)
    assert plan[-1] == 0.621 and plan[:-1] == tuple(s for s in FAST.scales[:-1] if s < 0.621)
    res = affine_register(fixed, moving, cfg)
    assert res.scales == plan and res.to_dict()["scales"] == list(plan)
    assert {r.scale for r in res.records} <= set(plan) and res.records[-1].scale == 0.621
    err = corner_error(fixed_grid, res.transform.matrix, a_true)
    assert corner_error(fixed_grid, res.initial_transform.matrix, a_true) > 3.0 and err < 0.5, err
