"""Spatial layer: grid conventions, NIfTI I/O and its errors, normalisation, world resampling."""

from __future__ import annotations

import gzip
import hashlib

import nibabel as nib
import numpy as np
import pytest
import torch

from rdmm_pipelines.spatial import io as io_module
from rdmm_pipelines.spatial import (
    Grid,
    Image,
    displacement_field_lps,
    domain_map_to_moving_voxels,
    load_itk_displacement_field,
    load_image,
    load_labels,
    normalize_intensity,
    resample_to_grid,
    save_image,
    save_itk_displacement_field,
)
from geometry import rotation, make_affine


OBLIQUE = make_affine(rotation([1, 2, 0.5], 25), (1.2, 0.9, 2.0), (-30.0, 12.0, 5.5))


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---------------------------------------------------------------------------------------- Grid
def test_grid_properties_oblique_anisotropic():
    g = Grid((20, 30, 10), OBLIQUE)
    assert g.ndim == 3
    np.testing.assert_allclose(g.spacing, [1.2, 0.9, 2.0])
    lengths = (np.array(g.shape) - 1) * g.spacing  # 22.8, 26.1, 18
    assert g.domain_scale == pytest.approx(26.1)
    np.testing.assert_allclose(g.domain_spacing, g.spacing / 26.1)
    assert max(g.extent) == pytest.approx(1.0)
    np.testing.assert_allclose(g.extent, lengths / 26.1)
    assert hash(g) == hash(Grid((20, 30, 10), OBLIQUE)) and g == Grid((20, 30, 10), OBLIQUE)
    idx = np.random.default_rng(0).uniform(-2, 30, size=(5, 7, 3))
    np.testing.assert_allclose(g.world_to_voxel(g.voxel_to_world(idx)), idx, atol=1e-10)
    np.testing.assert_allclose(g.voxel_to_world(np.zeros(3)), OBLIQUE[:3, 3])


def test_grid_identity_map_and_validation():
    g = Grid.from_shape((5, 9), spacing=(2.0, 0.5))
    phi = g.identity_map(torch.float64)
    assert phi.shape == (1, 2, 5, 9)
    h = g.domain_spacing  # L = max(4*2, 8*0.5) = 8
    assert h == pytest.approx((0.25, 0.0625))
    assert phi[0, 0, 4, 0] == pytest.approx(1.0) and phi[0, 1, 0, 8] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no extent"):
        Grid.from_shape((1, 1)).domain_scale
    with pytest.raises(ValueError, match="2 or 3"):
        Grid((4,), np.eye(4))
    with pytest.raises(ValueError, match="singular"):
        Grid((4, 4, 4), np.diag([1.0, 0.0, 1.0, 1.0]))


def test_2d_grid_world_mapping():
    a = make_affine(rotation([0, 0, 1], 30), (0.8, 1.5, 3.0), (1.0, 2.0, 7.0))
    g = Grid((16, 12), a)
    np.testing.assert_allclose(g.voxel_to_world(np.array([2.0, 3.0])), (a @ [2, 3, 0, 1])[:3])
    np.testing.assert_allclose(g.spacing, [0.8, 1.5])
    pts = g.voxel_to_world(np.array([[1.5, 2.5], [10.0, -1.0]]))
    np.testing.assert_allclose(g.world_to_voxel(pts), [[1.5, 2.5], [10.0, -1.0]], atol=1e-12)


@pytest.mark.parametrize("new_shape", [(39, 11, 5), (7, 61, 19)])
def test_resized_keeps_end_voxel_centres(new_shape):
    g = Grid((20, 30, 10), OBLIQUE)
    r = g.resized(new_shape)
    assert r.shape == new_shape
    first, last = np.zeros(3), np.array(g.shape) - 1.0
    np.testing.assert_allclose(r.voxel_to_world(np.zeros(3)), g.voxel_to_world(first), atol=1e-10)
    np.testing.assert_allclose(
        r.voxel_to_world(np.array(new_shape) - 1.0), g.voxel_to_world(last), atol=1e-10
    )
    np.testing.assert_allclose(r.direction, g.direction, atol=1e-12)
    np.testing.assert_allclose(r.extent, g.extent, atol=1e-12)  # same box, same domain


