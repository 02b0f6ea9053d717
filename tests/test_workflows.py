"""Pair and cohort workflows (``rdmm_pipelines.workflows``) on tiny 2D synthetic pairs.

The pair workflow is built without running; a cohort of three 32 px pairs (one broken: a constant
moving image) x two methods runs with the cf worker, gives one table row per pair and method
(the broken pair's rows failed, with a message), the layout and the HTML report; a re-run with
the same output folder re-uses the good pairs and runs the failed one again.
"""

import os

os.environ.setdefault("NO_ET", "1")  # pydra's online version check: not offline

import io
import json
import re
import time

import pytest
import torch

from conftest import three_cohort_pairs
from rdmm_pipelines import get_preset
from rdmm_pipelines.config import OptimizerConfig
from rdmm_pipelines.demo import write_pair
from rdmm_pipelines.spatial import load_image
from rdmm_pipelines.synthetic import make_pair_2d

pytestmark = pytest.mark.filterwarnings("ignore")


def _has_sitk() -> bool:
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        return False
    return True


METHODS = ["lddmm", "sitk-demons"] if _has_sitk() else ["lddmm", "vsvf"]
METHOD_OPTIONS = {"sitk-demons": {"levels": 1, "iterations": 5}}


def _pair_spec(**fields):
    from rdmm_pipelines.workflows.manifest import PairSpec

    return PairSpec(**fields)


@pytest.fixture(scope="module")
def cohort_inputs(tmp_path_factory):
    """Three 32x32 pairs (sub-03's moving image is all zeros) and a 2-iteration LDDMM config."""
    torch.set_num_threads(1)
    return three_cohort_pairs(tmp_path_factory.mktemp("cohort_inputs"))


# ------------------------------------------------------------------ the pair workflow
def test_pair_workflow_builds_with_the_expected_nodes(cohort_inputs):
    from rdmm_pipelines.interfaces import Evaluate, RdmmRegistration, SimpleITKDemons
    from rdmm_pipelines.workflows.pair import PairQc, pair_workflow

    pairs, config = cohort_inputs
    p = pairs[0]
    common = {"fixed": p.fixed, "moving": p.moving, "fixed_labels": p.fixed_labels, "moving_labels": p.moving_labels,
                  "subject_id": "sub-01"}
    for method, reg_type, extra in (("rdmm-predefined", RdmmRegistration, {"config_json": config,
                                                                            "moving_regions": p.moving_regions}),
                                    ("sitk-demons", SimpleITKDemons, {"levels": 1})):
        wf = pair_workflow(method, **common, **extra)
        graph = wf.construct()
        nodes = {n.name: n for n in graph.nodes}
        assert set(nodes) == {"register", "evaluate", "qc"}
        assert isinstance(nodes["register"]._task, reg_type)
        assert isinstance(nodes["evaluate"]._task, Evaluate) and isinstance(nodes["qc"]._task, PairQc)
        assert nodes["evaluate"]._task.method == method
        assert {"csv_row", "evaluation", "png", "html", "status"} <= set(type(wf).Outputs.__annotations__) | {
            f.name for f in __import__("attrs").fields(type(wf).Outputs)}
    reg = nodes["register"]._task
    assert reg.levels == 1  # extra keywords reach the registration task
    ours = {n.name: n for n in pair_workflow("rdmm-predefined", **common, config_json=config,
                                             moving_regions=p.moving_regions).construct().nodes}
    task = ours["register"]._task
    assert (task.model, task.regularizer, task.device) == ("rdmm", "predefined", "auto")
    assert task.region_labels is not None
    with pytest.raises(ValueError, match="unknown method"):
        pair_workflow("elastix", **common)


# ------------------------------------------------------------------ the cohort report
def _report_rows():
    """Cohort rows as read back from the CSV (strings): pairs A and B x methods m1 and m2, B/m2
    failed (no Dice, no before Dice in its row)."""
    def row(pid, method, dice, before, seconds, status="ok"):
        return {"id": pid, "method": method, "status": status, "message": "" if status == "ok" else "it broke",
                "mean_dice": dice, "mean_dice_before": before, "folds": "0.0", "folding_voxels": "0",
                "tre_mean": "nan", "seconds": seconds, "device": "cpu"}

    return [row("A", "m1", "0.8", "0.5", "0.2"), row("A", "m2", "0.7", "0.5", "30"),
            row("B", "m1", "0.9", "0.6", "0.9"), row("B", "m2", "nan", "nan", "4", status="failed")]


