"""A registration's saved transform, applied by ANTs, reproduces our own warped outputs
(3D, oblique and anisotropic grids that differ between fixed and moving, affine + deformation)."""

import numpy as np
import pytest
import torch

from rdmm_pipelines import Grid, Image, KernelConfig, OptimizerConfig, get_preset, register, save_image
from rdmm_pipelines.config import AffineConfig
from rdmm_pipelines.synthetic import make_phantom_3d

from geometry import make_affine, rotation

ants = pytest.importorskip("ants")


def oblique(spacing, deg, axis, origin) -> np.ndarray:
    return make_affine(rotation(np.eye(3)[axis], deg), spacing, origin)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    p = make_phantom_3d(seed=2, shape=(20, 22, 18))
    fixed = Image(p.target, Grid((20, 22, 18), oblique((1.5, 1.4, 1.8), 15, 2, (-14.0, -15.0, -16.0))))
    moving = Image(p.source, Grid((20, 22, 18), oblique((1.5, 1.4, 1.8), 7, 0, (-12.0, -16.0, -15.0))))
    labels = Image(p.source_labels[None], moving.grid)
    cfg = get_preset("default", "lddmm").replace(
        kernel=KernelConfig(sigmas=(0.15, 0.3), weights=(0.5, 0.5)),
        optimizer=OptimizerConfig(scales=(0.5, 1.0), iterations=(6, 6), map_low_res_factor=None),
        affine=AffineConfig(scales=(0.5, 1.0), iterations=(30, 10)))
    result = register(fixed, moving, config=cfg, device="cpu")
    out = tmp_path_factory.mktemp("ants")
    result.save(out)
    save_image(fixed, out / "fixed.nii.gz")
    save_image(moving, out / "moving.nii.gz")
    save_image(labels, out / "moving_labels.nii.gz")
    return result, labels, out


def _interior(a: np.ndarray, margin: int = 2) -> np.ndarray:
    return a[margin:-margin, margin:-margin, margin:-margin]


def test_affine_stage_ran_and_moved_the_image(saved):
    result, _, _ = saved
    assert result.affine is not None and not np.allclose(result.affine.matrix, np.eye(4), atol=1e-3)
    assert result.jacobian_determinant().data.min() > 0


def test_ants_applies_the_displacement_field_like_we_do(saved):
    result, labels, out = saved
    f = ants.image_read(str(out / "fixed.nii.gz"))
    m = ants.image_read(str(out / "moving.nii.gz"))
    theirs = ants.apply_transforms(f, m, [str(out / "displacement_itk.nii.gz")], interpolator="linear").numpy()
    ours = result.warped().data[0].numpy()
    rng = float(ours.max() - ours.min())
    assert np.abs(_interior(theirs) - _interior(ours)).max() < 1e-3 * rng
    ml = ants.image_read(str(out / "moving_labels.nii.gz"))
    lab = ants.apply_transforms(f, ml, [str(out / "displacement_itk.nii.gz")], interpolator="nearestNeighbor").numpy()
    agree = (_interior(lab).round() == _interior(result.apply(labels).data[0].numpy())).mean()
    assert agree > 0.99


def test_ants_applies_the_affine_file_like_our_affine_stage(saved):
    result, _, out = saved
    from rdmm_pipelines.core.interpolation import sample_voxel

    f = ants.image_read(str(out / "fixed.nii.gz"))
    m = ants.image_read(str(out / "moving.nii.gz"))
    theirs = ants.apply_transforms(f, m, [str(out / "affine_itk.txt")], interpolator="linear").numpy()
    vox = result.affine.moving_voxels(result.fixed.grid, result.moving.grid, dtype=torch.float64)
    ours = sample_voxel(result.moving.data[None].double(), vox, padding="zeros")[0, 0].numpy()
    rng = float(ours.max() - ours.min())
    assert np.abs(_interior(theirs) - _interior(ours)).max() < 1e-3 * rng


def test_ants_applies_the_composite_h5_like_we_do(saved):
    pytest.importorskip("h5py")
    result, labels, out = saved
    f = ants.image_read(str(out / "fixed.nii.gz"))
    m = ants.image_read(str(out / "moving.nii.gz"))
    theirs = ants.apply_transforms(f, m, [str(out / "transform_composite.h5")], interpolator="linear").numpy()
    ours = result.warped().data[0].numpy()
    rng = float(ours.max() - ours.min())
    assert np.abs(_interior(theirs) - _interior(ours)).max() < 1e-3 * rng
    ml = ants.image_read(str(out / "moving_labels.nii.gz"))
    lab = ants.apply_transforms(f, ml, [str(out / "transform_composite.h5")], interpolator="nearestNeighbor").numpy()
    assert (_interior(lab).round() == _interior(result.apply(labels).data[0].numpy())).mean() > 0.99