def test_scaled():
    g = Grid((20, 31, 1), OBLIQUE)
    s = g.scaled(0.5)
    assert s.shape == (10, 16, 1)
    assert g.scaled(0.01).shape == (2, 2, 1)
    np.testing.assert_allclose(s.spacing[2], g.spacing[2])


def test_voxel_map_to_matches_world_round_trip():
    g1 = Grid((20, 30, 10), OBLIQUE)
    g2 = Grid((15, 12, 25), make_affine(rotation([0.2, -1, 1], -40), (0.7, 1.9, 1.1), (4, -3, 8)))
    m = g1.voxel_map_to(g2)
    idx = np.random.default_rng(1).uniform(0, 20, size=(50, 3))
    expected = g2.world_to_voxel(g1.voxel_to_world(idx))
    np.testing.assert_allclose(idx @ m[:3, :3].T + m[:3, 3], expected, atol=1e-10)
    np.testing.assert_allclose(g2.voxel_map_to(g1) @ m, np.eye(4), atol=1e-12)


def test_voxel_map_to_2d_common_plane_and_not():
    a1 = make_affine(rotation([0, 0, 1], 20), (1.2, 0.9, 3.0), (0, 0, 5.0))
    a2 = make_affine(rotation([0, 0, 1], -35), (0.6, 1.4, 2.0), (7, -2, 5.0))
    g1, g2 = Grid((30, 20), a1), Grid((25, 40), a2)
    m = g1.voxel_map_to(g2)
    assert m.shape == (3, 3)
    idx = np.random.default_rng(2).uniform(0, 20, size=(20, 2))
    np.testing.assert_allclose(
        idx @ m[:2, :2].T + m[:2, 2], g2.world_to_voxel(g1.voxel_to_world(idx)), atol=1e-10
    )
    a3 = a2.copy()
    a3[2, 3] = 9.0  # parallel plane, 4 mm away
    with pytest.raises(ValueError, match="common plane"):
        g1.voxel_map_to(Grid((25, 40), a3))


def test_domain_map_to_moving_voxels_identity_and_grad():
    fixed = Grid((12, 10, 8), OBLIQUE)
    moving = Grid((9, 14, 11), make_affine(rotation([1, 0, 0], 15), (1.5, 1.0, 1.7), (-28, 10, 4)))
    phi = fixed.identity_map(torch.float64).requires_grad_(True)
    mv = domain_map_to_moving_voxels(phi, fixed, moving)
    idx = fixed.voxel_indices(torch.float64)[0].movedim(0, -1).numpy()
    expected = moving.world_to_voxel(fixed.voxel_to_world(idx))
    np.testing.assert_allclose(mv[0].movedim(0, -1).detach().numpy(), expected, atol=1e-9)
    mv.sum().backward()
    assert phi.grad is not None and torch.isfinite(phi.grad).all()


# ---------------------------------------------------------------------------------------- I/O
def test_nifti_round_trip_3d_multichannel_and_labels(tmp_path):
    grid = Grid((6, 7, 5), OBLIQUE)
    data = torch.rand(1, *grid.shape)
    path = save_image(Image(data, grid), tmp_path / "img.nii.gz")
    back = load_image(path)
    assert back.data.dtype == torch.float32 and back.grid.shape == grid.shape
    torch.testing.assert_close(back.data, data)
    np.testing.assert_allclose(back.grid.affine_matrix, OBLIQUE, atol=1e-5)
    two = save_image(Image(torch.rand(2, *grid.shape), grid), tmp_path / "two.nii")
    assert nib.load(two).shape == (6, 7, 5, 2) and load_image(two).channels == 2
    labels = torch.randint(0, 300, (1, *grid.shape))
    lpath = save_image(Image(labels, grid), tmp_path / "lab.nii.gz")
    assert nib.load(lpath).get_data_dtype() == np.int16
    back_l = load_labels(lpath)
    assert back_l.data.dtype == torch.int64 and torch.equal(back_l.data, labels)
    with pytest.raises(ValueError, match="img.nii.gz.*non-integer"):
        load_labels(path)


