"""pydra tasks and nipype interfaces (``rdmm_pipelines.interfaces``) run on tiny 2D pairs.

Every task runs and its outputs are checked for content; a failing pair reports status "failed";
results are cached by input content; corrupt inputs are refused when a task is built; the
baselines run where their tools are installed; a nipype workflow runs with MultiProc.
"""

import os

os.environ.setdefault("NO_ET", "1")  # pydra's online version check: not offline

import gzip
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from baseline_tools import require_baseline
from rdmm_pipelines.interfaces import (
    TASKS,
    AffineRegistration,
    ApplyTransform,
    Evaluate,
    NormalizeIntensity,
    RdmmRegistration,
    TaskError,
    VisualReport,
    _pydra,
    run,
)
from rdmm_pipelines.interfaces.common import thread_limits

from rdmm_pipelines import get_preset
from rdmm_pipelines.config import OptimizerConfig
from rdmm_pipelines.spatial import Grid, Image, load_image, save_image
from rdmm_pipelines.synthetic import make_pair_2d

SUBJECT = "sub-01"


# ------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """A 32x32 synthetic pair on an anisotropic, shifted grid, its labels, landmarks and configs."""
    root = tmp_path_factory.mktemp("inputs")
    pair = make_pair_2d(3, 32)
    grid = Grid.from_shape((32, 32), spacing=(1.5, 1.25), origin=(-20.0, 10.0, 3.0))
    paths = {
        "fixed": save_image(Image(pair.target, grid), root / "fixed.nii.gz"),
        "moving": save_image(Image(pair.source, grid), root / "moving.nii.gz"),
        "fixed_labels": save_image(Image(pair.target_labels[None], grid), root / "fixed_labels.nii.gz"),
        "moving_labels": save_image(Image(pair.source_labels[None], grid), root / "moving_labels.nii.gz"),
        "constant": save_image(Image(torch.ones(1, 32, 32), grid), root / "constant.nii.gz"),
    }
    cfg = get_preset("synthetic-optimized", "lddmm").replace(
        optimizer=OptimizerConfig(scales=(1.0,), iterations=(3,), map_low_res_factor=None))
    paths["config"] = root / "config.json"
    paths["config"].write_text(json.dumps(cfg.to_dict()))
    paths["affine_config"] = root / "affine.json"
    paths["affine_config"].write_text(json.dumps({"scales": [1.0], "iterations": [5]}))
    points = grid.voxel_to_world(np.array([[8.0, 8.0], [16.0, 20.0], [24.0, 12.0]]))
    paths["landmarks"] = root / "landmarks.txt"
    np.savetxt(paths["landmarks"], points)
    return paths


@pytest.fixture(scope="module")
def registered(data, tmp_path_factory):
    """One LDDMM registration task, its outputs and its cache root."""
    cache = tmp_path_factory.mktemp("cache")
    task = RdmmRegistration(fixed=data["fixed"], moving=data["moving"], subject_id=SUBJECT, model="lddmm",
                            config_json=data["config"], threads=1)
    return task, run(task, cache_root=cache), cache


def _nifti(path) -> nib.Nifti1Image:
    return nib.load(str(path))