def test_cohort_report_has_a_before_row_titled_plots_and_thumbnails(tmp_path):
    from rdmm_pipelines.workflows.cohort_report import (
        BEFORE,
        before_registration,
        dice_figure,
        seconds_figure,
        summarize,
        write_cohort_report,
    )

    rows = _report_rows()
    assert before_registration(rows) == {"A": 0.5, "B": 0.6}
    summary = summarize(rows)
    assert [s["method"] for s in summary] == [BEFORE, "m1", "m2"]
    assert summary[0]["pairs"] == 2 and summary[0]["mean_dice"] == pytest.approx(0.55)
    assert summary[0]["median_dice"] == pytest.approx(0.55)
    assert summary[1]["dice_gain"] == pytest.approx(0.3) and summary[2]["dice_gain"] == pytest.approx(0.2)
    assert summary[2]["failed"] == 1 and summary[2]["pairs"] == 2

    dice = dice_figure(rows)
    assert dice.axes[0].get_title() == "Mean Dice per pair"
    assert [t.get_text() for t in dice.axes[0].get_xticklabels()] == [BEFORE, "m1", "m2"]
    secs = seconds_figure(rows)
    ax = secs.axes[0]
    assert ax.get_title() == "Registration time per pair" and ax.get_yscale() == "log"
    secs.canvas.draw()
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["0.3", "1", "3", "10", "30"], ticks  # plain seconds, no powers of ten
    assert not [t for t in ax.yaxis.get_minorticklabels() if t.get_text()]

    links = {(r["id"], r["method"]): f"sub-{r['id']}/{r['method']}/qc page.html" for r in rows
             if r["status"] == "ok"}
    thumbs = {k: v.replace("qc page.html", "qc.png") for k, v in links.items()}
    page = write_cohort_report(rows, tmp_path / "report.html", qc_links=links, thumbnails=thumbs).read_text()
    assert (tmp_path / "cohort_dice.png").is_file() and (tmp_path / "cohort_seconds.png").is_file()
    assert page.count("<img") == 2 + 3  # the two plots and the three pairs that have a figure
    assert '<a href="sub-A/m1/qc%20page.html"><img src="sub-A/m1/qc.png" loading="lazy"' in page
    assert 'alt="Mean Dice per pair"' in page and 'alt="Registration time per pair"' in page
    # the summary's reference row, and one reference row per pair in the pairs table
    assert ('<tr class="before"><td class="name">before registration</td><td>2</td><td>&ndash;</td>'
            "<td>0.550</td><td>0.550</td>") in page
    assert page.count('<tr class="before first">') == 2 and "<td>0.600</td>" in page
    assert "<td>+0.300</td>" in page  # A/m1: 0.8 against 0.5 before
    assert '<tr class="failed"><td class="name">B</td><td class="name">m2</td>' in page