def test_nifti_round_trip_2d(tmp_path):
    a = make_affine(rotation([0, 0, 1], 30), (0.8, 1.5, 3.0), (1.0, 2.0, 7.0))
    grid = Grid((16, 12), a)
    data = torch.rand(1, 16, 12)
    path = save_image(Image(data, grid), tmp_path / "slice.nii.gz")
    stored = nib.load(path)
    assert stored.shape == (16, 12)
    hdr = stored.header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    assert hdr.get_xyzt_units()[0] == "mm"
    back = load_image(path)
    assert back.grid.shape == (16, 12)
    torch.testing.assert_close(back.data, data)
    np.testing.assert_allclose(back.grid.affine_matrix, a, atol=1e-5)
    # (X, Y, 1) on disk is also a 2D image
    nib.save(nib.Nifti1Image(data[0].numpy()[:, :, None], a), tmp_path / "xy1.nii")
    assert load_image(tmp_path / "xy1.nii").grid.shape == (16, 12)
    # 2D with channels: (X, Y, 1, C)
    two = save_image(Image(torch.rand(3, 16, 12), grid), tmp_path / "rgb.nii.gz")
    assert nib.load(two).shape == (16, 12, 1, 3) and load_image(two).grid.shape == (16, 12)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        load_image(tmp_path / "missing.nii.gz")
    text = tmp_path / "text.nii.gz"
    text.write_text("this is not an image\n")
    with pytest.raises(ValueError, match="text.nii.gz"):
        load_image(text)
    gz_text = tmp_path / "gztext.nii.gz"
    gz_text.write_bytes(gzip.compress(b"not a nifti header at all" * 40))
    with pytest.raises(ValueError, match="gztext.nii.gz"):
        load_image(gz_text)
    good = save_image(Image(torch.rand(1, 20, 20, 20), Grid.from_shape((20, 20, 20))),
                      tmp_path / "good.nii.gz")
    blob = good.read_bytes()
    trunc = tmp_path / "trunc.nii.gz"
    trunc.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="trunc.nii.gz"):
        load_image(trunc)
    arr = np.random.rand(5, 5, 5).astype(np.float32)
    arr[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(ValueError, match="nan.nii.gz.*NaN"):
        load_image(tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 0, 3), np.float32), np.eye(4)), tmp_path / "empty.nii")
    with pytest.raises(ValueError, match="empty.nii.*zero voxels"):
        load_image(tmp_path / "empty.nii")
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4, 5, 6), np.float32), np.eye(4)), tmp_path / "5d.nii")
    with pytest.raises(ValueError, match="5d.nii.*shape"):
        load_image(tmp_path / "5d.nii")
    with pytest.raises(ValueError, match="NIfTI file name"):
        save_image(Image(torch.rand(1, 4, 4), Grid.from_shape((4, 4))), tmp_path / "x.png")


