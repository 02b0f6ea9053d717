"""Visual quality control: QC figures (2D, 3D, from a registration result) and the HTML report."""

import base64
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rdmm_pipelines import Grid, Image, OptimizerConfig, get_preset, register
from rdmm_pipelines.core.differences import jacobian_determinant
from rdmm_pipelines.core.interpolation import sample_voxel
from rdmm_pipelines.qc import format_value, qc_figure, qc_report, render_qc, render_result, write_html_report
from rdmm_pipelines.synthetic import make_pair_2d, make_phantom_3d

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, checking the signature."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def bump_map(grid: Grid, amp: float, width: float, center, axis: int):
    """Voxel map identity + a Gaussian bump along ``axis``; folds where amp / width * e^-1/2 > 1."""
    d = grid.ndim
    idx = grid.voxel_indices(torch.float64)
    r2 = sum((idx[:, k] - c) ** 2 for k, c in enumerate(center))
    vox = idx.clone()
    vox[:, axis] += amp * torch.exp(-r2 / (2 * width**2))
    det = jacobian_determinant(vox, (1.0,) * d)[0].float()
    return vox, Image(det, grid)


def warp(img: Image, vox: torch.Tensor, mode: str = "linear") -> Image:
    work = img.data[None].double()
    out = sample_voxel(work, vox, mode=mode, padding="zeros")[0]
    return img.with_data(out.round().long() if img.is_labels else out.float())


def panel_ratio(fig, key: str, view: str = "all") -> float:
    """Height / width in inches of the image box of one panel."""
    (ax,) = [a for a in fig.axes if a.get_gid() == f"qc:{key}:{view}"]
    ax.apply_aspect()  # what drawing would do: the box as shown, after aspect="equal" on the mm extent
    box = ax.get_position()
    w, h = fig.get_size_inches()
    return (box.height * h) / (box.width * w)


@pytest.fixture(scope="module")
def case2d():
    """A 2D pair on 2 x 1 mm pixels with an analytic map that folds."""
    pair = make_pair_2d(seed=5, size=48)
    grid = Grid.from_shape((48, 48), spacing=(2.0, 1.0))
    fixed, moving = Image(pair.target, grid), Image(pair.source, grid)
    vox, det = bump_map(grid, amp=10.0, width=5.0, center=(24, 24), axis=1)
    n_fold = int((det.data <= 0).sum())
    assert n_fold > 0
    labels_f = Image(pair.target_labels[None], grid)
    labels_w = warp(Image(pair.source_labels[None], grid), vox, "nearest")
    return dict(fixed=fixed, moving_on_fixed=moving, warped=warp(moving, vox), moving_voxels=vox, jacobian=det,
                fixed_labels=labels_f, warped_labels=labels_w), n_fold


def test_render_qc_2d_writes_a_png_and_shows_the_folds(case2d, tmp_path):
    kw, n_fold = case2d
    path = render_qc(tmp_path / "sub" / "qc2d.png", **kw, title="bump <with> fold", metrics={"folds": n_fold})
    assert path == tmp_path / "sub" / "qc2d.png"
    w, h = png_size(path)
    assert 1200 <= w <= 2000 and 500 <= h <= 1200, (w, h)
    assert [p.name for p in path.parent.iterdir()] == ["qc2d.png"]  # no temporary file left behind
    fig = qc_figure(**kw, title="t", metrics={"folds": n_fold})
    texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any(f"{n_fold} voxels" in t for t in texts), texts
    assert any("fixed labels" in t for t in texts) and any("warped labels" in t for t in texts)
    keys = {a.get_gid() for a in fig.axes if a.get_gid()}
    assert keys == {f"qc:{k}:all" for k in ("source", "target", "warped", "diff_before", "diff_after",
                                             "labels", "grid", "jacobian")}
    # iso-lines of the moving voxel map are drawn over the warped image (the deformed grid)
    (grid_ax,) = [a for a in fig.axes if a.get_gid() == "qc:grid:all"]
    assert len(grid_ax.collections) >= 2


def test_panels_keep_the_physical_aspect_ratio(case2d):
    kw, _ = case2d
    fig = qc_figure(**kw)  # pixels 2 mm tall, 1 mm wide, 48 x 48 of them: twice as tall as wide
    assert panel_ratio(fig, "target") == pytest.approx(2.0, rel=0.02)
    assert panel_ratio(fig, "jacobian") == pytest.approx(2.0, rel=0.02)
    iso = {k: (Image(v.data, Grid.from_shape((48, 48))) if isinstance(v, Image) else v) for k, v in kw.items()}
    assert panel_ratio(qc_figure(**iso), "target") == pytest.approx(1.0, rel=0.02)


