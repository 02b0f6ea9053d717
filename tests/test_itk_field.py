"""Our ITK displacement field, applied by ANTs (antspyx), reproduces our own warp.

The map is given as moving voxel indices on the fixed grid; our warp is ``sample_voxel``. Fixed and
moving grids are oblique and anisotropic with different affines and shapes, so any mistake in the
LPS/RAS signs, the vector layout or the axis order shows up as a large difference.
"""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pytest
import torch

from rdmm_pipelines.core.interpolation import sample_voxel
from rdmm_pipelines.spatial import (
    Grid,
    Image,
    displacement_field_lps,
    load_itk_displacement_field,
    save_image,
    save_itk_displacement_field,
)
from geometry import rotation, make_affine

ants = pytest.importorskip("ants")
pytestmark = pytest.mark.ants


def centred(shape, rot, spacing, centre) -> Grid:
    """Grid whose central voxel sits at world ``centre``."""
    g = Grid(shape, make_affine(rot, spacing, (0.0, 0.0, 0.0)))
    mid = g.voxel_to_world((np.array(shape) - 1) / 2.0)
    return Grid(shape, make_affine(rot, spacing, np.asarray(centre) - mid))


def voxel_points(grid: Grid) -> np.ndarray:
    return grid.voxel_indices(torch.float64)[0].movedim(0, -1).numpy()


def blobs(world: np.ndarray, centre: np.ndarray, seed: int, radius: float) -> np.ndarray:
    """Smooth test image: a sum of Gaussian blobs in world coordinates."""
    rng = np.random.default_rng(seed)
    out = np.zeros(world.shape[:-1])
    plane = np.array([1.0, 1.0, 1.0 if world.ndim == 4 else 0.0])  # 2D: centres near the plane
    for _ in range(7):
        c = centre + rng.uniform(-radius, radius, 3) * plane
        s = rng.uniform(3.0, 7.0)
        out += rng.uniform(0.5, 1.0) * np.exp(-((world - c) ** 2).sum(-1) / (2 * s * s))
    return out


def check_against_ants(tmp_path, fixed: Grid, moving: Grid, target_world: np.ndarray, seed: int):
    """Warp a smooth image and a label map with our field through ANTs and compare."""
    d = fixed.ndim
    mv = torch.from_numpy(np.moveaxis(moving.world_to_voxel(target_world), -1, 0)[None])
    centre = fixed.voxel_to_world((np.array(fixed.shape) - 1) / 2.0)
    image = blobs(moving.voxel_to_world(voxel_points(moving)), centre, seed, 12.0)
    labels = np.digitize(image, [0.35, 0.7, 1.1]).astype(np.int64)
    assert len(np.unique(labels)) >= 3

    ours = sample_voxel(torch.from_numpy(image)[None, None], mv, mode="linear")[0, 0].numpy()
    ours_lab = sample_voxel(torch.from_numpy(labels).double()[None, None], mv, mode="nearest")
    ours_lab = ours_lab[0, 0].numpy().round().astype(np.int64)

    save_image(Image(torch.zeros((1, *fixed.shape)), fixed), tmp_path / "fixed.nii.gz")
    save_image(Image(torch.from_numpy(image).float()[None], moving), tmp_path / "moving.nii.gz")
    save_image(Image(torch.from_numpy(labels)[None], moving), tmp_path / "labels.nii.gz")
    field = save_itk_displacement_field(tmp_path / "field.nii.gz", fixed, mv, moving)

    f_ants = ants.image_read(str(tmp_path / "fixed.nii.gz"))
    assert f_ants.dimension == d and tuple(f_ants.shape) == fixed.shape
    warped = ants.apply_transforms(
        f_ants, ants.image_read(str(tmp_path / "moving.nii.gz")), [str(field)],
        interpolator="linear",
    ).numpy()
    warped_lab = ants.apply_transforms(
        f_ants, ants.image_read(str(tmp_path / "labels.nii.gz")), [str(field)],
        interpolator="nearestNeighbor",
    ).numpy().round().astype(np.int64)

    vox = mv[0].numpy()
    interior = np.all(
        [(vox[k] > 0.5) & (vox[k] < moving.shape[k] - 1.5) for k in range(d)], axis=0
    )
    assert interior.mean() > 0.7
    value_range = image.max() - image.min()
    diff = np.abs(warped - ours)[interior].max()
    assert diff < 1e-3 * value_range, f"ANTs and our warp differ by {diff}"
    agreement = (warped_lab == ours_lab)[interior].mean()
    assert agreement > 0.99, f"label agreement {agreement}"

    # the test has power: the deformation is far from the identity resampling
    identity = fixed.voxel_map_to(moving)
    idx = voxel_points(fixed)
    plain = np.moveaxis(idx @ identity[:d, :d].T + identity[:d, d], -1, 0)
    assert np.abs(vox - plain)[:, interior].max() > 2.0
    return field, mv