# ------------------------------------------------------------------ package
def test_library_import_does_not_import_pydra():
    code = (
        "import sys; import rdmm_pipelines; import rdmm_pipelines.interfaces as i; "
        "assert 'pydra' not in sys.modules, 'pydra imported'; assert 'nipype' not in sys.modules; "
        "i.RdmmRegistration; assert 'pydra' in sys.modules; print('ok')"
    )
    env = {**os.environ, "NO_ET": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_tasks_have_help_and_declare_gpu_needs():
    from pydra.utils import get_fields

    from rdmm_pipelines import interfaces

    for name in TASKS:
        task = getattr(interfaces, name)
        assert task.__name__ == name and (task.__doc__ or "").strip(), name
        assert isinstance(task.requires_gpu, bool), name
        for field in [*get_fields(task), *get_fields(task.Outputs)]:
            if field.name != "function":
                assert field.help, f"{name}.{field.name} has no help text"
    assert RdmmRegistration.requires_gpu and not Evaluate.requires_gpu


# ------------------------------------------------------------------ registration
def test_registration_outputs(data, registered):
    _, out, _ = registered
    assert (out.status, out.message, out.device_used) == ("ok", "", "cpu")
    assert 0 < out.seconds < 120
    fixed = _nifti(data["fixed"])
    warped = _nifti(out.warped)
    assert warped.shape == fixed.shape
    np.testing.assert_allclose(warped.affine, fixed.affine, atol=1e-5)
    assert np.isfinite(warped.get_fdata()).all() and warped.get_fdata().std() > 0
    field = _nifti(out.displacement)
    assert field.shape[:2] == fixed.shape[:2] and field.shape[-1] == 2
    det = _nifti(out.jacobian).get_fdata()
    assert det.shape[:2] == fixed.shape[:2] and np.isfinite(det).all()
    record = json.loads(Path(out.record).read_text())
    assert record["config"]["model"] == "lddmm" and record["subject_id"] == SUBJECT
    assert record["config"]["optimizer"]["iterations"] == [3]
    assert (Path(out.result_dir) / "registration.json").is_file()
    for path in (out.warped, out.displacement, out.composite, out.jacobian, out.record, out.result_dir):
        assert Path(path).name.startswith(f"{SUBJECT}_lddmm"), path


def test_failing_pair_reports_status_instead_of_raising(data, tmp_path):
    task = RdmmRegistration(fixed=data["fixed"], moving=data["constant"], subject_id=SUBJECT, model="lddmm",
                            config_json=data["config"], threads=1)
    out = run(task, cache_root=tmp_path, worker="cf", n_procs=1)
    assert out.status == "failed"
    assert "constant" in out.message and out.message.startswith("ValueError")
    assert out.warped is None and out.displacement is None and math.isnan(out.seconds)
    assert "Traceback" in (_pydra.cache_dir(task, tmp_path) / f"{SUBJECT}_lddmm_error.txt").read_text()


def _divide_by_zero(x):
    return x / 0


@_pydra.define
class _Boom(_pydra.Task["_Boom.Outputs"]):
    """A task that raises (to test error reporting).

    Args:
        x: divided by zero.
    """

    x: int

    class Outputs(_pydra.Outputs):
        """
        Args:
            y: never set.
        """

        y: float

    function = staticmethod(_divide_by_zero)


def test_run_raises_the_real_traceback_with_the_cf_worker(tmp_path):
    with pytest.raises(TaskError) as err:
        run(_Boom(x=1), cache_root=tmp_path, worker="cf", n_procs=1)
    assert "ZeroDivisionError" in str(err.value) and "return x / 0" in str(err.value)


def test_checksum_is_the_same_in_a_fresh_process(data, tmp_path):
    """A task unpickled by a new interpreter (as a SLURM job does) must find the same cache directory."""
    import cloudpickle

    task = RdmmRegistration(fixed=data["fixed"], moving=data["moving"], subject_id=SUBJECT,
                            config_json=data["config"])
    (tmp_path / "task.pkl").write_bytes(cloudpickle.dumps(task))
    code = f"import pickle; print(pickle.loads(open({str(tmp_path / 'task.pkl')!r}, 'rb').read())._checksum)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "NO_ET": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == task._checksum


def test_define_refuses_a_function_workers_cannot_import():
    with pytest.raises(TypeError, match="module-level function"):
        @_pydra.define
        class _Inline(_pydra.Task["_Inline.Outputs"]):
            x: int

            class Outputs(_pydra.Outputs):
                y: int

            @staticmethod
            def function(x):
                return x


def test_cached_result_is_reused_and_content_change_reruns(data, registered, tmp_path):
    task, first, cache = registered
    stamp = Path(first.record).stat().st_mtime_ns
    start = time.perf_counter()
    again = run(RdmmRegistration(fixed=data["fixed"], moving=data["moving"], subject_id=SUBJECT, model="lddmm",
                                 config_json=data["config"], threads=1), cache_root=cache)
    assert time.perf_counter() - start < 1.0
    assert Path(again.record) == Path(first.record) and Path(again.record).stat().st_mtime_ns == stamp
    assert again.seconds == first.seconds

    # same content at another path: same hash (files are hashed by content, not by path)
    moved = tmp_path / "elsewhere.nii.gz"
    shutil.copy(data["moving"], moved)
    same = RdmmRegistration(fixed=data["fixed"], moving=moved, subject_id=SUBJECT, model="lddmm",
                            config_json=data["config"], threads=1)
    assert _pydra.cache_dir(same, cache) == _pydra.cache_dir(task, cache)

    # new content at the same path: a new hash, and the task runs again
    image = load_image(moved)
    save_image(image.with_data(image.data.flip(-1)), moved)
    changed = RdmmRegistration(fixed=data["fixed"], moving=moved, subject_id=SUBJECT, model="lddmm",
                               config_json=data["config"], threads=1)
    assert _pydra.cache_dir(changed, cache) != _pydra.cache_dir(task, cache)
    out = run(changed, cache_root=cache)
    assert out.status == "ok" and Path(out.record) != Path(first.record)
    assert not np.allclose(_nifti(out.warped).get_fdata(), _nifti(first.warped).get_fdata())


def test_corrupt_and_malformed_inputs_are_refused_when_built(data, tmp_path):
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not an image" * 40)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(Path(data["moving"]).read_bytes()[:40])
    text = tmp_path / "text.nii.gz"
    text.write_bytes(gzip.compress(b"hello world\n" * 100))
    plain = tmp_path / "plain.nii"
    plain.write_bytes(b"\0" * 400)
    for bad in (garbage, truncated, text, plain):
        with pytest.raises((TypeError, ValueError)):
            RdmmRegistration(fixed=data["fixed"], moving=bad, subject_id=SUBJECT)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"optimiser": {"iterations": [3]}}))
    with pytest.raises(ValueError, match="optimiser"):
        RdmmRegistration(fixed=data["fixed"], moving=data["moving"], subject_id=SUBJECT, config_json=config)
    with pytest.raises(ValueError, match="file names"):
        RdmmRegistration(fixed=data["fixed"], moving=data["moving"], subject_id="a/b")
    with pytest.raises(ValueError, match="device"):
        RdmmRegistration(fixed=data["fixed"], moving=data["moving"], subject_id=SUBJECT, device="gpu")
    with pytest.raises(ValueError):
        RdmmRegistration(fixed=data["fixed"], moving=data["moving"], subject_id=SUBJECT, model="syn")


