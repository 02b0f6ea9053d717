"""Masks restrict the similarity (every measure, the affine stage and the deformable one), change
the result inside the mask where a structure outside it does not correspond, are recorded, and
bad masks are refused before any work."""

import json
import time

import numpy as np
import pytest
import torch

from rdmm_pipelines import Grid, Image, get_preset, save_image
from rdmm_pipelines.affine import affine_register
from rdmm_pipelines.config import AffineConfig
from rdmm_pipelines.evaluation import dice_per_label, mean_dice
from rdmm_pipelines.masks import mask_on_grid
from rdmm_pipelines.registration import register
from rdmm_pipelines.similarity import SIMILARITIES, make_similarity

N = 64


def _grid_xy(n: int = N):
    ax = torch.arange(n, dtype=torch.float32)
    return torch.meshgrid(ax, ax, indexing="ij")


def _disk(cy: float, cx: float, r: float, n: int = N) -> torch.Tensor:
    y, x = _grid_xy(n)
    return ((y - cy) ** 2 + (x - cx) ** 2 <= r * r).float()


def _bar(n: int = N) -> torch.Tensor:
    y, x = _grid_xy(n)
    return ((y >= 14) & (y <= 50) & (x >= 50) & (x <= 56)).float()


@pytest.mark.parametrize("name", sorted(set(SIMILARITIES) - {"mi"}))
def test_a_weight_restricts_every_measure(name):
    torch.manual_seed(0)
    sim = make_similarity(name, (24, 24))
    a, b = torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24)
    ones = torch.ones(1, 1, 24, 24)
    assert torch.allclose(sim(a, b, ones), sim(a, b), rtol=1e-5, atol=1e-7)  # w = 1: unchanged
    w = torch.zeros(1, 1, 24, 24)
    w[..., 4:20, 4:20] = 1.0
    changed = a.clone()
    changed[..., :2, :] = torch.rand(1, 1, 2, 24)  # outside the weighted region (and its windows' centres)
    changed[..., :, -2:] = 5.0
    if name in ("ssd", "ncc"):  # point-wise measures: nothing outside counts
        assert torch.allclose(sim(changed, b, w), sim(a, b, w), rtol=1e-6, atol=1e-8)
    x = a.clone().double().requires_grad_()
    sim(x, b.double(), w.double()).sum().backward()
    if name in ("ssd", "ncc"):
        assert float(x.grad[..., 0, :].abs().max()) == 0.0
    assert float(x.grad[..., 10, 10].abs()) > 0.0
    with pytest.raises(ValueError, match="weight must be"):
        sim(a, b, torch.ones(1, 1, 23, 24))


def test_bad_masks_are_refused_before_any_work(tmp_path):
    grid = Grid.from_shape((32, 32))
    with pytest.raises(ValueError, match="fixed mask is 3D but the fixed image is 2D"):
        mask_on_grid(torch.ones(1, 8, 8, 8), grid, "fixed mask", "fixed image")
    with pytest.raises(ValueError, match="moving mask is empty"):
        mask_on_grid(torch.zeros(32, 32), grid, "moving mask", "moving image")
    far = Image(torch.ones(1, 8, 8), Grid((8, 8), np.diag([1.0, 1.0, 1.0, 1.0]) + np.array(
        [[0, 0, 0, 500.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])))
    with pytest.raises(ValueError, match="does not overlap the fixed image"):
        mask_on_grid(far, grid, "fixed mask", "fixed image")
    with pytest.raises(ValueError, match="2 channels"):
        mask_on_grid(Image(torch.ones(2, 32, 32), grid), grid, "fixed mask", "fixed image")
    img = torch.rand(1, 32, 32)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="moving mask is empty"):
        register(img, img, "lddmm", moving_mask=torch.zeros(32, 32))
    assert time.perf_counter() - t0 < 2.0


def _config(iterations=(15, 15, 10)):
    cfg = get_preset("default", "lddmm")
    return cfg.replace(affine=cfg.affine.replace(enabled=False),
                       optimizer=cfg.optimizer.replace(iterations=iterations))


def test_a_moving_mask_excluding_a_non_corresponding_structure_improves_the_result_inside(tmp_path):
    """The moving image has a bright bar the fixed image lacks, beside the disk to align: it pulls
    the disk's edge; the moving mask leaves it out and the disk is recovered better."""
    fixed, moving, bar = _disk(32, 32, 12), _disk(32, 36, 12), _bar()
    grid = Grid.from_shape((N, N))
    moving_img = Image((moving * 0.6 + bar).clamp(max=1.0)[None], grid)
    labels = Image(moving.long()[None], grid)
    scores = {}
    for name, mask in (("without", None), ("with", Image((1 - bar)[None], grid))):
        result = register(Image(fixed[None], grid), moving_img, config=_config(), moving_mask=mask)
        warped = result.apply(labels)
        scores[name] = mean_dice(dice_per_label(warped.data[0], fixed.long()))
        assert result.fold_statistics()["folding_voxels"] == 0
    assert scores["with"] > scores["without"] + 0.004, scores  # 0.972 -> 0.980, deterministic
    # recorded: the mask's voxels inside and the path
    path = save_image(Image((1 - bar)[None], grid), tmp_path / "mmask.nii.gz")
    result = register(Image(fixed[None], grid), moving_img, config=_config((2, 0, 0)), moving_mask=path)
    record = json.loads(result.save(tmp_path / "out")["record"].read_text())
    assert record["inputs"]["moving_mask"]["path"] == str(path.resolve())
    assert record["inputs"]["moving_mask"]["voxels_inside"] == int((bar == 0).sum())
    assert record["inputs"]["fixed_mask"] is None


def test_the_affine_stage_honours_the_masks():
    """A large bright blob in the moving image only: without a mask the affine is pulled towards
    it; with the moving mask the disk's translation is found."""
    grid = Grid.from_shape((N, N))
    fixed = Image(_disk(30, 30, 10)[None], grid)
    y, x = _grid_xy()
    blob = ((y - 54) ** 2 + (x - 54) ** 2 <= 8 ** 2).float()
    moving = Image((_disk(34, 27, 10) + 2.0 * blob)[None], grid)
    cfg = AffineConfig(dof="rigid")
    errors = {}
    for name, mask in (("without", None), ("with", Image((1 - blob)[None], grid))):
        est = affine_register(fixed, moving, cfg, moving_mask=mask)
        centre = grid.voxel_to_world(np.array([30.0, 30.0]))  # the fixed disk's centre, world mm
        mapped = (est.transform.matrix @ np.append(centre, 1.0))[:3]
        errors[name] = float(np.linalg.norm(mapped - grid.voxel_to_world(np.array([34.0, 27.0]))))
    assert errors["with"] < 1.0 and errors["with"] < errors["without"], errors