def test_ants_applies_our_3d_field(tmp_path):
    centre = np.array([-4.0, 10.0, 3.0])
    fixed = centred((20, 24, 18), rotation([1, 1, 0], 20), (1.2, 0.9, 2.0), centre)
    moving = centred((26, 26, 20), rotation([0.2, 0.3, 1], -12), (1.5, 1.4, 2.5), centre + 1.0)
    p = fixed.voxel_to_world(voxel_points(fixed))
    small = rotation([0.3, 1.0, 0.2], 4.0)
    target = (p - centre) @ small.T + centre + np.array([1.0, -2.0, 1.5])
    target = target + 2.0 * np.sin(p[..., [1, 2, 0]] / 6.0)
    field, mv = check_against_ants(tmp_path, fixed, moving, target, seed=0)

    hdr = nib.load(field).header
    assert hdr.get_intent()[0] == "vector" and int(hdr["intent_code"]) == 1007
    assert nib.load(field).shape == (20, 24, 18, 1, 3)
    grid, u = load_itk_displacement_field(field)
    assert grid.shape == fixed.shape
    np.testing.assert_allclose(grid.affine_matrix, fixed.affine_matrix, atol=1e-5)
    np.testing.assert_allclose(u, displacement_field_lps(fixed, mv, moving), atol=1e-4)
    # LPS: x and y are the negated RAS components of T(p) - p
    ras = moving.voxel_to_world(np.moveaxis(mv[0].numpy(), 0, -1)) - p
    np.testing.assert_allclose(u, ras * [-1, -1, 1], atol=1e-4)


def test_ants_applies_our_2d_field(tmp_path):
    z = 7.0
    fixed = Grid((40, 36), make_affine(rotation([0, 0, 1], 20), (1.2, 0.9, 3.0), (-10, 5, z)))
    centre = fixed.voxel_to_world((np.array(fixed.shape) - 1) / 2.0)
    moving = centred((44, 40), rotation([0, 0, 1], -15), (1.4, 1.3, 2.0), centre + [1, -1, 0])
    p = fixed.voxel_to_world(voxel_points(fixed))
    target = (p - centre) @ rotation([0, 0, 1], 5).T + centre + np.array([1.5, -1.0, 0.0])
    target[..., :2] += 2.0 * np.sin(p[..., [1, 0]] / 5.0)
    field, mv = check_against_ants(tmp_path, fixed, moving, target, seed=1)

    assert nib.load(field).shape == (40, 36, 1, 1, 2)
    grid, u = load_itk_displacement_field(field)
    assert grid.shape == (40, 36)
    ras = moving.voxel_to_world(np.moveaxis(mv[0].numpy(), 0, -1)) - p
    np.testing.assert_allclose(u, ras[..., :2] * [-1, -1], atol=1e-4)


def test_ants_applies_our_2d_field_on_an_oblique_plane(tmp_path):
    """Both slices lie in a plane tilted 30 degrees out of the axial plane (ITK's 2D geometry)."""
    tilt = rotation([1, 0.2, 0], 30)
    fixed_affine = make_affine(tilt @ rotation([0, 0, 1], 20), (1.2, 0.9, 3.0), (-10, 5, 7))
    fixed = Grid((40, 36), fixed_affine)
    centre = fixed.voxel_to_world((np.array(fixed.shape) - 1) / 2.0)
    moving = centred((44, 40), tilt @ rotation([0, 0, 1], -15), (1.4, 1.3, 2.0),
                     centre + tilt @ [1.0, -2.0, 0.0])
    idx = voxel_points(fixed)
    p = fixed.voxel_to_world(idx)
    in_plane = idx @ np.diag([1.2, 0.9]) + 2.5 * np.sin(idx[..., [1, 0]] / 6.0)
    target = p + (in_plane - idx @ np.diag([1.2, 0.9])) @ fixed.direction.T
    check_against_ants(tmp_path, fixed, moving, target, seed=2)