# ------------------------------------------------------------------ a cohort
def test_cohort_runs_tabulates_failures_and_reuses_the_cache(cohort_inputs, tmp_path):
    from rdmm_pipelines.workflows.cohort import run_cohort, xfm_name

    pairs, config = cohort_inputs
    cache = tmp_path / "cache"
    kwargs = {"methods": METHODS, "worker": "cf", "cache_root": cache, "config_json": config,
                  "method_options": METHOD_OPTIONS, "threads": 1, "n_procs": 2}
    log = io.StringIO()
    result = run_cohort(pairs, tmp_path / "out", progress=log, **kwargs)
    lines = log.getvalue().splitlines()
    assert lines[-1] == "6 registrations: 4 ok, 2 failed; 6 run now, 0 re-used from the cache"
    # progress in pairs and registrations (pair x method), not pydra tasks; never going back
    assert lines[-2].startswith("cohort: 3/3 pairs done (6/6 registrations, 2 failed, 0 running) ["), lines
    counts = [tuple(int(n) for n in re.match(r"cohort: (\d+)/3 pairs done \((\d+)/6 registrations", line).groups())
              for line in lines[:-1]]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(counts, counts[1:])) and counts[0][1] < 6, lines

    rows = result.rows
    assert [(r["id"], r["method"]) for r in rows] == [(p.id, m) for p in pairs for m in METHODS]
    header = result.table.read_text().splitlines()[0].split(",")
    for column in ("id", "method", "status", "message", "mean_dice", "dice_1", "folds", "folding_voxels",
                   "tre_mean", "seconds", "device"):
        assert column in header
    for r in rows:
        if r["id"] == "03":
            assert r["status"] == "failed" and r["message"], r
        else:
            assert r["status"] == "ok", r
            assert 0.0 <= float(r["mean_dice"]) <= 1.0 and r["device"] == "cpu"
            assert float(r["folding_voxels"]) >= 0
    lddmm_failed = [f for f in result.failed if f[1] == "lddmm"]
    assert lddmm_failed and lddmm_failed[0][0] == "03" and "constant" in lddmm_failed[0][2]

    out = tmp_path / "out"
    for p in pairs[:2]:
        for m in METHODS:
            folder = out / f"sub-{p.id}" / m
            assert (folder / xfm_name(p.id)).is_file()
            assert (folder / f"sub-{p.id}_qc.html").is_file() and (folder / f"sub-{p.id}_evaluation.json").is_file()
            warped_labels = load_image(folder / f"sub-{p.id}_desc-warped_dseg.nii.gz")
            assert warped_labels.grid.shape == load_image(p.fixed).grid.shape
    assert not (out / "sub-03" / "lddmm" / xfm_name("03")).exists()

    page = result.report.read_text()
    assert result.report == out / "cohort_report.html"
    assert "Failed pairs" in page and "<b>03</b>" in page and "constant" in page
    assert 'href="sub-01/lddmm/sub-01_qc.html"' in page and "data:image/png;base64," in page
    assert (out / "cohort_dice.png").stat().st_size > 0
    # the Dice before registration: one number per pair, the same in every method's row
    assert "mean_dice_before" in header
    for p in pairs[:2]:
        before = {r["mean_dice_before"] for r in rows if r["id"] == p.id}
        assert len(before) == 1 and 0.0 < float(before.pop()) < 1.0
    assert page.count('<tr class="before first">') == 2  # pairs 01 and 02 (03 failed with every method)
    assert '<td class="name">before registration</td>' in page
    # every pair's QC figure, small and linked to its QC page (relative paths, loaded lazily)
    for p in pairs[:2]:
        for m in METHODS:
            assert (f'<a href="sub-{p.id}/{m}/sub-{p.id}_qc.html"><img src="sub-{p.id}/{m}/sub-{p.id}_qc.png" '
                    'loading="lazy"') in page

    provenance = json.loads((out / "cohort_provenance.json").read_text())
    assert provenance["worker"] == "cf" and provenance["pairs"] == 3 and provenance["methods"] == METHODS
    assert provenance["versions"]["torch"] == torch.__version__ and provenance["slurm_jobs"] == []

    # a re-run re-uses the four good registrations and runs only the failed pair again (its
    # registrations get retry 1, so their cached failures are not re-used)
    def without_seconds(rows):  # (ITK's messages hold object addresses, which differ per run)
        return [{k: re.sub("0x[0-9a-f]+", "0x", v) for k, v in r.items() if k != "seconds"} for r in rows]

    log = io.StringIO()
    again = run_cohort(pairs, tmp_path / "out", progress=log, **kwargs)
    assert without_seconds(again.rows) == without_seconds(rows)
    assert [r["seconds"] for r in again.rows if r["id"] != "03"] == [r["seconds"] for r in rows if r["id"] != "03"]
    assert json.loads((out / "cohort_retries.json").read_text()) == {"03": {m: 1 for m in METHODS}}
    lines = log.getvalue().splitlines()
    assert lines[-1] == "6 registrations: 4 ok, 2 failed; 2 run now, 4 re-used from the cache", lines
    # (pair workflows re-used whole from the cache may not be expanded into jobs, so they may not
    # be heard while it runs; the last line counts them from the table)
    assert lines[-2].startswith("cohort: 3/3 pairs done (6/6 registrations, 2 failed, 0 running) ["), lines


