"""The affine levels within ``affine.max_voxels`` (``affine.pyramid.level_factors``): which factors
run, and that a capped level still recovers a known 3D affine."""

from __future__ import annotations

import math

import numpy as np

from rdmm_pipelines.affine import affine_register
from rdmm_pipelines.affine.pyramid import _coarse_shape, level_factors
from rdmm_pipelines.config import AffineConfig
from geometry import rotation
from test_affine import FAST, Blobs, affine_about, centred_grid, corner_error, make_pair


def test_scale_plan_keeps_every_level_within_max_voxels():
    cfg = AffineConfig()  # scales 0.25, 0.5, 1; at most 2^18 voxels
    assert level_factors(cfg, (160, 384)) == (0.25, 0.5, 1.0)  # 2D images stay whole
    assert level_factors(cfg, (256, 256, 1)) == (0.25, 0.5, 1.0)
    assert level_factors(cfg, (80, 96, 112)) == (0.25, 0.5, 0.671)  # 2 mm brain: 860,160 voxels
    grid = lambda f: math.prod(_coarse_shape((80, 96, 112), f, cfg.min_size))  # noqa: E731
    assert grid(0.671) <= 2 ** 18 < grid(0.672)
    assert level_factors(cfg, (160, 192, 224)) == (0.25, 0.335, 0.0)  # 1 mm: the last would repeat 0.335
    assert level_factors(AffineConfig(max_voxels=0), (160, 192, 224)) == (0.25, 0.5, 1.0)
    assert level_factors(AffineConfig(iterations=(100, 0, 25)), (80, 96, 112)) == (0.25, 0.0, 0.671)
    assert level_factors(AffineConfig(iterations=(100, 50, 0)), (160, 384)) == (0.25, 0.5, 0.0)
    # short axes keep min_size (16): the level shrinks until its grid, floor included, fits
    assert level_factors(cfg, (512, 512, 20)) == (0.25, 0.0, 0.0)  # 128x128x16 = 2^18 already
    assert math.prod(_coarse_shape((30, 1000, 1000), level_factors(cfg, (30, 1000, 1000))[0], 16)) <= 2 ** 18
    assert level_factors(AffineConfig(max_voxels=1), (2000, 2000)) == (0.001, 0.0, 0.0)  # never 0: one level runs


def test_levels_above_max_voxels_run_smaller_and_still_recover_the_affine():
    centre = np.array([-4.0, 10.0, 3.0])
    fixed_grid = centred_grid((32, 30, 26), rotation([1, 1, 0], 20), (1.2, 1.0, 1.4), centre)
    moving_grid = centred_grid((30, 34, 28), rotation([0.2, 0.3, 1], -25), (1.4, 1.1, 1.3), centre + [3, -2, 2])
    a_true = affine_about(centre, rotation([0.3, -0.5, 1.0], 12) * 1.05, [4.0, -3.0, 2.5])
    fixed, moving = make_pair(Blobs(centre, 11.0, seed=3, planar=False), fixed_grid, moving_grid, a_true)
    cfg = FAST.replace(max_voxels=6000)  # 24,960 voxels: the finest level runs at 0.616
    plan = level_factors(cfg, fixed_grid.shape)
    assert plan == (0.25, 0.5, 0.616)  # 0.25 and 0.5 both give 16^3 (min_size), as without the limit
    res = affine_register(fixed, moving, cfg)
    assert res.scales == plan and res.to_dict()["scales"] == list(plan)
    assert {r.scale for r in res.records} <= set(plan) and res.records[-1].scale == 0.616
    err = corner_error(fixed_grid, res.transform.matrix, a_true)
    assert corner_error(fixed_grid, res.initial_transform.matrix, a_true) > 3.0 and err < 0.5, err