def test_bad_inputs_are_refused(case2d, tmp_path):
    kw, _ = case2d
    with pytest.raises(ValueError, match="moving_voxels"):
        render_qc(tmp_path / "x.png", **{**kw, "moving_voxels": kw["moving_voxels"][:, :1]})
    with pytest.raises(ValueError, match="sigma"):
        render_qc(tmp_path / "x.png", **kw, sigma_t0=kw["jacobian"])
    with pytest.raises(ValueError, match="warped"):
        render_qc(tmp_path / "x.png", **{**kw, "warped": Image(torch.zeros(1, 8, 8), Grid.from_shape((8, 8)))})
    assert not list(tmp_path.iterdir())


def test_render_qc_3d_three_slices_through_a_label(tmp_path):
    pair = make_phantom_3d(seed=1, shape=(24, 24, 24))
    grid = Grid.from_shape((24, 24, 24), spacing=(1.5, 1.5, 3.0))
    fixed, moving = Image(pair.target, grid), Image(pair.source, grid)
    vox, det = bump_map(grid, amp=4.0, width=3.0, center=(12, 12, 12), axis=0)
    sigma0 = Image(2.0 + torch.rand(1, 24, 24, 24), grid)
    sigma1 = sigma0.with_data(sigma0.data * 1.1)
    labels_f = Image(pair.target_labels[None], grid)
    labels_w = warp(Image(pair.source_labels[None], grid), vox, "nearest")
    kw = dict(fixed=fixed, moving_on_fixed=moving, warped=warp(moving, vox), moving_voxels=vox, jacobian=det,
              sigma_t0=sigma0, sigma_t1=sigma1, fixed_labels=labels_f, warped_labels=labels_w)
    path = render_qc(tmp_path / "qc3d.png", **kw, title="phantom", metrics={"Dice": 0.8}, slice_at=3)
    w, h = png_size(path)
    assert 1200 <= w <= 2000 and 1000 <= h <= 2600, (w, h)

    fig = qc_figure(**kw, slice_at=3)
    keys = {a.get_gid() for a in fig.axes if a.get_gid()}
    assert {f"qc:sigma_t1:{k}" for k in range(3)} <= keys and len(keys) == 3 * 10
    where = (pair.target_labels == 3).nonzero()
    centre = [int(round((lo + hi) / 2)) for lo, hi in zip(where.min(0).values.tolist(), where.max(0).values.tolist())]
    labels = " ".join(t.get_text() for t in fig.texts)
    for k, name in enumerate(("sagittal", "coronal", "axial")):  # an RAS grid: canonical = array order
        assert f"{name}: slice {centre[k]} of 24" in labels
    # sagittal view (normal = axis 0, R): rows are S (axis 2, 3 mm), columns A (axis 1, 1.5 mm): twice as high
    assert panel_ratio(fig, "target", "0") == pytest.approx(2.0, rel=0.02)
    assert panel_ratio(fig, "target", "2") == pytest.approx(1.0, rel=0.02)
    with pytest.raises(ValueError, match="label 99"):
        qc_figure(**kw, slice_at=99)
    with pytest.raises(ValueError, match="slice_at"):
        qc_figure(**kw, slice_at="middle")


@pytest.fixture(scope="module")
def result2d():
    pair = make_pair_2d(seed=3, size=48)
    grid = Grid.from_shape((48, 48), spacing=pair.spacing)
    cfg = get_preset("quick", "rdmm").replace(optimizer=OptimizerConfig(scales=(0.5, 1.0), iterations=(4, 4)))
    res = register(Image(pair.target, grid), Image(pair.source, grid), config=cfg, device="cpu")
    return res, Image(pair.target_labels[None], grid), Image(pair.source_labels[None], grid)


