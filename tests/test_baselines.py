"""Baseline runners (ANTs SyN, SimpleITK demons, NiftyReg f3d) write outputs in our convention.

For every tool, on a small 3D pair (oblique, anisotropic grids that differ between fixed and
moving) and a 2D pair (in-plane rotated and anisotropic): the displacement field, applied by ANTs,
reproduces the tool's own warped image in the interior (this proves the field convention, LPS
and the full transform, for each tool, because the warped image comes from the tool itself), our
``DenseTransform`` reads it and improves the label Dice over no registration, and the inputs are
left untouched. Missing tools give a clear RuntimeError before any work.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from baseline_tools import require_baseline
from geometry import make_affine, rotation
from rdmm_pipelines.interfaces.baselines import (
    BASELINES,
    METHODS,
    BaselineOutput,
    available,
    run_ants_syn,
    run_niftyreg,
    run_sitk_demons,
)
from rdmm_pipelines.interfaces.baselines.common import (
    NIFTYREG_TOOLS,
    find_niftyreg_binaries,
)
from rdmm_pipelines.interfaces.baselines.niftyreg import deformation_to_lps_displacement

from rdmm_pipelines.evaluation import dice_per_label, mean_dice
from rdmm_pipelines.spatial import (
    Grid,
    Image,
    load_image,
    load_labels,
    resample_to_grid,
    save_image,
)
from rdmm_pipelines.synthetic import make_pair_2d, make_phantom_3d
from rdmm_pipelines.transforms.dense import DenseTransform

MODULE_FOR = {"ants-syn": "ants", "sitk-demons-diffeomorphic": "SimpleITK",
              "sitk-demons-fss": "SimpleITK", "niftyreg-f3d": None}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Files of a 3D and a 2D pair: {dim: dict(fixed, moving, fixed_labels, moving_labels)}."""
    root = tmp_path_factory.mktemp("pairs")
    p3 = make_phantom_3d(seed=1, shape=(24, 24, 24))
    f3 = Grid((24, 24, 24), make_affine(rotation([0, 0, 1], 10), (1.5, 1.5, 1.5), (-17, -20, -15)))
    m3 = Grid((24, 24, 24), make_affine(rotation([1, 0, 0], 5), (1.5, 1.4, 1.6), (-15, -18, -16)))
    p2 = make_pair_2d(seed=3, size=64)
    f2 = Grid((64, 64), make_affine(rotation([0, 0, 1], 6), (1.0, 1.0, 1.0), (-30, -33, 0)))
    m2 = Grid.from_shape((64, 64), (1.1, 1.0), (-33.0, -30.0))
    out = {}
    for d, p, fg, mg in ((3, p3, f3, m3), (2, p2, f2, m2)):
        files = {
            "fixed": save_image(Image(p.target, fg), root / f"fixed{d}.nii.gz"),
            "moving": save_image(Image(p.source, mg), root / f"moving{d}.nii.gz"),
            "fixed_labels": save_image(Image(p.target_labels[None], fg), root / f"fl{d}.nii.gz"),
            "moving_labels": save_image(Image(p.source_labels[None], mg), root / f"ml{d}.nii.gz"),
        }
        out[d] = files
    return out


def _interior(a: np.ndarray, margin: int = 2) -> np.ndarray:
    return a[(slice(margin, -margin),) * a.ndim]


