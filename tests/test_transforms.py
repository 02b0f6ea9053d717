"""rdmm_pipelines.transforms: dense transforms, their inverse and the ITK HDF5 composite.

Grids are oblique and anisotropic with different affines and shapes for fixed and moving, the
affine is far from the identity and the deformation is a smooth analytic map, so a mistake in
LPS/RAS signs, axis order, parameter layout or the order of the composite shows up as a large
difference. ANTs (antspyx) and SimpleITK are the references for the file formats.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rdmm_pipelines.affine import AffineTransform
from rdmm_pipelines.core.interpolation import sample_voxel
from rdmm_pipelines.spatial import Grid, Image, save_image
from geometry import make_affine, rotation

from rdmm_pipelines.transforms import (
    DenseTransform,
    deformation_voxels_from_domain,
    invert,
    read_itk_transform_h5,
    save_itk_composite,
    save_result_composite,
)


# ---------------------------------------------------------------------------- geometry helpers
def centred(shape, rot, spacing, centre) -> Grid:
    """Grid whose central voxel sits at world ``centre``."""
    spacing = tuple(spacing) + (1.0,) * (3 - len(spacing))
    g = Grid(shape, make_affine(rot, spacing, (0.0, 0.0, 0.0)))
    mid = g.voxel_to_world((np.array(shape) - 1) / 2.0)
    return Grid(shape, make_affine(rot, spacing, np.asarray(centre) - mid))


def voxel_points(grid: Grid) -> np.ndarray:
    return grid.voxel_indices(torch.float64)[0].movedim(0, -1).numpy()


def world_of(grid: Grid) -> np.ndarray:
    return grid.voxel_to_world(voxel_points(grid))


def to_map(vox_last: np.ndarray) -> torch.Tensor:
    """(*S, d) numpy -> (1, d, *S) float64 tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(vox_last, -1, 0))[None])


def blobs(world: np.ndarray, centre: np.ndarray, seed: int, radius: float, sizes=(3.0, 7.0)):
    """Smooth test image: a sum of Gaussian blobs in world coordinates (2D: near the plane)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(world.shape[:-1])
    plane = np.array([1.0, 1.0, 1.0 if world.ndim == 4 else 0.0])
    for _ in range(7):
        c = centre + rng.uniform(-radius, radius, 3) * plane
        s = rng.uniform(*sizes)
        out += rng.uniform(0.5, 1.0) * np.exp(-((world - c) ** 2).sum(-1) / (2 * s * s))
    return out


def interior(vox: np.ndarray, shape, margin: float = 0.5) -> np.ndarray:
    """(d, *S) voxel indices -> mask of those at least ``margin`` inside ``shape``'s voxel box."""
    return np.all([(vox[k] > margin) & (vox[k] < n - 1 - margin) for k, n in enumerate(shape)],
                  axis=0)


def to_lps(p: np.ndarray) -> np.ndarray:
    return p * np.array([-1.0, -1.0, 1.0])


class Case(SimpleNamespace):
    """fixed, moving: grids; affine: A; phi: fixed world -> fixed world (numpy callable)."""

    def deformation_voxels(self) -> torch.Tensor:
        return to_map(self.fixed.world_to_voxel(self.phi(world_of(self.fixed))))

    def moving_voxels(self) -> torch.Tensor:
        return to_map(self.moving.world_to_voxel(self.T(world_of(self.fixed))))

    def T(self, p: np.ndarray) -> np.ndarray:
        return self.affine.apply(self.phi(p))

    def dense(self) -> DenseTransform:
        return DenseTransform(self.fixed, self.moving, self.moving_voxels())


def case_3d() -> Case:
    centre = np.array([-4.0, 10.0, 3.0])
    fixed = centred((18, 20, 16), rotation([1, 1, 0], 20), (1.2, 0.9, 2.0), centre)
    moving = centred((24, 24, 18), rotation([0.2, 0.3, 1], -12), (1.5, 1.4, 2.5), centre + 1.0)
    lin = rotation([0.3, 1.0, 0.2], 7.0) @ np.diag([1.06, 0.95, 1.02])
    m = np.eye(4)
    m[:3, :3] = lin
    m[:3, 3] = centre + np.array([1.0, -2.0, 1.5]) - lin @ centre
    return Case(fixed=fixed, moving=moving, affine=AffineTransform(m),
                phi=lambda p: p + 2.0 * np.sin(p[..., [1, 2, 0]] / 6.0), centre=centre)


