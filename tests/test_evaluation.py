"""Evaluation: Dice, fold statistics, physical Jacobian determinant, landmarks/TRE, label warping,
and result tables, against hand-computed values."""

from __future__ import annotations

import csv
import json
import logging
import math

import numpy as np
import pytest
import torch

from rdmm_pipelines.evaluation import (
    EvaluationResult,
    check_label_sets,
    dice_per_label,
    evaluation_record,
    fold_statistics,
    folded_cells,
    jacobian_determinant_physical,
    lps_to_ras,
    mean_dice,
    read_points,
    target_registration_error,
    transform_points,
    warp_labels,
    write_csv,
)
from rdmm_pipelines.spatial import Grid, Image
from geometry import rotation


def make_grid(shape, rot, spacing, origin) -> Grid:
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = origin
    return Grid(tuple(shape), a)


def voxel_map_of_world_transform(fixed: Grid, moving: Grid, world_fn) -> torch.Tensor:
    """(1, d, *S_fixed) moving voxel indices of x -> world_fn(x) (world points (N, 3) -> (N, 3))."""
    idx = fixed.voxel_indices(torch.float64)[0].reshape(fixed.ndim, -1).T.numpy()
    moved = world_fn(fixed.voxel_to_world(idx))
    mv = moving.world_to_voxel(moved)
    return torch.from_numpy(mv.T.reshape(1, fixed.ndim, *fixed.shape).copy())


# ------------------------------------------------------------------------------- Dice
def test_dice_of_two_overlapping_squares_and_missing_labels():
    pred = torch.zeros(10, 10, dtype=torch.int64)
    truth = torch.zeros(10, 10, dtype=torch.int64)
    pred[0:4, 0:4] = 1  # 16 voxels
    truth[2:6, 2:6] = 1  # 16 voxels, overlap [2:4, 2:4] = 4
    pred[8:10, 8:10] = 2  # only in pred
    truth[8, 0] = 3  # only in truth
    d = dice_per_label(pred, truth)
    assert list(d) == [1, 2, 3]  # background excluded, union of labels, sorted
    assert d[1] == pytest.approx(2 * 4 / 32)
    assert d[2] == 0.0 and d[3] == 0.0
    d = dice_per_label(pred, truth, labels=[1, 7])
    assert d[1] == pytest.approx(0.25) and math.isnan(d[7])  # absent from both -> NaN
    assert mean_dice(d) == pytest.approx(0.25)  # NaN ignored
    assert dice_per_label(pred, truth, labels=[0])[0] == pytest.approx(2 * 67 / (80 + 83))  # 100 - 33 foreground voxels
    assert dice_per_label(truth, truth) == {1: 1.0, 3: 1.0}
    # numpy and Image inputs
    g = Grid.from_shape((10, 10))
    assert dice_per_label(Image(pred[None], g), Image(truth[None], g))[1] == pytest.approx(0.25)
    assert dice_per_label(pred.numpy(), truth.numpy())[1] == pytest.approx(0.25)