@pytest.mark.parametrize("dim", [3, 2])
@pytest.mark.parametrize("method", METHODS)
def test_baseline_outputs_follow_our_convention(pairs, tmp_path, method, dim):
    require_baseline(method)
    files = pairs[dim]
    before = {k: sha256(v) for k, v in files.items()}
    out_dir = tmp_path / "out"
    out = BASELINES[method](files["fixed"], files["moving"], out_dir, prefix=f"pair{dim}_",
                            threads=1)

    # the record and the files
    assert isinstance(out, BaselineOutput) and out.method == method
    assert out.warped == out_dir.resolve() / f"pair{dim}_{method}_warped.nii.gz"
    assert out.displacement == out_dir.resolve() / f"pair{dim}_{method}_displacement.nii.gz"
    assert out.log == out_dir.resolve() / f"pair{dim}_{method}.log"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        p.name for p in (out.warped, out.displacement, out.log))  # no temporaries left
    assert out.seconds > 0 and out.tool_version.split()[-1][0].isdigit()
    assert method in out.log.read_text()
    # inputs untouched
    assert {k: sha256(v) for k, v in files.items()} == before

    fixed = load_image(files["fixed"])
    moving = load_image(files["moving"])
    field = nib.load(str(out.displacement))
    assert int(field.header["intent_code"]) == 1007
    assert field.shape == ((*fixed.grid.shape, 1, 3) if dim == 3 else (*fixed.grid.shape, 1, 1, 2))
    np.testing.assert_allclose(field.affine, fixed.grid.affine_matrix, atol=1e-5)
    warped = load_image(out.warped)
    assert warped.grid.shape == fixed.grid.shape
    np.testing.assert_allclose(warped.grid.affine_matrix, fixed.grid.affine_matrix, atol=1e-5)
    w = warped.data[0].numpy()
    value_range = float(moving.data.max() - moving.data.min())

    # our reader applies the field like the tool warped the image ...
    transform = DenseTransform.from_displacement_field(out.displacement, moving.grid)
    ours = transform.apply(moving).data[0].numpy()
    assert np.abs(_interior(ours) - _interior(w)).max() < 1e-3 * value_range

    # ... and registration helps: Dice above no registration (identity in world space)
    fl, ml = load_labels(files["fixed_labels"]), load_labels(files["moving_labels"])
    unregistered = mean_dice(dice_per_label(resample_to_grid(ml, fl.grid, mode="nearest"), fl))
    registered = mean_dice(dice_per_label(transform.apply(ml), fl))
    assert registered > unregistered + 0.05, (unregistered, registered)

    # ANTs applying our field reproduces the tool's own warped image (the convention, proven)
    ants = pytest.importorskip("ants")
    theirs = ants.apply_transforms(ants.image_read(str(files["fixed"])),
                                   ants.image_read(str(files["moving"])),
                                   [str(out.displacement)], interpolator="linear").numpy()
    diff = np.abs(_interior(theirs) - _interior(w)).max()
    assert diff < 1e-3 * value_range, f"ANTs with our field differs from {method}'s warp by {diff}"
    # the test has power: the transform is far from the identity
    assert np.abs(_interior(w) - _interior(
        resample_to_grid(moving, fixed.grid).data[0].numpy())).max() > 0.2 * value_range


def test_tools_run_with_the_threads_asked_for(pairs, tmp_path):
    require_baseline("niftyreg-f3d")
    files = pairs[2]
    out = run_niftyreg(files["fixed"], files["moving"], tmp_path, threads=1)
    assert out.log.read_text().count("OpenMP is used with 1 thread(s)") >= 2  # reg_aladin, reg_f3d
    sitk = pytest.importorskip("SimpleITK")
    old = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    run_sitk_demons(files["fixed"], files["moving"], tmp_path, threads=1, levels=1, iterations=5)
    assert sitk.ProcessObject_GetGlobalDefaultNumberOfThreads() == old  # restored


_ANTS_TWICE = """
import sys
from rdmm_pipelines.interfaces.baselines import run_ants_syn
fixed, moving, out = sys.argv[1:4]
for name in ("a", "b"):
    run_ants_syn(fixed, moving, f"{out}/{name}", threads=1, seed=3)
"""