def case_2d() -> Case:
    z = 7.0
    fixed = Grid((40, 36), make_affine(rotation([0, 0, 1], 20), (1.2, 0.9, 3.0), (-10, 5, z)))
    centre = fixed.voxel_to_world((np.array(fixed.shape) - 1) / 2.0)
    moving = centred((46, 42), rotation([0, 0, 1], -15), (1.4, 1.3, 2.0), centre + [1, -1, 0])
    lin = rotation([0, 0, 1], 9.0) @ np.diag([1.08, 0.93, 1.0])
    m = np.eye(4)
    m[:3, :3] = lin
    m[:3, 3] = centre + np.array([1.5, -1.0, 0.0]) - lin @ centre

    def phi(p):
        out = p.copy()
        out[..., :2] += 2.0 * np.sin(p[..., [1, 0]] / 5.0)
        return out

    return Case(fixed=fixed, moving=moving, affine=AffineTransform(m, ndim=2), phi=phi,
                centre=centre)


# ---------------------------------------------------------------------------- DenseTransform
def test_dense_apply_world_points_and_field_round_trip(tmp_path):
    c = case_3d()
    t = c.dense()
    assert t.ndim == 3 and t.moving_voxels.shape == (1, 3, *c.fixed.shape)

    # the same analytic image on two different grids of moving space warps to the same result
    other = centred((30, 28, 26), rotation([1, 0, 0.5], 33), (1.1, 1.2, 1.3), c.centre + 0.5)
    f = lambda w: blobs(w, c.centre, seed=3, radius=10.0, sizes=(6.0, 9.0))
    on_moving = Image(torch.from_numpy(f(world_of(c.moving))).float()[None], c.moving)
    on_other = Image(torch.from_numpy(f(world_of(other))).float()[None], other)
    truth = f(c.T(world_of(c.fixed)))
    a, b = t.apply(on_moving).data[0].numpy(), t.apply(on_other).data[0].numpy()
    assert t.apply(on_moving).grid == c.fixed
    mask = interior(t.moving_voxels[0].numpy(), c.moving.shape, 1.0) & interior(
        t.voxels_into(other)[0].numpy(), other.shape, 1.0)
    assert mask.mean() > 0.5
    assert np.abs(a - truth)[mask].max() < 0.03 * truth.max()
    assert np.abs(b - truth)[mask].max() < 0.03 * truth.max()

    # label maps: nearest neighbour, integer dtype kept, zero outside
    labels = Image(torch.from_numpy(np.digitize(on_moving.data[0].numpy(), [0.3, 0.6]))[None],
                   c.moving)
    warped = t.apply(labels)
    assert warped.data.dtype == labels.data.dtype
    assert set(np.unique(warped.data.numpy())) <= {0, 1, 2}
    with pytest.raises(ValueError):
        t.apply(labels, interpolation="linear")

    # world points: exact for an affine-only map, NaN outside the fixed grid
    ta = DenseTransform(c.fixed, c.moving, c.affine.moving_voxels(c.fixed, c.moving, torch.float64))
    rng = np.random.default_rng(0)
    pts = c.fixed.voxel_to_world(rng.uniform(0, 1, (50, 3)) * (np.array(c.fixed.shape) - 1))
    np.testing.assert_allclose(ta.world_points(pts), c.affine.apply(pts), atol=1e-8)
    out = ta.world_points(c.fixed.voxel_to_world(np.array([[-1.0, 2.0, 2.0], [2.0, 2.0, 15.5]])))
    assert np.isnan(out).all()
    # ... and within the interpolation error of the analytic T for the deformation
    assert np.abs(t.world_points(pts) - c.T(pts)).max() < 0.1

    # displacement-field file round trip, and from_result
    path = t.save_displacement_field(tmp_path / "field.nii.gz")
    back = DenseTransform.from_displacement_field(path, c.moving)
    assert back.fixed_grid.shape == c.fixed.shape
    np.testing.assert_allclose(back.moving_voxels.numpy(), t.moving_voxels.numpy(), atol=1e-4)
    stub = SimpleNamespace(fixed=SimpleNamespace(grid=c.fixed),
                           moving=SimpleNamespace(grid=c.moving),
                           moving_voxels=lambda: t.moving_voxels.float())
    r = DenseTransform.from_result(stub)
    assert r.fixed_grid == c.fixed and r.moving_grid == c.moving
    np.testing.assert_allclose(r.moving_voxels.numpy(), t.moving_voxels.numpy(), atol=1e-4)
    with pytest.raises(ValueError):
        DenseTransform(c.fixed, c.moving, t.moving_voxels[:, :, :-1])