def test_rdmm_pair_workflow_passes_sigma_maps_to_its_report(cohort_inputs, tmp_path):
    """RDMM's sigma(x) at t = 0 and 1 leave the registration (positive, within the kernel's
    sigmas in mm) and reach the QC node."""
    from rdmm_pipelines.interfaces import run
    from rdmm_pipelines.workflows.pair import pair_workflow

    pairs, _ = cohort_inputs
    p = pairs[0]
    cfg = get_preset("synthetic-optimized", "rdmm").replace(
        optimizer=OptimizerConfig(scales=(1.0,), iterations=(2,), map_low_res_factor=None))
    rdmm_config = tmp_path / "rdmm.json"
    rdmm_config.write_text(json.dumps(cfg.to_dict()))
    wf = pair_workflow("rdmm-optimized", fixed=p.fixed, moving=p.moving, fixed_labels=p.fixed_labels,
                       moving_labels=p.moving_labels, subject_id="sub-01", config_json=rdmm_config, threads=1)
    out = run(wf, cache_root=tmp_path / "cache", worker="debug")
    assert out.status == "ok" and out.png is not None
    qc_dirs = [d for d in (tmp_path / "cache").glob("python-*") if (d / "sub-01_rdmm-optimized_qc.png").exists()]
    assert len(qc_dirs) == 1
    import cloudpickle

    with open(qc_dirs[0] / "_job.pklz", "rb") as f:
        qc_task = cloudpickle.load(f).task
    grid = load_image(p.fixed).grid
    from rdmm_pipelines.registration import kernel_sigmas

    # the kernel's sigmas in mm, the narrowest raised to kernel.min_voxels map voxels
    sigmas_mm = [s * grid.domain_scale for s in kernel_sigmas(cfg, grid)]
    for name in ("sigma_t0", "sigma_t1"):
        sigma = load_image(getattr(qc_task, name))
        assert sigma.grid.shape == grid.shape
        assert float(sigma.data.min()) >= min(sigmas_mm) * (1 - 1e-4)
        assert float(sigma.data.max()) <= max(sigmas_mm) * (1 + 1e-4)


def test_pair_workflow_runs_the_affine_stage_as_its_own_node(cohort_inputs, tmp_path):
    """With the affine stage enabled, our registration starts from the ``affine`` node's ITK
    transform (recorded as given in registration.json); a configuration without it has no node."""
    from rdmm_pipelines.interfaces import run
    from rdmm_pipelines.workflows.pair import pair_workflow

    from rdmm_pipelines.affine import AffineTransform

    pairs, config = cohort_inputs  # config: a synthetic preset, affine disabled
    p = pairs[0]
    common = {"fixed": p.fixed, "moving": p.moving, "fixed_labels": p.fixed_labels,
              "moving_labels": p.moving_labels, "subject_id": "sub-01", "threads": 1}
    assert "affine" not in {n.name for n in pair_workflow("lddmm", **common, config_json=config).construct().nodes}

    cfg = get_preset("default", "lddmm").replace(
        optimizer=OptimizerConfig(scales=(1.0,), iterations=(2,), map_low_res_factor=None))
    assert cfg.affine.enabled
    with_affine = tmp_path / "with_affine.json"
    with_affine.write_text(json.dumps(cfg.to_dict()))
    wf = pair_workflow("lddmm", **common, config_json=with_affine)
    assert {n.name for n in wf.construct().nodes} == {"affine", "register", "evaluate", "qc"}
    out = run(wf, cache_root=tmp_path / "cache", worker="debug")
    assert out.status == "ok"
    affine_files = list((tmp_path / "cache").glob("python-*/sub-01_affine_itk.txt"))
    assert len(affine_files) == 1
    records = list((tmp_path / "cache").glob("python-*/sub-01_lddmm/registration.json"))
    assert len(records) == 1
    given_record = json.loads(records[0].read_text())["inputs"]["affine"]
    assert given_record["path"] == str(affine_files[0].resolve())  # the node's, not re-estimated
    saved = AffineTransform.read(records[0].parent / "affine_itk.txt")
    given = AffineTransform.read(affine_files[0])
    assert torch.allclose(torch.as_tensor(saved.matrix), torch.as_tensor(given.matrix), atol=1e-5)