# ------------------------------------------------------------------ apply, evaluate, report
def test_apply_reproduces_the_registration_warp(data, registered, tmp_path):
    _, reg, _ = registered
    out = run(ApplyTransform(displacement=reg.displacement, image=data["moving"], subject_id=SUBJECT),
              cache_root=tmp_path)
    assert out.status == "ok" and Path(out.warped).name == f"{SUBJECT}_moving_warped.nii.gz"
    ours, theirs = _nifti(out.warped), _nifti(reg.warped)
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-5)
    np.testing.assert_allclose(ours.get_fdata(), theirs.get_fdata(), atol=1e-3)
    labels = run(ApplyTransform(displacement=reg.displacement, image=data["moving_labels"], subject_id=SUBJECT,
                                labels=True), cache_root=tmp_path)
    values = set(np.unique(_nifti(labels.warped).get_fdata()).tolist())
    assert values <= set(np.unique(_nifti(data["moving_labels"]).get_fdata()).tolist()) and len(values) > 2


def test_evaluate_writes_record_and_csv_row(data, registered, tmp_path):
    _, reg, _ = registered
    out = run(Evaluate(displacement=reg.displacement, fixed_labels=data["fixed_labels"],
                       moving_labels=data["moving_labels"], fixed_landmarks=data["landmarks"],
                       moving_landmarks=data["landmarks"], method="lddmm", subject_id=SUBJECT,
                       seconds=reg.seconds), cache_root=tmp_path)
    assert out.status == "ok" and 0.0 <= out.mean_dice <= 1.0
    record = json.loads(Path(out.evaluation).read_text())
    assert (record["pair_id"], record["method"], record["status"]) == (SUBJECT, "lddmm", "ok")
    assert record["mean_dice"] == pytest.approx(out.mean_dice)
    assert record["tre"]["n_points"] == 3 and record["folds"]["folding_voxels"] >= 0
    assert isinstance(record["folds"]["folded_cells"], int) and record["folds"]["folded_cells"] >= 0
    assert record["seconds"] == pytest.approx(reg.seconds)
    header, row, *rest = Path(out.csv_row).read_text().splitlines()
    assert not rest and header.startswith("pair_id,method,status") and "dice_1" in header
    assert row.startswith(f"{SUBJECT},lddmm,ok")
    # the warped label map it measured: the registration's field applied by nearest neighbour,
    # and its Dice with the fixed labels is the record's
    from rdmm_pipelines.evaluation import dice_per_label, mean_dice
    from rdmm_pipelines.spatial import load_labels
    from rdmm_pipelines.transforms import DenseTransform

    warped = load_labels(out.warped_labels)
    moving = load_labels(data["moving_labels"])
    expected = DenseTransform.from_displacement_field(reg.displacement, moving.grid).apply(moving)
    assert torch.equal(warped.data, expected.data) and warped.grid.shape == expected.grid.shape
    assert mean_dice(dice_per_label(warped.data, load_labels(data["fixed_labels"]).data)) == pytest.approx(out.mean_dice)