def test_dense_field_round_trip_2d_oblique_plane(tmp_path):
    tilt = rotation([1, 0.2, 0], 30)
    fixed = Grid((20, 18),
                 make_affine(tilt @ rotation([0, 0, 1], 20), (1.2, 0.9, 3.0), (-10, 5, 7)))
    moving = Grid((22, 20), make_affine(tilt @ rotation([0, 0, 1], -15), (1.4, 1.3, 2.0),
                                        fixed.voxel_to_world(np.array([1.0, -2.0]))))
    idx = voxel_points(fixed)
    p = fixed.voxel_to_world(idx + 1.5 * np.sin(idx[..., [1, 0]] / 4.0))
    t = DenseTransform(fixed, moving, to_map(moving.world_to_voxel(p)))
    back = DenseTransform.from_displacement_field(
        t.save_displacement_field(tmp_path / "f2.nii.gz"), moving)
    np.testing.assert_allclose(back.moving_voxels.numpy(), t.moving_voxels.numpy(), atol=1e-4)


# ---------------------------------------------------------------------------- inverse
def test_inverse_3d_round_trip_and_ants(tmp_path, caplog):
    c = case_3d()
    t = c.dense()
    with caplog.at_level(logging.WARNING, logger="rdmm_pipelines.transforms.inverse"):
        inv, report = invert(t, return_report=True)
    assert not caplog.records
    assert report.converged and report.residual_max_mm <= report.tol_mm
    assert inv.fixed_grid == c.moving and inv.moving_grid == c.fixed
    x = inv.moving_voxels[0].numpy()  # fixed voxel indices of T^-1(q), q on the moving grid
    inside = interior(x, c.fixed.shape, 1.0)
    assert inside.mean() > 0.1 and report.outside_fraction > 0.1

    q = voxel_points(c.moving)
    # T(T^-1(q)) = q through our interpolated T ...
    tq = sample_voxel(t.moving_voxels, inv.moving_voxels, mode="linear")[0].numpy()
    assert np.abs(tq - np.moveaxis(q, -1, 0))[:, inside].max() < 0.05
    # ... and through the analytic T (includes T's interpolation error between fixed voxels)
    tq_exact = c.moving.world_to_voxel(c.T(c.fixed.voxel_to_world(np.moveaxis(x, 0, -1))))
    assert np.abs(tq_exact - q)[inside].max() < 0.05
    # power: T^-1 is far from the world-identity resampling
    plain = c.moving.voxel_map_to(c.fixed)
    assert np.abs(np.moveaxis(x, 0, -1) - (q @ plain[:3, :3].T + plain[:3, 3]))[inside].max() > 2

    # fixed image -> moving grid -> fixed grid round trip of a smooth image
    f = blobs(world_of(c.fixed), c.centre, seed=4, radius=8.0, sizes=(8.0, 12.0))
    fixed_img = Image(torch.from_numpy(f).float()[None], c.fixed)
    on_moving = inv.apply(fixed_img)
    assert on_moving.grid == c.moving
    back = t.apply(on_moving).data[0].numpy()
    # fixed voxels whose image T(p) is well inside the moving grid and has its preimage inside
    mv = t.moving_voxels[0].numpy()
    pre = sample_voxel(inv.moving_voxels, t.moving_voxels, mode="linear")[0].numpy()
    ok = interior(mv, c.moving.shape, 1.0) & interior(pre, c.fixed.shape, 1.5)
    assert ok.mean() > 0.3
    assert np.abs(back - f)[ok].max() < 0.03 * f.max()  # two linear interpolations
    assert np.abs(back - f)[ok].mean() < 0.01 * f.max()

    # ANTs applies the inverse field (on the moving grid) to the fixed image as we do
    ants = pytest.importorskip("ants")
    save_image(fixed_img, tmp_path / "fixed.nii.gz")
    save_image(Image(torch.zeros((1, *c.moving.shape)), c.moving), tmp_path / "moving.nii.gz")
    field = inv.save_displacement_field(tmp_path / "inverse_field.nii.gz")
    warped = ants.apply_transforms(
        ants.image_read(str(tmp_path / "moving.nii.gz")),
        ants.image_read(str(tmp_path / "fixed.nii.gz")),
        [str(field)], interpolator="linear").numpy()
    ours = on_moving.data[0].numpy()
    assert np.abs(warped - ours)[inside].max() < 1e-3 * f.max()


