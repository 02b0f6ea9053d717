"""QC figures a neuroimager can trust: 3D views in RAS orientation from the affine (with the
anatomical letters), each image on its own intensity scale, differences on normalised
intensities, sigma(x) on the kernel's range, and the before/after flicker reportlet. Everything is
asserted from the figure's own data (the panels' arrays, colour limits and texts)."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from rdmm_pipelines.qc import flicker_svg, qc_figure
from rdmm_pipelines.qc.views import Orientation
from rdmm_pipelines.spatial import Grid, Image

# array axis 0 -> world +S, axis 1 -> world -R (towards L), axis 2 -> world +A; anisotropic
PERMUTED = np.array([[0, -2.0, 0, 50], [0, 0, 1.5, -60], [1.0, 0, 0, -40], [0, 0, 0, 1]])
SHAPE = (20, 24, 28)
BLOB = (17, 4, 24)  # superior (axis 0 high), right (axis 1 low), anterior (axis 2 high)


def _volume(scale: float = 1.0) -> Image:
    data = torch.zeros(1, *SHAPE)
    data[0, 15:19, 2:6, 22:27] = 1000.0
    data[0, 5:15, 8:16, 8:20] = 300.0
    return Image(data * scale, Grid(SHAPE, PERMUTED))


def _figure(fixed: Image, moving: Image, **kw):
    grid = fixed.grid
    return qc_figure(fixed=fixed, moving_on_fixed=moving, warped=moving,
                     moving_voxels=grid.voxel_indices().reshape(1, 3, *grid.shape),
                     jacobian=Image(torch.ones(1, *grid.shape), grid), **kw)


def _panels(fig, key: str) -> dict[int | str, object]:
    """axis of the view ("all" for a 2D image) -> the panel's Axes, for panels named qc:<key>:<axis>."""
    out = {}
    for ax in fig.axes:
        gid = ax.get_gid() or ""
        if gid.startswith(f"qc:{key}:"):
            axis = gid.split(":")[2]
            out[int(axis) if axis.isdigit() else axis] = ax
    return out


def _brightest(ax) -> tuple[float, float]:
    """(row, column) of the brightest pixel of a panel, as fractions of its height and width."""
    arr = np.asarray(ax.images[0].get_array())
    r, c = np.unravel_index(np.argmax(arr), arr.shape)
    return r / (arr.shape[0] - 1), c / (arr.shape[1] - 1)


def test_orientation_of_a_permuted_flipped_affine():
    o = Orientation.of(Grid(SHAPE, PERMUTED))
    assert o.perm == (1, 2, 0) and o.flip == (True, False, False)
    canon = o.array(np.arange(np.prod(SHAPE)).reshape(SHAPE))
    assert canon.shape == (24, 28, 20)
    assert o.index(BLOB, SHAPE) == (24 - 1 - 4, 24, 17)
    assert canon[o.index(BLOB, SHAPE)] == np.arange(np.prod(SHAPE)).reshape(SHAPE)[BLOB]


@pytest.mark.parametrize("convention", ["neurological", "radiological"])
def test_3d_views_are_drawn_in_ras_orientation_with_letters(convention):
    fig = _figure(_volume(), _volume(), slice_at=BLOB, convention=convention)
    target = _panels(fig, "target")
    assert sorted(target) == [0, 1, 2]  # canonical normal axes: sagittal (R), coronal (A), axial (S)
    marks = {k: [t.get_text() for t in ax.texts] for k, ax in target.items()}
    right, left = ("R", "L") if convention == "neurological" else ("L", "R")
    assert marks[0] == ["S", "I", "P", "A"]  # (top, bottom, left, right)
    assert marks[1] == ["S", "I", left, right]
    assert marks[2] == ["A", "P", left, right]
    # the superior-right-anterior blob: at the top, anterior on the right (sagittal) ...
    row, col = _brightest(target[0])
    assert row < 0.25 and col > 0.75
    # ... the subject's right on the right (neurological) or the left (radiological)
    for axis in (1, 2):
        row, col = _brightest(target[axis])
        assert row < 0.25
        assert (col > 0.6) if convention == "neurological" else (col < 0.4)
    footer = " ".join(t.get_text() for t in fig.texts)
    assert f"{convention} convention" in footer and "RAS" in footer
    # pixels keep their physical size: the sagittal panel spans A (28 x 1.5 mm) by S (20 x 1 mm)
    x0, x1 = target[0].get_xlim()
    y_lo, y_hi = sorted(target[0].get_ylim())
    assert x1 - x0 == pytest.approx(28 * 1.5) and y_hi - y_lo == pytest.approx(20 * 1.0)