def test_dice_errors_and_mean_of_nans():
    a = torch.zeros(4, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        dice_per_label(a, torch.zeros(4, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="integer"):
        dice_per_label(a.float(), a)
    assert math.isnan(mean_dice({1: math.nan, 2: math.nan}))
    assert math.isnan(mean_dice({}))
    assert mean_dice({1: 0.5, 2: 1.0}) == pytest.approx(0.75)


def test_label_set_mismatch_warnings_and_empty_maps():
    fixed = torch.tensor([[0, 1, 2], [3, 3, 0]])
    moving = torch.tensor([[0, 1, 2], [4, 5, 0]])
    msgs = check_label_sets(fixed, moving)
    assert len(msgs) == 2
    assert "only in the fixed" in msgs[0] and "[3]" in msgs[0]
    assert "only in the moving" in msgs[1] and "[4, 5]" in msgs[1]
    assert check_label_sets(fixed, fixed) == []
    many = torch.arange(100).reshape(10, 10)
    assert "(98 in all)" in check_label_sets(many, torch.tensor([[0, 1]]))[0]
    with pytest.raises(ValueError, match="fixed label map is empty"):
        check_label_sets(torch.zeros(3, 3, dtype=torch.int64), moving)
    with pytest.raises(ValueError, match="moving label map is empty"):
        check_label_sets(fixed, torch.zeros(3, 3, dtype=torch.int64))


# ------------------------------------------------------------------------------- folds
def test_fold_statistics_on_hand_made_determinant():
    det = torch.tensor([[1.0, -0.5, 2.0], [-0.25, 0.5, 1.0]])
    s = fold_statistics(det)
    assert s["folds"] == pytest.approx(0.75)
    assert s["folding_voxels"] == 2
    assert s["folding_percent"] == pytest.approx(100 * 2 / 6)
    assert s["det_min"] == -0.5 and s["det_max"] == 2.0
    assert s["det_mean"] == pytest.approx(3.75 / 6)
    assert s["det_std"] == pytest.approx(np.std(det.numpy()))
    m = fold_statistics(det, mask=det != -0.5)
    assert m["folds"] == pytest.approx(0.25) and m["folding_voxels"] == 1
    assert m["folding_percent"] == pytest.approx(20.0)
    assert fold_statistics(np.ones((3, 3)))["folds"] == 0.0
    with pytest.raises(ValueError, match="NaN or infinite"):
        fold_statistics(torch.tensor([1.0, math.nan]))
    with pytest.raises(ValueError, match="empty mask"):
        fold_statistics(det, mask=torch.zeros_like(det, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask shape"):
        fold_statistics(det, mask=torch.ones(4, dtype=torch.bool))


# ------------------------------------------------------------------------------- det J
def test_physical_determinant_of_affine_map_on_anisotropic_rotated_grids():
    fixed = make_grid((7, 6, 5), rotation([1, 2, 3], 25), (1.5, 2.0, 0.8), (3, -4, 10))
    moving = make_grid((9, 8, 7), rotation([0, 1, 1], -40), (0.7, 1.2, 2.5), (-10, 5, 2))
    B = np.array([[1.1, 0.2, -0.1], [0.05, 0.9, 0.3], [-0.2, 0.1, 1.3]])
    c = np.array([1.0, -2.0, 0.5])
    mv = voxel_map_of_world_transform(fixed, moving, lambda x: x @ B.T + c)
    det = jacobian_determinant_physical(mv, fixed, moving)
    assert det.shape == (1, 7, 6, 5) and det.dtype == torch.float64
    assert torch.allclose(det, torch.full_like(det, np.linalg.det(B)), rtol=1e-10)
    # the full determinant, not the product of the voxel Jacobian's diagonal
    assert abs(np.linalg.det(B) - np.prod(np.diag(B))) > 0.05
    # an orientation-preserving affine map folds no cell
    cells = folded_cells(mv, fixed, moving)
    assert cells.shape == (1, 6, 5, 4) and cells.dtype == torch.bool and not cells.any()


def test_physical_determinant_keeps_sign_across_mirrored_affines():
    fixed = Grid.from_shape((5, 6, 7), spacing=(1.0, 2.0, 1.5))
    flip = np.diag([-1.0, 1.0, 1.0])  # moving stored with a mirrored x axis (e.g. LAS)
    moving = make_grid((8, 8, 8), flip, (0.9, 1.1, 1.0), (10, 0, 0))
    mv = voxel_map_of_world_transform(fixed, moving, lambda x: x)  # identity in world space
    det = jacobian_determinant_physical(mv, fixed, moving)
    assert torch.allclose(det, torch.ones_like(det), atol=1e-10)
    assert fold_statistics(det)["folding_voxels"] == 0
    # the cell test takes the same orientation sign: no cell folded; without the grids (sign +1)
    # the mirrored voxel map reverses every cell
    cells = folded_cells(mv, fixed, moving)
    assert cells.shape == (1, 4, 5, 6) and not cells.any()
    assert folded_cells(mv).all()
    s = fold_statistics(det, cells=cells)
    assert s["folded_cells"] == 0 and s["folded_cells_percent"] == 0.0


def test_physical_determinant_2d_affine_and_analytic_sine_map():
    fixed = Grid.from_shape((40, 30), spacing=(0.5, 0.8), origin=(1.0, 2.0))
    moving = Grid.from_shape((30, 50), spacing=(0.9, 0.6), origin=(-3.0, 0.0))
    B = np.array([[1.2, 0.3], [-0.1, 0.8]])

    def affine(x):
        y = x.copy()
        y[:, :2] = x[:, :2] @ B.T + [0.5, -1.0]
        return y

    det = jacobian_determinant_physical(voxel_map_of_world_transform(fixed, moving, affine), fixed, moving)
    assert det.shape == (1, 40, 30)
    assert torch.allclose(det, torch.full_like(det, np.linalg.det(B)), rtol=1e-10)

    a, b, k = 2.0, 1.5, 2 * math.pi / 20.0  # T(x, y) = (x + a sin(k y), y + b sin(k x))

    def sine(x):
        y = x.copy()
        y[:, 0] = x[:, 0] + a * np.sin(k * x[:, 1])
        y[:, 1] = x[:, 1] + b * np.sin(k * x[:, 0])
        return y

    det = jacobian_determinant_physical(voxel_map_of_world_transform(fixed, moving, sine), fixed, moving)[0]
    w = fixed.voxel_to_world(fixed.voxel_indices(torch.float64)[0].reshape(2, -1).T.numpy())
    exact = 1 - a * b * k**2 * np.cos(k * w[:, 0]) * np.cos(k * w[:, 1])
    exact = torch.from_numpy(exact.reshape(40, 30))
    # central differences: each partial has error <= amplitude * k * (k h)^2 / 6
    h = 0.8
    tol = 2 * (1 + max(a, b) * k) * max(a, b) * k * (k * h) ** 2 / 6
    err = (det - exact)[1:-1, 1:-1].abs().max()
    assert err < tol, (float(err), tol)
    assert (exact.min() < 0.8) and (exact.max() > 1.2)  # a map whose det varies a lot


def test_physical_determinant_shape_errors():
    g = Grid.from_shape((4, 5))
    with pytest.raises(ValueError, match=r"does not match the fixed grid shape \(4, 5\)"):
        jacobian_determinant_physical(torch.zeros(1, 2, 4, 4), g, g)
    with pytest.raises(ValueError, match="must be"):
        jacobian_determinant_physical(torch.zeros(1, 3, 4, 5), g, g)


# ------------------------------------------------------------------------------- landmarks
def test_tre_under_identity_and_translation_maps():
    fixed = make_grid((12, 10, 8), rotation([1, 0, 1], 20), (1.5, 2.0, 2.5), (-5, 3, 1))
    moving = make_grid((14, 12, 10), np.eye(3), (1.2, 1.7, 2.0), (-12, -8, -10))
    pts = fixed.voxel_to_world(np.array([[2.0, 3.5, 1.0], [5.3, 4.2, 6.7], [10.0, 8.0, 3.3]]))
    offsets = np.array([[1.0, 0.0, 0.0], [0.0, -2.0, 0.0], [3.0, 4.0, 0.0]])
    ident = voxel_map_of_world_transform(fixed, moving, lambda x: x)
    tre = target_registration_error(pts, pts + offsets, ident, fixed, moving)
    assert tre["n_points"] == 3
    np.testing.assert_allclose(tre["errors"], [1.0, 2.0, 5.0], atol=1e-9)
    assert tre["mean"] == pytest.approx(8 / 3) and tre["median"] == pytest.approx(2.0)
    assert tre["max"] == pytest.approx(5.0) and tre["std"] == pytest.approx(np.std([1, 2, 5]))
    np.testing.assert_allclose(tre["before"]["errors"], [1.0, 2.0, 5.0], atol=1e-9)

    t = np.array([2.0, -1.0, 3.5])
    shift = voxel_map_of_world_transform(fixed, moving, lambda x: x + t)
    np.testing.assert_allclose(transform_points(pts, shift, fixed, moving), pts + t, atol=1e-9)
    tre = target_registration_error(pts, pts + t + offsets, shift, fixed, moving)
    np.testing.assert_allclose(tre["errors"], [1.0, 2.0, 5.0], atol=1e-9)
    tre = target_registration_error(pts, pts + t, shift, fixed, moving)
    assert tre["max"] < 1e-9
    np.testing.assert_allclose(tre["before"]["errors"], [np.linalg.norm(t)] * 3, atol=1e-9)
    with pytest.raises(ValueError, match="3 fixed points but 2 moving points"):
        target_registration_error(pts, pts[:2], shift, fixed, moving)


def test_transform_points_warns_outside_and_handles_2d(caplog):
    fixed = Grid.from_shape((10, 10), spacing=(2.0, 1.0), origin=(0.0, 0.0, 5.0))
    moving = Grid.from_shape((10, 10), spacing=(1.0, 1.0), origin=(0.0, 0.0, 5.0))
    shift = voxel_map_of_world_transform(fixed, moving, lambda x: x + [1.0, 0.5, 0.0])
    pts = np.array([[4.0, 3.0, 0.0], [100.0, 3.0, 0.0]])  # z = 0 as from a 2-column file
    with caplog.at_level(logging.WARNING, logger="rdmm_pipelines.evaluation.landmarks"):
        out = transform_points(pts, shift, fixed, moving)
    assert "1 of 2 points lie outside" in caplog.text
    np.testing.assert_allclose(out[0], [5.0, 3.5, 5.0], atol=1e-9)  # on the moving plane
    tre = target_registration_error(pts[:1], pts[:1] + [1.0, 0.5, 0.0], shift, fixed, moving)
    assert tre["errors"][0] < 1e-9  # the plane's height does not count


def test_read_points_text_variants(tmp_path):
    p = tmp_path / "pts.txt"
    p.write_text("# landmarks\n1 2 3\n\n4.5 -5 6e1  # comment\n")
    np.testing.assert_array_equal(read_points(p), [[1, 2, 3], [4.5, -5, 60]])
    p.write_text("1 2\n3 4\n")
    np.testing.assert_array_equal(read_points(p), [[1, 2, 0], [3, 4, 0]])
    np.testing.assert_array_equal(read_points(p, convention="LPS"), [[-1, -2, 0], [-3, -4, 0]])
    p.write_text("point\n2\n1 2 3\n4 5 6\n")  # elastix
    np.testing.assert_array_equal(read_points(p), [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(lps_to_ras(np.array([[1.0, 2.0, 3.0]])), [[-1, -2, 3]])


def test_read_points_csv_variants(tmp_path):
    p = tmp_path / "pts.csv"
    p.write_text("Label,X,Y,Z\n1,1.0,2.0,3.0\n2, 4.0 , 5.0, 6.0\n")
    np.testing.assert_array_equal(read_points(p), [[1, 2, 3], [4, 5, 6]])
    p.write_text("x,y,index\n1,2,0\n3,4,1\n")
    np.testing.assert_array_equal(read_points(p), [[1, 2, 0], [3, 4, 0]])
    p.write_text("x,y,z,t,label,comment\n-1,-2,3,0,1,\n")  # ANTs (LPS)
    np.testing.assert_array_equal(read_points(p, convention="LPS"), [[1, 2, 3]])
    p.write_text("1,2,3\n4,5,6\n")  # no header
    np.testing.assert_array_equal(read_points(p), [[1, 2, 3], [4, 5, 6]])
    q = tmp_path / "pts.txt"
    q.write_text("x,y\n7,8\n")  # CSV content under another suffix
    np.testing.assert_array_equal(read_points(q), [[7, 8, 0]])


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("a.txt", "1 2 3\n1 2 3 4\n", r"a\.txt, line 2: expected 2 or 3 coordinates, got 4"),
        ("b.txt", "1 2 3\n\n1 2\n", r"b\.txt, line 3: 2 coordinates but earlier rows have 3"),
        ("c.txt", "1 2 3\n1 two 3\n", r"c\.txt, line 2: 'two' is not a number"),
        ("d.txt", "# nothing\n\n", r"d\.txt: no points found"),
        ("e.csv", "a,b,c\n1,2,3\n", r"e\.csv, line 1: CSV header .* no 'x' and 'y'"),
        ("f.csv", "x,y,z\n", r"f\.csv: no points found"),
        ("g.csv", "x,y,z\n1,2,3\n1,2\n", r"g\.csv, line 3: 2 fields"),
        ("h.txt", "1 2 nan\n", r"h\.txt, line 1: coordinate 'nan' is not finite"),
        ("i.txt", "point\n3\n1 2 3\n", r"i\.txt: header says 3 points but the file holds 1"),
        ("j.txt", "index\n1\n1 2 3\n", r"j\.txt, line 1: elastix 'index'"),
    ],
)
def test_read_points_malformed(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        read_points(p)


def test_read_points_missing_file_and_bad_convention(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_points(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="convention"):
        read_points(tmp_path / "nope.txt", convention="XYZ")


# ------------------------------------------------------------------------------- warping labels
def blobs_2d(shape=(24, 20)) -> torch.Tensor:
    i, j = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
    lab = torch.zeros(shape, dtype=torch.int64)
    lab[((i - 8) ** 2 + (j - 8) ** 2) < 30] = 1
    lab[((i - 15) ** 2 + (j - 11) ** 2) < 20] = 2
    lab[(i > 18) & (j < 6)] = 7
    return lab


def test_warp_labels_identity_is_exact_for_both_methods():
    g = Grid.from_shape((6, 7, 8), spacing=(1.0, 2.0, 0.5))
    lab = torch.randint(0, 6, (1, 6, 7, 8), generator=torch.Generator().manual_seed(0))
    ident = g.voxel_indices(torch.float64)
    for method in ("nearest", "onehot"):
        out = warp_labels(Image(lab, g), ident, g, method=method)
        assert out.data.dtype == torch.int64 and out.grid == g
        assert torch.equal(out.data, lab), method


def test_warp_labels_onehot_agrees_with_nearest_except_at_boundaries():
    lab = blobs_2d()
    g = Grid.from_shape(lab.shape)
    img = Image(lab[None], g)
    # integer shift: both methods agree exactly, including background outside the map
    shift = g.voxel_indices(torch.float64) + torch.tensor([3.0, -2.0]).view(1, 2, 1, 1).double()
    near = warp_labels(img, shift, g, "nearest").data[0]
    assert torch.equal(near, warp_labels(img, shift, g, "onehot").data[0])
    assert (near[-3:] == 0).all() and (near[:, :2] == 0).all()
    # fractional shift: they differ only where the 2x2 source neighbourhood holds several labels
    frac = g.voxel_indices(torch.float64) + torch.tensor([0.3, 0.4]).view(1, 2, 1, 1).double()
    near = warp_labels(img, frac, g, "nearest").data[0]
    soft = warp_labels(img, frac, g, "onehot").data[0]
    padded = torch.nn.functional.pad(lab, (0, 1, 0, 1))  # outside = background
    corners = torch.stack([padded[:-1, :-1], padded[1:, :-1], padded[:-1, 1:], padded[1:, 1:]])
    uniform = (corners == corners[0]).all(0)
    assert torch.equal(near[uniform], soft[uniform])
    assert torch.equal(soft[uniform], lab[uniform])
    assert (near != soft).float().mean() < 0.05


def test_warp_labels_onehot_many_labels_chunked():
    g = Grid.from_shape((24, 24, 24))
    gen = torch.Generator().manual_seed(1)
    coarse = torch.randint(0, 117, (1, 1, 6, 6, 6), generator=gen).double()  # 116 labels + 0
    lab = torch.nn.functional.interpolate(coarse, size=(24, 24, 24), mode="nearest")[0].long()
    coords = g.voxel_indices(torch.float32) + 0.35 * torch.randn(1, 3, 24, 24, 24, generator=gen)
    a = warp_labels(Image(lab, g), coords, g, "onehot", chunk_size=16).data
    b = warp_labels(Image(lab, g), coords, g, "onehot", chunk_size=200).data
    assert torch.equal(a, b)
    near = warp_labels(Image(lab, g), coords, g, "nearest").data
    assert (a == near).float().mean() > 0.8


def test_warp_labels_errors():
    g = Grid.from_shape((4, 5))
    lab = Image(torch.zeros(1, 4, 5, dtype=torch.int64), g)
    with pytest.raises(ValueError, match="unknown label warp method"):
        warp_labels(lab, g.voxel_indices(), g, method="linear")
    with pytest.raises(ValueError, match=r"must be \(1, 2, 4, 5\)"):
        warp_labels(lab, torch.zeros(1, 2, 4, 4), g)
    with pytest.raises(ValueError, match="integer label map"):
        warp_labels(Image(torch.zeros(1, 4, 5), g), g.voxel_indices(), g)


# ------------------------------------------------------------------------------- tables
def _records():
    a = evaluation_record(
        "pair1", "rdmm",
        warped_labels=torch.tensor([[1, 1], [2, 0]]), fixed_labels=torch.tensor([[1, 0], [2, 2]]),
        det=torch.tensor([1.0, -0.5, 2.0, 1.0]), seconds=12.5,
        tre={"n_points": 2, "errors": [1.0, 2.0], "mean": 1.5, "std": 0.5, "median": 1.5, "max": 2.0,
             "before": {"errors": [3.0, 4.0], "mean": 3.5, "std": 0.5, "median": 3.5, "max": 4.0}},
    )
    b = EvaluationResult("pair2", "lddmm", dice={1: 0.5, 3: math.nan}, mean_dice=0.5, status="ok")
    return a, b


def test_evaluation_record_metrics():
    a, b = _records()
    assert a.dice == {1: pytest.approx(2 / 3), 2: pytest.approx(2 / 3)}
    assert a.mean_dice == pytest.approx(2 / 3)
    assert a.folds["folds"] == pytest.approx(0.5) and a.folds["folding_voxels"] == 1
    assert a.tre == {"n_points": 2, "mean": 1.5, "std": 0.5, "median": 1.5, "max": 2.0,
                     "before_mean": 3.5, "before_std": 0.5, "before_median": 3.5, "before_max": 4.0}
    empty = evaluation_record("p", "m", warped_labels=torch.zeros(2, 2, dtype=torch.int64),
                              fixed_labels=torch.tensor([[1, 0], [0, 0]]), labels=[1])
    assert empty.status == "partial" and math.isnan(empty.mean_dice) and math.isnan(empty.dice[1])
    assert "moving label map is empty" in empty.message
    mismatch = evaluation_record("p", "m", warped_labels=torch.tensor([[1, 3]]),
                                 fixed_labels=torch.tensor([[1, 2]]))
    assert len(mismatch.warnings) == 2 and mismatch.dice[2] == 0.0
    with pytest.raises(ValueError, match="status"):
        EvaluationResult("p", "m", status="great")


def test_json_nan_null_round_trip(tmp_path):
    _, b = _records()
    path = b.to_json(tmp_path / "out" / "eval.json")
    raw = json.loads(path.read_text())
    assert raw["dice"] == {"1": 0.5, "3": None} and raw["folds"] is None
    back = EvaluationResult.from_json(path)
    assert back.dice[1] == 0.5 and math.isnan(back.dice[3]) and back.pair_id == "pair2"
    assert sorted(p.name for p in path.parent.iterdir()) == ["eval.json"]  # no temp file left
    path.write_text("{broken")
    with pytest.raises(ValueError, match="eval.json: not an evaluation record"):
        EvaluationResult.from_json(path)


def test_csv_unions_columns_and_writes_nan(tmp_path):
    a, b = _records()
    row = b.csv_row()
    assert row["dice_1"] == 0.5 and math.isnan(row["dice_3"]) and row["seconds"] == ""
    path = write_csv([a, b, {"pair_id": "x", "extra": 1}], tmp_path / "table.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[:5] == ["pair_id", "method", "status", "seconds", "mean_dice"]
    assert [c for c in header if c.startswith("dice_")] == ["dice_1", "dice_2", "dice_3"]
    assert {"folds", "det_std", "tre_mean", "tre_before_max", "message", "extra"} <= set(header)
    assert rows[0]["dice_3"] == "" and rows[1]["dice_3"] == "nan" and rows[1]["dice_2"] == ""
    assert rows[0]["tre_mean"] == "1.5" and rows[1]["tre_mean"] == "" and rows[2]["extra"] == "1"
    assert float(rows[0]["dice_1"]) == pytest.approx(2 / 3, abs=0)  # full precision
    with pytest.raises(ValueError, match="no rows"):
        write_csv([], tmp_path / "empty.csv")


def test_dice_before_registration_in_the_record_json_and_csv(tmp_path):
    """The record carries the Dice of the moving labels with no transform (identity in world
    space) beside the Dice after registration: on a square moved by one voxel, a transform that
    undoes the move scores 1 after and 0.75 before; the numbers survive JSON and CSV."""
    from rdmm_pipelines.evaluation import evaluate_displacement_field, identity_labels
    from rdmm_pipelines.spatial import save_image
    from rdmm_pipelines.transforms import DenseTransform

    grid = Grid.from_shape((10, 10), spacing=(1.5, 1.5))
    fixed = torch.zeros(1, 10, 10, dtype=torch.int64)
    fixed[0, 3:7, 2:8] = 1
    moving = torch.zeros_like(fixed)
    moving[0, 4:8, 2:8] = 1  # the square one voxel further along axis 0
    voxels = grid.voxel_indices(torch.float64).clone()
    voxels[:, 0] += 1.0  # fixed voxel i -> moving voxel i + (1, 0)
    field = DenseTransform(grid, grid, voxels).save_displacement_field(tmp_path / "xfm.nii.gz")
    f_path = save_image(Image(fixed, grid), tmp_path / "f.nii.gz")
    m_path = save_image(Image(moving, grid), tmp_path / "m.nii.gz")
    record = evaluate_displacement_field(field, f_path, m_path, subject_id="p", method="m")
    assert record.dice == {1: pytest.approx(1.0)} and record.dice_before == {1: pytest.approx(0.75)}
    assert record.mean_dice_before == pytest.approx(0.75)
    assert torch.equal(identity_labels(Image(moving, grid), grid).data, moving)

    back = EvaluationResult.from_json(record.to_json(tmp_path / "eval.json"))
    assert back == record
    assert record.csv_row()["mean_dice_before"] == pytest.approx(0.75)
    raw = json.loads((tmp_path / "eval.json").read_text())
    del raw["dice_before"], raw["mean_dice_before"]  # a record written before the field existed
    old = EvaluationResult.from_dict(raw)
    assert old.dice_before == {} and math.isnan(old.mean_dice_before)
    # without label maps there is no Dice, before or after
    plain = evaluation_record("p", "m", det=torch.ones(4))
    assert plain.dice_before == {} and math.isnan(plain.mean_dice_before)
    # the before Dice is scored on the labels of the Dice after
    scored = evaluation_record("p", "m", warped_labels=fixed[0], fixed_labels=fixed[0], labels=[1],
                               before_labels=torch.zeros(10, 10, dtype=torch.int64))
    assert scored.dice_before == {1: 0.0} and scored.mean_dice_before == 0.0