def test_an_interrupted_cohort_resumes_where_it_stopped(tmp_path):
    """`rdmm cohort` killed (SIGKILL, its whole process group) after its first registration
    leaves task locks and no table; the re-run re-uses that registration, runs the rest and
    completes the table."""
    import signal
    import subprocess
    import sys

    from rdmm_pipelines.workflows.manifest import PairSpec, write_manifest

    specs = []
    for seed in (11, 12, 13):
        f = write_pair(make_pair_2d(seed, 48), tmp_path / f"in{seed}")
        specs.append(PairSpec(id=f"p{seed}", fixed=f["target"], moving=f["source"],
                              fixed_labels=f["target_labels"], moving_labels=f["source_labels"]))
    manifest = write_manifest(specs, tmp_path / "pairs.csv")
    cfg = get_preset("synthetic-optimized", "lddmm").replace(
        optimizer=OptimizerConfig(scales=(1.0,), iterations=(15,), map_low_res_factor=None))
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rdmm_pipelines.cli", "cohort", str(manifest), "--out", str(out),
               "--methods", "lddmm", "--config", str(config), "--jobs", "1", "--threads", "1", "--no-qc"]
    env = {**os.environ, "NO_ET": "1"}

    first = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while not list((out / "cache").glob("python-*/*_lddmm_displacement.nii.gz")):
            assert first.poll() is None, "the cohort ended before it could be interrupted"
            assert time.monotonic() < deadline, "no registration finished in 240 s"
            time.sleep(0.2)
        time.sleep(0.5)  # let pydra record that result
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not (out / "cohort_table.csv").exists()
    assert list((out / "cache").glob("*.lock")), "the killed run left no task lock (nothing to test)"

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    summary = [line for line in again.stderr.splitlines() if line.startswith("3 registrations")]
    assert summary, again.stderr
    ran, reused = re.match(r"3 registrations: 3 ok, 0 failed; (\d) run now, (\d) re-used", summary[0]).groups()
    assert int(reused) >= 1 and int(ran) + int(reused) == 3, summary[0]
    rows = (out / "cohort_table.csv").read_text().splitlines()
    assert len(rows) == 4 and all(",lddmm,ok," in row for row in rows[1:])


def test_a_second_run_on_the_same_cache_is_refused_and_stale_locks_are_cleared(tmp_path):
    from rdmm_pipelines.workflows.resume import LOCK_NAME, claim_cache

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "python-0123.lock").write_text("")  # as a job killed on another node leaves it
    held = claim_cache(cache)
    try:
        assert not (cache / "python-0123.lock").exists() and (cache / LOCK_NAME).exists()
        with pytest.raises(RuntimeError, match="another cohort run is using this cache"):
            claim_cache(cache)
    finally:
        held.close()
    claim_cache(cache).close()  # free again once the first run ended


def test_cohort_of_a_minimal_manifest_without_labels_registers_and_reports_folds(cohort_inputs, tmp_path, capsys):
    """`id,fixed,moving` only (the README's minimal manifest, what `rdmm manifest` writes without
    --labels-pattern): every pair is registered and evaluated for folds, with no Dice columns."""
    from rdmm_pipelines.cli import main

    pairs, config = cohort_inputs
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("id,fixed,moving\n" + "".join(f"{p.id},{p.fixed},{p.moving}\n" for p in pairs[:2]))
    out = tmp_path / "out"
    code = main(["cohort", str(manifest), "--out", str(out), "--methods", "lddmm", "--worker", "debug",
                 "--config", str(config), "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    header, *rows = [line.split(",") for line in (out / "cohort_table.csv").read_text().splitlines()]
    assert [r[header.index("id")] for r in rows] == ["01", "02"]
    assert not any(h.startswith("dice_") for h in header)
    for r in rows:
        assert r[header.index("status")] == "ok" and r[header.index("mean_dice")] in ("", "nan")
        assert float(r[header.index("folding_voxels")]) >= 0
    record = json.loads((out / "sub-01" / "lddmm" / "sub-01_evaluation.json").read_text())
    assert record["dice"] == {} and record["folds"]["folded_cells"] >= 0
    assert (out / "cohort_report.html").is_file()