def test_2d_figures_stay_in_array_order_without_letters():
    grid = Grid.from_shape((32, 40))
    img = Image(torch.rand(1, 32, 40), grid)
    fig = qc_figure(fixed=img, moving_on_fixed=img, warped=img,
                    moving_voxels=grid.voxel_indices().reshape(1, 2, 32, 40),
                    jacobian=Image(torch.ones(1, 32, 40), grid))
    (ax,) = _panels(fig, "target").values()
    assert np.array_equal(np.asarray(ax.images[0].get_array()), img.data[0].double().numpy())
    assert len(ax.texts) == 0


def test_each_image_has_its_own_scale_and_differences_are_normalised():
    fixed, moving = _volume(scale=0.133), _volume(scale=8.364)  # Colin27-like against MNI-like ranges
    fig = _figure(fixed, moving, slice_at=BLOB)
    for axis in range(3):
        t_lo, t_hi = _panels(fig, "target")[axis].images[0].get_clim()
        s_lo, s_hi = _panels(fig, "source")[axis].images[0].get_clim()
        w_lo, w_hi = _panels(fig, "warped")[axis].images[0].get_clim()
        assert t_hi == pytest.approx(133.0, rel=0.01) and s_hi == pytest.approx(8364.0, rel=0.01)
        assert (w_lo, w_hi) == (s_lo, s_hi)  # source and warped: one image's intensities
        for key in ("diff_before", "diff_after"):  # the same anatomy: nothing left once normalised
            arr = np.asarray(_panels(fig, key)[axis].images[0].get_array())
            assert float(arr.max()) < 1e-6
    # raw differences would have shown only the target: now an explicit window gives real numbers
    fig = _figure(fixed, moving, slice_at=BLOB, windows=((0.0, 133.0), (0.0, 2 * 8364.0)))
    arr = np.asarray(_panels(fig, "diff_after")[2].images[0].get_array())
    assert float(arr.max()) == pytest.approx(0.5, abs=1e-6)


def test_sigma_panels_use_the_kernel_range_and_print_the_spread():
    fixed = _volume()
    grid = fixed.grid
    sigma = Image(torch.full((1, *SHAPE), 42.17) + 0.05 * torch.rand(1, *SHAPE), grid)
    fig = _figure(fixed, fixed, sigma_t0=sigma, sigma_t1=sigma, sigma_range=(8.0, 40.0))
    for key in ("sigma_t0", "sigma_t1"):
        for ax in _panels(fig, key).values():
            assert ax.images[0].get_clim() == (8.0, 40.0)
    title = _panels(fig, "sigma_t0")[0].get_title()
    assert "p5\u2013p95: 42.1" in title and "42.2" in title


def _frames(svg: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"base64,([A-Za-z0-9+/=]+)", svg)]


def test_flicker_reportlet_alternates_fixed_and_warped(tmp_path):
    fixed, moving = _volume(), _volume(scale=3.0)
    labels = Image((fixed.data > 500).long(), fixed.grid)
    path = flicker_svg(tmp_path / "qc_flicker.svg", fixed=fixed, warped=moving, fixed_labels=labels,
                       slice_at=BLOB)
    text = path.read_text()
    root = ET.fromstring(text)  # well-formed XML
    images = [el for el in root.iter() if el.tag.endswith("image")]
    assert [el.get("class") for el in images] == ["fixed", "warped"]
    assert "@keyframes flicker" in text and "animation-play-state: paused" in text
    frames = _frames(text)
    assert len(frames) == 2 and all(f.startswith(b"\x89PNG") for f in frames)
    assert frames[0] != frames[1]  # the captions differ ("fixed" / "warped moving")
    width, height = int(root.get("width")), int(root.get("height"))
    assert width > 2 * height  # three views side by side
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_flicker_reportlet_rejects_a_mismatched_warped_image(tmp_path):
    fixed = _volume()
    other = Image(torch.zeros(1, 10, 10, 10), Grid.from_shape((10, 10, 10)))
    with pytest.raises(ValueError, match="does not match the fixed grid"):
        flicker_svg(tmp_path / "x.svg", fixed=fixed, warped=other)
    assert not (tmp_path / "x.svg").exists()