def test_inverse_handles_a_large_affine_and_warns_on_folds(caplog):
    grid = Grid.from_shape((24, 20), (1.0, 1.5))
    idx = voxel_points(grid)
    # 90 degree rotation with scaling (too large for plain x = q - u(x)) plus a smooth warp
    m = np.eye(4)
    m[:3, :3] = rotation([0, 0, 1], 90) @ np.diag([1.3, 0.8, 1.0])
    m[:3, 3] = [30.0, 2.0, 0.0]
    a = AffineTransform(m, ndim=2)
    w = grid.voxel_to_world(idx + 0.8 * np.sin(idx[..., [1, 0]] / 3.0))
    moving = Grid.from_shape((30, 30), (1.2, 1.2), (-5.0, -5.0))
    t = DenseTransform(grid, moving, to_map(moving.world_to_voxel(a.apply(w))))
    inv, report = invert(t, return_report=True)
    assert report.converged and report.iterations < 30
    inside = interior(inv.moving_voxels[0].numpy(), grid.shape, 0.5)
    tq = sample_voxel(t.moving_voxels, inv.moving_voxels, mode="linear")[0].numpy()
    assert inside.mean() > 0.2
    assert np.abs(tq - np.moveaxis(voxel_points(moving), -1, 0))[:, inside].max() < 0.05

    # a folding map cannot be inverted: a warning and converged=False
    folded = DenseTransform(grid, grid, to_map(idx + 4.0 * np.sin(idx[..., [1, 0]] / 2.0)))
    with caplog.at_level(logging.WARNING, logger="rdmm_pipelines.transforms.inverse"):
        _, bad = invert(folded, iterations=10, return_report=True)
    assert not bad.converged and bad.unconverged_fraction > 0
    assert any("did not converge" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------- ITK composite
def check_composite(tmp_path, c: Case, seed: int):
    """Write the composite, apply it with ANTs, read it with SimpleITK, compare with ours."""
    pytest.importorskip("h5py")
    ants = pytest.importorskip("ants")
    sitk = pytest.importorskip("SimpleITK")
    d = c.fixed.ndim
    path = save_itk_composite(tmp_path / "composite.h5", c.fixed, c.moving, c.affine,
                              c.deformation_voxels())

    # layout: composite, then the affine, then the displacement field
    entries = read_itk_transform_h5(path)
    assert [e[0] for e in entries] == [f"CompositeTransform_double_{d}_{d}",
                                       f"AffineTransform_double_{d}_{d}",
                                       f"DisplacementFieldTransform_double_{d}_{d}"]
    params, _ = c.affine.itk_parameters(entries[1][2])
    np.testing.assert_allclose(entries[1][1], params)
    assert entries[2][1].size == d * c.fixed.numel
    np.testing.assert_array_equal(entries[2][2][:d], c.fixed.shape)

    # ANTs warps an image and a label map as our sample_voxel does
    mv = c.moving_voxels()
    centre = c.fixed.voxel_to_world((np.array(c.fixed.shape) - 1) / 2.0)
    image = blobs(world_of(c.moving), centre, seed, 12.0)
    labels = np.digitize(image, [0.35, 0.7, 1.1]).astype(np.int64)
    assert len(np.unique(labels)) >= 3
    ours = sample_voxel(torch.from_numpy(image)[None, None], mv, mode="linear")[0, 0].numpy()
    ours_lab = sample_voxel(torch.from_numpy(labels).double()[None, None], mv, mode="nearest")
    ours_lab = ours_lab[0, 0].numpy().round().astype(np.int64)
    save_image(Image(torch.zeros((1, *c.fixed.shape)), c.fixed), tmp_path / "fixed.nii.gz")
    save_image(Image(torch.from_numpy(image).float()[None], c.moving), tmp_path / "moving.nii.gz")
    save_image(Image(torch.from_numpy(labels)[None], c.moving), tmp_path / "labels.nii.gz")
    f_ants = ants.image_read(str(tmp_path / "fixed.nii.gz"))
    warped = ants.apply_transforms(f_ants, ants.image_read(str(tmp_path / "moving.nii.gz")),
                                   [str(path)], interpolator="linear").numpy()
    warped_lab = ants.apply_transforms(
        f_ants, ants.image_read(str(tmp_path / "labels.nii.gz")), [str(path)],
        interpolator="nearestNeighbor").numpy().round().astype(np.int64)
    inside = interior(mv[0].numpy(), c.moving.shape, 0.5)
    assert inside.mean() > 0.6
    value_range = image.max() - image.min()
    diff = np.abs(warped - ours)[inside].max()
    assert diff < 1e-3 * value_range, f"ANTs and our warp differ by {diff}"
    assert (warped_lab == ours_lab)[inside].mean() > 0.99

    # SimpleITK reads the file and maps points as T = A o phi (not phi o A)
    tx = sitk.CompositeTransform(sitk.ReadTransform(str(path)))
    assert tx.GetNumberOfTransforms() == 2
    dense = DenseTransform(c.fixed, c.moving, mv)
    rng = np.random.default_rng(seed)
    idx = rng.uniform(0.5, 1, (40, d)) * (np.array(c.fixed.shape) - 1) * 0.9
    pts = c.fixed.voxel_to_world(idx)
    ours_pts = to_lps(dense.world_points(pts))[:, :d]
    theirs = np.array([tx.TransformPoint(tuple(map(float, to_lps(p)[:d]))) for p in pts])
    np.testing.assert_allclose(theirs, ours_pts, atol=1e-6)
    reversed_order = np.array([tx.GetNthTransform(1).TransformPoint(
        tx.GetNthTransform(0).TransformPoint(tuple(map(float, to_lps(p)[:d])))) for p in pts])
    assert np.linalg.norm(reversed_order - ours_pts, axis=1).max() > 0.5
    # the test has power: the deformation and the affine both matter
    plain = c.fixed.voxel_map_to(c.moving)
    vox = np.moveaxis(mv[0].numpy(), 0, -1)
    idx_all = voxel_points(c.fixed)
    assert np.abs(vox - (idx_all @ plain[:d, :d].T + plain[:d, d]))[inside].max() > 2.0
    aff_only = c.affine.moving_voxels(c.fixed, c.moving, torch.float64)[0].numpy()
    assert np.abs(mv[0].numpy() - aff_only)[:, inside].max() > 1.0
    return path


def test_itk_composite_3d(tmp_path):
    check_composite(tmp_path, case_3d(), seed=0)


def test_itk_composite_2d(tmp_path):
    check_composite(tmp_path, case_2d(), seed=1)


def test_composite_from_a_result_and_errors(tmp_path):
    pytest.importorskip("h5py")
    c = case_3d()
    h = torch.tensor(c.fixed.domain_spacing, dtype=torch.float64).view(1, 3, 1, 1, 1)
    phi = c.deformation_voxels() * h  # fixed-domain coordinates, as RegistrationResult.phi
    np.testing.assert_allclose(deformation_voxels_from_domain(phi.float(), c.fixed).numpy(),
                               c.deformation_voxels().numpy(), atol=1e-4)
    stub = SimpleNamespace(fixed=SimpleNamespace(grid=c.fixed),
                           moving=SimpleNamespace(grid=c.moving),
                           affine=None, phi=phi)
    path = save_result_composite(tmp_path / "r.h5", stub)
    entries = read_itk_transform_h5(path)
    np.testing.assert_allclose(entries[1][1], [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], atol=1e-12)
    with pytest.raises(ValueError):
        save_itk_composite(path, c.fixed, c.moving, None, c.deformation_voxels(), overwrite=False)
    assert not list(tmp_path.glob(".*tmp*"))
    # 2D composites need axial planes
    tilt = Grid((10, 12), make_affine(rotation([1, 0, 0], 30), (1.0, 1.0, 1.0), (0, 0, 0)))
    with pytest.raises(ValueError, match="axial"):
        save_itk_composite(tmp_path / "t.h5", tilt, tilt, None, tilt.voxel_indices(torch.float64))