def test_evaluate_records_a_failed_registration(data, tmp_path):
    out = run(Evaluate(displacement=None, fixed_labels=data["fixed_labels"], moving_labels=data["moving_labels"],
                       method="rdmm", subject_id="sub-02", registration_status="failed",
                       registration_message="ValueError: image is constant"), cache_root=tmp_path)
    assert out.status == "failed" and math.isnan(out.mean_dice) and "constant" in out.message
    record = json.loads(Path(out.evaluation).read_text())
    assert record["status"] == "failed" and record["mean_dice"] is None
    assert Path(out.csv_row).read_text().splitlines()[1].startswith("sub-02,rdmm,failed")
    assert out.warped_labels is None


def test_visual_report(data, registered, tmp_path):
    _, reg, _ = registered
    evaluation = run(Evaluate(displacement=reg.displacement, fixed_labels=data["fixed_labels"],
                              moving_labels=data["moving_labels"], method="lddmm", subject_id=SUBJECT),
                     cache_root=tmp_path)
    out = run(VisualReport(fixed=data["fixed"], moving=data["moving"], warped=reg.warped,
                           displacement=reg.displacement, jacobian=reg.jacobian, fixed_labels=data["fixed_labels"],
                           moving_labels=data["moving_labels"], evaluation=evaluation.evaluation, method="lddmm",
                           subject_id=SUBJECT), cache_root=tmp_path)
    assert out.status == "ok", out.message
    assert Path(out.png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = Path(out.html).read_text()
    assert "data:image/png;base64" in page and SUBJECT in page and "mean_dice" in page


# ------------------------------------------------------------------ other stages
def test_normalize_intensity(data, tmp_path):
    out = run(NormalizeIntensity(image=data["moving"], subject_id=SUBJECT, lower=1.0, upper=99.0),
              cache_root=tmp_path)
    assert out.status == "ok"
    img, src = _nifti(out.normalized), _nifti(data["moving"])
    values = img.get_fdata()
    assert img.shape == src.shape and np.allclose(img.affine, src.affine)
    assert values.min() == 0.0 and values.max() == 1.0
    failed = run(NormalizeIntensity(image=data["constant"], subject_id=SUBJECT), cache_root=tmp_path)
    assert failed.status == "failed" and "constant" in failed.message and failed.normalized is None


def test_affine_registration(data, tmp_path):
    from rdmm_pipelines.affine import AffineTransform

    out = run(AffineRegistration(fixed=data["fixed"], moving=data["moving"], subject_id=SUBJECT,
                                 config_json=data["affine_config"], threads=1), cache_root=tmp_path)
    assert out.status == "ok" and out.device_used == "cpu"
    assert Path(out.affine).read_text().startswith("#Insight Transform File")
    transform = AffineTransform.read(out.affine)
    assert transform.ndim == 2 and np.isfinite(transform.matrix).all()
    warped, fixed = _nifti(out.warped), _nifti(data["fixed"])
    assert warped.shape == fixed.shape and np.allclose(warped.affine, fixed.affine)
    assert json.loads(Path(out.record).read_text())["iterations_per_scale"][0] <= 5


# ------------------------------------------------------------------ a pydra workflow of the tasks
def test_pydra_workflow_split_with_a_failing_pair(data, registered):
    """Registration -> Evaluate split over two pairs, one of which fails, with the cf worker: the
    failure is a row of the combined table, and the good pair's registration comes from the cache."""
    cache = registered[2]
    workflow = _pydra.workflow

    @workflow.define(outputs=["status", "mean_dice", "csv_rows"])
    def Cohort(fixed, movings, subject_ids, fixed_labels, moving_labels, config_json):
        reg = workflow.add(
            RdmmRegistration(fixed=fixed, model="lddmm", config_json=config_json, threads=1)
            .split(("moving", "subject_id"), moving=movings, subject_id=subject_ids), name="register")
        ev = workflow.add(
            Evaluate(displacement=reg.displacement, fixed_labels=fixed_labels, moving_labels=moving_labels,
                     method=reg.method, subject_id=reg.subject_id, seconds=reg.seconds,
                     registration_status=reg.status, registration_message=reg.message)
            .combine("register.moving"), name="evaluate")
        return ev.status, ev.mean_dice, ev.csv_row

    start = time.perf_counter()
    # workflow inputs are not typed here: give absolute paths (nodes run in their cache directories)
    out = run(Cohort(fixed=str(data["fixed"]), movings=[str(data["moving"]), str(data["constant"])],
                     subject_ids=[SUBJECT, "sub-02"], fixed_labels=str(data["fixed_labels"]),
                     moving_labels=str(data["moving_labels"]), config_json=str(data["config"])),
              cache_root=cache, worker="cf", n_procs=2)
    assert out.status == ["ok", "failed"]
    assert 0.0 <= out.mean_dice[0] <= 1.0 and math.isnan(out.mean_dice[1])
    rows = [Path(p).read_text().splitlines()[1] for p in out.csv_rows]
    assert rows[0].startswith(f"{SUBJECT},lddmm,ok") and rows[1].startswith("sub-02,lddmm,failed")
    assert "constant" in rows[1]
    assert time.perf_counter() - start < 30


# ------------------------------------------------------------------ baselines
_BASELINES = [
    ("AntsSyN", "ants-syn", {}),
    ("SimpleITKDemons", "sitk-demons-fss", {"levels": 1, "iterations": 5}),
    ("NiftyRegF3D", "niftyreg-f3d", {"aladin": False, "f3d_args": ("-maxit", "5", "-ln", "1")}),
]


def _baselines():
    try:
        from rdmm_pipelines.interfaces import baselines
    except ImportError as exc:
        pytest.skip(f"the baseline runners are not available: {exc}")
    return baselines


@pytest.mark.parametrize("name, method, options", _BASELINES, ids=[b[1] for b in _BASELINES])
def test_baseline_task(data, tmp_path, name, method, options):
    from rdmm_pipelines import interfaces
    from rdmm_pipelines.transforms import DenseTransform

    require_baseline(method)
    task = getattr(interfaces, name)(fixed=data["fixed"], moving=data["moving"], subject_id=SUBJECT, threads=1,
                                     **options)
    out = run(task, cache_root=tmp_path)
    assert out.status == "ok", out.message
    assert (out.method, out.device_used) == (method, "cpu") and out.seconds > 0 and out.tool_version
    fixed, warped = _nifti(data["fixed"]), _nifti(out.warped)
    assert Path(out.warped).name == f"{SUBJECT}_{method}_warped.nii.gz"
    assert warped.shape[:2] == fixed.shape[:2] and np.allclose(warped.affine, fixed.affine, atol=1e-4)
    transform = DenseTransform.from_displacement_field(out.displacement, load_image(data["moving"]).grid)
    assert transform.fixed_grid.shape == (32, 32) and torch.isfinite(transform.moving_voxels).all()


def test_baseline_task_reports_a_missing_tool(data, tmp_path, monkeypatch):
    from rdmm_pipelines.interfaces import SimpleITKDemons

    baselines = _baselines()
    monkeypatch.setattr(baselines, "available", lambda method: (False, f"{method}: pip install SimpleITK"))
    out = run(SimpleITKDemons(fixed=data["fixed"], moving=data["moving"], subject_id=SUBJECT),
              cache_root=tmp_path)  # debug worker: runs in this process, where the patch applies
    assert out.status == "failed" and "pip install SimpleITK" in out.message and out.warped is None


# ------------------------------------------------------------------ nipype
def test_nipype_workflow_multiproc(data, tmp_path, monkeypatch):
    from nipype import Node, Workflow
    from rdmm_pipelines.interfaces.nipype import RdmmApply, RdmmEvaluate, RdmmRegister

    monkeypatch.setenv("LOGNAME", os.environ.get("LOGNAME", "rdmm"))
    reg = Node(RdmmRegister(fixed=str(data["fixed"]), moving=str(data["moving"]), subject_id=SUBJECT,
                            model="lddmm", config_json=str(data["config"]), threads=1), name="register")
    ev = Node(RdmmEvaluate(fixed_labels=str(data["fixed_labels"]), moving_labels=str(data["moving_labels"]),
                           subject_id=SUBJECT, method="lddmm"), name="evaluate")
    ap = Node(RdmmApply(image=str(data["moving"]), subject_id=SUBJECT), name="apply")
    wf = Workflow(name="pair", base_dir=str(tmp_path))
    wf.config["execution"]["crashdump_dir"] = str(tmp_path)  # not the working directory
    wf.config["execution"]["remove_unnecessary_outputs"] = False  # nipype deletes unconnected outputs
    wf.connect([(reg, ev, [("displacement", "displacement"), ("seconds", "seconds")]),
                (reg, ap, [("displacement", "displacement")])])
    graph = wf.run(plugin="MultiProc", plugin_args={"n_procs": 2})
    nodes = {n.name: n for n in graph.nodes()}
    evaluation = Path(nodes["evaluate"].result.outputs.evaluation)
    record = json.loads(evaluation.read_text())
    assert record["status"] == "ok" and 0.0 <= record["mean_dice"] <= 1.0 and record["method"] == "lddmm"
    warped = _nifti(nodes["register"].result.outputs.warped).get_fdata()
    applied = _nifti(nodes["apply"].result.outputs.warped).get_fdata()
    np.testing.assert_allclose(applied, warped, atol=1e-3)


def test_thread_limits_restore_settings(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with thread_limits(2) as n:
        assert n == 2 and torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ
    with pytest.raises(ValueError), thread_limits(-1):
        pass