def test_save_is_atomic_and_respects_overwrite(tmp_path):
    grid = Grid((8, 9, 7), OBLIQUE)
    src = save_image(Image(torch.rand(1, *grid.shape), grid), tmp_path / "input.nii.gz")
    before = sha256(src)
    image = load_image(src)
    out = save_image(normalize_intensity(image), tmp_path / "output.nii.gz")
    assert sha256(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.nii.gz", "output.nii.gz"]
    with pytest.raises(ValueError, match="input.nii.gz.*overwrite"):
        save_image(image, src, overwrite=False)
    assert sha256(src) == before
    save_image(image, out)  # overwrite=True replaces in one step
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.nii.gz", "output.nii.gz"]
    with pytest.raises(ValueError, match="int32"):
        save_image(Image(torch.full((1, 3, 3), 2**40, dtype=torch.int64), Grid.from_shape((3, 3))),
                   tmp_path / "big.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.nii.gz", "output.nii.gz"]


def test_failed_write_leaves_target_and_no_temporary(tmp_path, monkeypatch):
    grid = Grid((8, 9, 7), OBLIQUE)
    target = save_image(Image(torch.rand(1, *grid.shape), grid), tmp_path / "target.nii.gz")
    before = sha256(target)

    def half_write(img, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(io_module.nib, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_image(Image(torch.rand(1, *grid.shape), grid), target)
    assert sha256(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["target.nii.gz"]


# ---------------------------------------------------------------------------------- intensity
def test_normalize_intensity_maps_percentiles():
    x = torch.linspace(0, 1000, 100001, dtype=torch.float64)[None]
    y = normalize_intensity(x, lower=1.0, upper=99.0)
    lo, hi = np.percentile(x.numpy(), [1.0, 99.0])  # 10 and 990
    expected = np.clip((x.numpy() - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-12)
    assert y.dtype == x.dtype and y.min() == 0.0 and y.max() == 1.0
    assert int((y == 0).sum()) == 1001 and int((y == 1).sum()) == 1001
    image = Image(torch.rand(1, 10, 12) * 50 + 3, Grid.from_shape((10, 12)))
    out = normalize_intensity(image)
    lo, hi = np.percentile(image.data.numpy().astype(np.float64), [0.1, 99.9])
    np.testing.assert_allclose(
        out.data.numpy(), np.clip((image.data.numpy() - lo) / (hi - lo), 0, 1), atol=1e-6
    )
    assert isinstance(out, Image) and out.grid == image.grid


def test_normalize_intensity_mask_and_constant():
    data = torch.zeros(1, 10, 10)
    data[0, :5] = torch.linspace(10, 20, 50).reshape(5, 10)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[:5] = True
    out = normalize_intensity(data, lower=0.0, upper=100.0, mask=mask)
    assert float(out[0, 0, 0]) == 0.0 and float(out[0, 4, 9]) == 1.0
    assert float(out[0, 9, 9]) == 0.0  # below the mask's minimum: clamped
    with pytest.raises(ValueError, match="constant"):
        normalize_intensity(torch.full((1, 8, 8), 3.0))
    with pytest.raises(ValueError, match="constant"):
        normalize_intensity(Image(torch.full((1, 4, 4, 4), -1.0), Grid.from_shape((4, 4, 4))))


def test_normalize_intensity_large_input_uses_exact_percentiles():
    x = torch.rand(2**24 + 10, generator=torch.Generator().manual_seed(0))
    y = normalize_intensity(x, lower=10.0, upper=90.0)
    lo, hi = np.percentile(x.numpy().astype(np.float64), [10.0, 90.0])
    assert float(y[0]) == pytest.approx(min(max((float(x[0]) - lo) / (hi - lo), 0), 1), abs=1e-6)


# -------------------------------------------------------------------------------- resampling
def _analytic(points: np.ndarray) -> np.ndarray:
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return 0.3 * x - 0.2 * y + 0.5 * z + 1.0  # linear: trilinear interpolation is exact


def test_resample_onto_shifted_grid_equals_shifted_image():
    grid = Grid((16, 14, 12), OBLIQUE)
    world = grid.voxel_to_world(grid.voxel_indices(torch.float64)[0].movedim(0, -1).numpy())
    image = Image(torch.from_numpy(_analytic(world))[None], grid)
    shift = np.array([1.3, -0.7, 2.1])  # mm
    a = grid.affine_matrix
    a[:3, 3] += shift
    shifted = Grid(grid.shape, a)
    out = resample_to_grid(image, shifted, mode="linear", padding="zeros")
    expected = _analytic(shifted.voxel_to_world(
        shifted.voxel_indices(torch.float64)[0].movedim(0, -1).numpy()))
    inside = shifted.voxel_indices(torch.float64)[0].movedim(0, -1).numpy()
    vox_in_src = grid.world_to_voxel(shifted.voxel_to_world(inside))
    ok = np.all((vox_in_src >= 0) & (vox_in_src <= np.array(grid.shape) - 1), axis=-1)
    assert ok.mean() > 0.5
    np.testing.assert_allclose(out.data[0].numpy()[ok], expected[ok], atol=1e-9)
    assert np.all(out.data[0].numpy()[~ok & np.any(vox_in_src > np.array(grid.shape), -1)] == 0)


def test_resample_integer_shift_and_labels_2d():
    grid = Grid.from_shape((20, 18), spacing=(0.5, 2.0), origin=(3.0, -1.0))
    labels = torch.randint(0, 5, (1, 20, 18))
    target = Grid.from_shape((20, 18), spacing=(0.5, 2.0), origin=(3.0 + 2 * 0.5, -1.0 - 2.0))
    out = resample_to_grid(Image(labels, grid), target, mode="nearest")
    assert out.data.dtype == torch.int64
    # target voxel (i, j) sits on source voxel (i + 2, j - 1)
    assert torch.equal(out.data[0, :18, 1:], labels[0, 2:, :17])
    assert torch.all(out.data[0, 18:] == 0)
    with pytest.raises(ValueError, match="nearest"):
        resample_to_grid(Image(labels, grid), target, mode="linear")


# ------------------------------------------------------------- ITK field (no ANTs needed here)
def test_identity_displacement_field_is_zero_and_round_trips(tmp_path):
    fixed = Grid((6, 5, 4), OBLIQUE)
    moving = Grid((7, 7, 7), make_affine(rotation([0, 1, 1], 50), (1.1, 1.3, 0.8), (2, 3, -4)))
    mv = domain_map_to_moving_voxels(fixed.identity_map(torch.float64), fixed, moving)
    np.testing.assert_allclose(displacement_field_lps(fixed, mv, moving), 0.0, atol=1e-10)
    shifted = mv + torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1, 1)
    u = displacement_field_lps(fixed, shifted, moving)
    ras = moving.affine_matrix[:3, 0]  # one moving voxel along axis 0, in RAS mm
    np.testing.assert_allclose(u, np.broadcast_to(ras * [-1, -1, 1], u.shape), atol=1e-10)
    path = save_itk_displacement_field(tmp_path / "warp.nii.gz", fixed, shifted, moving)
    img = nib.load(path)
    assert img.shape == (6, 5, 4, 1, 3) and int(img.header["intent_code"]) == 1007
    grid, back = load_itk_displacement_field(path)
    assert grid.shape == fixed.shape
    np.testing.assert_allclose(back, u, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["warp.nii.gz"]


def test_displacement_field_errors(tmp_path):
    fixed = Grid((6, 5, 4), OBLIQUE)
    with pytest.raises(ValueError, match="does not match"):
        displacement_field_lps(fixed, torch.zeros(1, 3, 6, 5, 5), fixed)
    with pytest.raises(ValueError, match=r"\(1, 3, \*S\)"):
        displacement_field_lps(fixed, torch.zeros(1, 2, 6, 5), fixed)
    coronal = Grid((8, 8), make_affine(rotation([1, 0, 0], 90), (1.0, 1.0, 1.0), (0, 0, 0)))
    with pytest.raises(ValueError, match="z axis"):
        displacement_field_lps(coronal, coronal.voxel_indices(), coronal)
    plain = save_image(Image(torch.rand(1, 6, 5, 4), fixed), tmp_path / "plain.nii.gz")
    with pytest.raises(ValueError, match="plain.nii.gz.*not a displacement field"):
        load_itk_displacement_field(plain)