def test_ants_with_one_thread_is_reproducible_and_writes_nothing_to_tmp(pairs, tmp_path):
    """In a fresh process (ITK fixes its thread count at its first use in a process, so the
    runner's threads=1 holds there), the same seed gives the same field, and nothing is written
    to the temporary directory (``outprefix`` is inside out_dir)."""
    pytest.importorskip("ants")
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"}
    env["TMPDIR"] = str(systmp)
    proc = subprocess.run(
        [sys.executable, "-c", _ANTS_TWICE, str(pairs[2]["fixed"]), str(pairs[2]["moving"]),
         str(tmp_path)], env=env, capture_output=True, text=True, timeout=300,
        check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(systmp.iterdir()) == []
    ua = nib.load(str(tmp_path / "a" / "ants-syn_displacement.nii.gz")).get_fdata()
    ub = nib.load(str(tmp_path / "b" / "ants-syn_displacement.nii.gz")).get_fdata()
    assert np.abs(ua).max() > 1.0 and np.array_equal(ua, ub)


def test_ants_affine_only_is_written_as_a_field(pairs, tmp_path):
    pytest.importorskip("ants")
    files = pairs[2]
    out = run_ants_syn(files["fixed"], files["moving"], tmp_path, type_of_transform="Affine")
    assert nib.load(str(out.displacement)).shape == (64, 64, 1, 1, 2)
    assert "GenericAffine.mat" in out.log.read_text()


def test_niftyreg_deformation_conversion_is_ras_to_lps():
    grid = Grid.from_shape((3, 4, 5), (1.0, 2.0, 3.0), (10.0, -5.0, 2.0))
    idx = grid.voxel_indices(torch.float64)[0].movedim(0, -1).numpy()
    p = grid.voxel_to_world(idx)
    shift = np.array([1.0, 2.0, 3.0])
    u = deformation_to_lps_displacement((p + shift)[:, :, :, None, :], grid)
    np.testing.assert_allclose(u, np.broadcast_to([-1.0, -2.0, 3.0], u.shape))
    with pytest.raises(ValueError, match="shape"):
        deformation_to_lps_displacement(p[:, :, :, None, :2], grid)


def test_available_reports_truthfully():
    assert available("ants-syn")[0] == (importlib.util.find_spec("ants") is not None)
    for m in ("sitk-demons-diffeomorphic", "sitk-demons-fss"):
        assert available(m)[0] == (importlib.util.find_spec("SimpleITK") is not None)
    spec = importlib.util.find_spec("niftyreg")
    pkg_bin = Path(spec.origin).parent / "bin" if spec else None
    have_nr = all((pkg_bin is not None and (pkg_bin / t).is_file()) or shutil.which(t)
                  for t in NIFTYREG_TOOLS)
    ok, why = available("niftyreg-f3d")
    assert ok == have_nr, why
    with pytest.raises(ValueError, match="unknown baseline"):
        available("elastix")


@pytest.mark.parametrize("method", METHODS)
def test_missing_tool_gives_a_clear_error_before_any_work(pairs, tmp_path, monkeypatch, method):
    if MODULE_FOR[method] is not None:
        monkeypatch.setitem(sys.modules, MODULE_FOR[method], None)  # import now fails
        expected = (r"antspyx.*pip install 'rdmm_pipelines\[ants\]'" if method == "ants-syn"
                    else r"SimpleITK.*pip install 'rdmm_pipelines\[sitk\]'")
    else:
        monkeypatch.setitem(sys.modules, "niftyreg", None)
        monkeypatch.delenv("NIFTYREG_BIN", raising=False)
        empty = tmp_path / "empty_path"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
        expected = r"NiftyReg binaries; reg_aladin, reg_f3d, reg_resample, reg_transform not found"
    ok, why = available(method)
    assert not ok and why
    out_dir = tmp_path / "out"
    with pytest.raises(RuntimeError, match=expected):
        BASELINES[method](pairs[2]["fixed"], pairs[2]["moving"], out_dir)
    assert not out_dir.exists()


def test_niftyreg_binaries_from_NIFTYREG_BIN(tmp_path, monkeypatch):
    require_baseline("niftyreg-f3d")
    real = find_niftyreg_binaries()
    for tool, path in real.items():
        (tmp_path / tool).symlink_to(path)
    monkeypatch.setenv("NIFTYREG_BIN", str(tmp_path))
    assert find_niftyreg_binaries() == {t: tmp_path / t for t in NIFTYREG_TOOLS}


def test_failed_command_raises_with_the_tools_message(pairs, tmp_path):
    require_baseline("niftyreg-f3d")
    files = pairs[2]
    before = sha256(files["moving"])
    with pytest.raises(RuntimeError, match=r"reg_f3d failed with exit code \d+:(.|\n)*--bogus-option"):
        run_niftyreg(files["fixed"], files["moving"], tmp_path, threads=1,
                     f3d_args=("--bogus-option",))
    assert [p.name for p in tmp_path.iterdir()] == ["niftyreg-f3d.log"]  # the log only
    assert sha256(files["moving"]) == before


def test_bad_inputs_are_rejected(pairs, tmp_path):
    require_baseline("niftyreg-f3d")
    # a (X, Y, 1) file is 2D for us but 3D for ITK and NiftyReg
    arr = nib.load(str(pairs[2]["fixed"])).get_fdata()[:, :, None]
    nib.save(nib.Nifti1Image(arr.astype(np.float32), np.eye(4)), tmp_path / "xy1.nii.gz")
    with pytest.raises(ValueError, match=r"save 2D images as \(X, Y\)"):
        run_niftyreg(tmp_path / "xy1.nii.gz", pairs[2]["moving"], tmp_path / "o")
    # a 2D image in a non-axial plane cannot go to NiftyReg
    coronal = np.array([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    save_image(Image(load_image(pairs[2]["fixed"]).data, Grid((64, 64), coronal)),
               tmp_path / "coronal.nii.gz")
    with pytest.raises(ValueError, match="non-axial"):
        run_niftyreg(tmp_path / "coronal.nii.gz", pairs[2]["moving"], tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_output_may_not_overwrite_an_input(tmp_path, pairs):
    require_baseline("niftyreg-f3d")
    target = tmp_path / "niftyreg-f3d_warped.nii.gz"
    shutil.copy(pairs[2]["fixed"], target)
    with pytest.raises(ValueError, match="overwrite an input"):
        run_niftyreg(target, pairs[2]["moving"], tmp_path)
    with pytest.raises(ValueError, match="prefix"):
        run_niftyreg(pairs[2]["fixed"], pairs[2]["moving"], tmp_path, prefix="sub/")