def test_render_result_and_html_report(result2d, tmp_path):
    res, labels_f, labels_m = result2d
    out = qc_report(res, tmp_path / "report", labels_f, labels_m, name="case1", title="RDMM <case 1>",
                    metrics={"note": "a & b"})
    assert png_size(out["png"])[0] > 1000
    page = out["html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    data = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page).group(1)
    assert base64.b64decode(data) == out["png"].read_bytes()
    for key in ("Dice before", "Dice", "folding voxels", "seconds", "method"):
        assert f">{key}</th>" in page
    assert "a &amp; b" in page and "<details>" in page and "&quot;rdmm&quot;" not in page
    assert '"model": "rdmm"' in page  # the configuration, as JSON
    assert "RDMM <case 1>" not in page and "RDMM &lt;case 1&gt;" in page  # escaped title
    sigma = res.sigma_maps()
    fig = qc_figure(fixed=res.fixed, moving_on_fixed=res.moving, warped=res.warped(),
                    moving_voxels=res.moving_voxels(), jacobian=res.jacobian_determinant(),
                    sigma_t0=sigma[0], sigma_t1=sigma[1])
    assert {"qc:sigma_t0:all", "qc:sigma_t1:all"} <= {a.get_gid() for a in fig.axes}
    png = render_result(res, tmp_path / "plain.png")  # no labels: no label panel, still a figure
    assert png_size(png)[0] > 1000


def test_write_html_report_escapes_and_embeds(tmp_path, case2d):
    kw, _ = case2d
    png = render_qc(tmp_path / "f.png", **kw)
    page = write_html_report(tmp_path / "r.html", png, {"<script>": 1.23456789, "nested": {"dice": 0.5}},
                             title="x</title><script>alert(1)</script>", config={"a": "<b>"})
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text
    assert "&lt;script&gt;" in text and "1.235" in text and "nested.dice" in text and "&lt;b&gt;" in text
    assert "data:image/png;base64," in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match="not a PNG"):
        write_html_report(tmp_path / "bad.html", page, {}, "t")


def test_html_report_names_metrics_tables_dice_per_label_and_shows_extra_figures(tmp_path, case2d):
    kw, _ = case2d
    png = render_qc(tmp_path / "f.png", **kw)
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>'
    (tmp_path / "sub 01_qc_flicker.svg").write_text(svg)
    metrics = {"status": "ok", "seconds": 1.5, "mean_dice": 0.8, "mean_dice_before": 0.6,
               "folds": {"folding_voxels": 2, "det_min": -0.25}, "tre": {"mean": 1.25}, "my_key": 3}
    page = write_html_report(tmp_path / "r.html", png, metrics, "lddmm: 01",
                             label_dice={"2": 0.9, "10": 0.7, "1": float("nan")},
                             label_dice_before={"1": 0.5, "2": 0.4, "10": 0.8},
                             figures=[("before/after flicker", "sub 01_qc_flicker.svg")]).read_text(encoding="utf-8")
    # named metrics, the raw key kept in the title
    for key, name in (("mean_dice", "mean Dice"), ("folds.folding_voxels", "folding voxels"),
                      ("folds.det_min", "min det J"), ("seconds", "seconds"),
                      ("mean_dice_before", "mean Dice before registration"), ("tre.mean", "TRE mean (mm)"),
                      ("my_key", "my key")):
        assert f'<th scope="row" title="{key}">{name}</th>' in page, key
    # the Dice per label, numerically ordered, before / after / change
    table = page[page.index('<table class="dice">'):]
    table = table[:table.index("</table>")]
    assert [int(v) for v in re.findall(r'<th scope="row">(\d+)</th>', table)] == [1, 2, 10]
    assert "<td class=\"value\">0.400</td><td class=\"value\">0.900</td><td class=\"value\">+0.500</td>" in table
    assert "<td class=\"value\">0.800</td><td class=\"value\">0.700</td><td class=\"value\">&minus;0.100</td>" in table
    assert "&ndash;" in table  # label 1: no Dice after
    # the extra figure: embedded (the page stands alone when copied); the figures fit the width
    uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    assert f'<img src="{uri}" alt="before/after flicker"' in page and page.count("base64,") == 2
    assert "<figcaption>before/after flicker</figcaption>" in page
    assert "max-width: 1340px" in page and "figure img { display: block; max-width: 100%; height: auto; }" in page
    # without per-label Dice there is no such table
    plain = write_html_report(tmp_path / "p.html", png, {"mean_dice": 0.5}, "t").read_text(encoding="utf-8")
    assert "Dice per label" not in plain and "<figcaption>" not in plain


def test_format_value():
    assert format_value(0.123456) == "0.1235"
    assert format_value(3) == "3" and format_value(True) == "True" and format_value(0.0) == "0"
    assert format_value(torch.tensor(2.5)) == "2.5" and format_value((1, 0.5)) == "[1, 0.5]"


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, rdmm_pipelines, rdmm_pipelines.qc; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
