"""Trained networks through the command line, a pydra task and the cohort workflow."""

import os

os.environ.setdefault("NO_ET", "1")

import json

import pytest
import torch
from conftest import synthetic_pair_manifest

from rdmm_pipelines.cli import main
from rdmm_pipelines.spatial import Grid, Image, save_image

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four 32x32 pairs as NIfTI, a manifest of them, and an LDDMM network trained on them for one epoch."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("learnt")
    rows, manifest = synthetic_pair_manifest(root, 4)
    run = root / "run"
    assert main(["train", str(manifest), "--out", str(run), "--model", "lddmm", "--epochs", "1",
                 "--val-fraction", "0.25", "--preset", "default", "-q"]) == 0
    return root, manifest, rows, run / "best.pt"


def test_train_writes_checkpoints_record_and_curves(cohort):
    root, _, rows, ckpt = cohort
    record = json.loads((ckpt.parent / "training.json").read_text())
    assert record["network"]["model"] == "lddmm" and record["network"]["image_shape"] == [32, 32]
    assert len(record["training_pairs"]) == 3 and len(record["validation_pairs"]) == 1
    assert set(record["versions"]) >= {"torch", "rdmm_pipelines"} and record["seed"] == 0
    assert 0 <= record["history"][0]["val_dice"] <= 1
    assert (ckpt.parent / "curves.png").stat().st_size > 1000


def test_register_with_a_trained_network(cohort, tmp_path, capsys):
    root, _, rows, ckpt = cohort
    fixed, moving = str(rows[0]["fixed"]), str(rows[0]["moving"])
    out = tmp_path / "reg"
    assert main(["register", fixed, moving, "--model", "lddmm-net", "--weights", str(ckpt), "--out", str(out),
                 "--fixed-labels", str(rows[0]["fixed_labels"]), "--moving-labels", str(rows[0]["moving_labels"]),
                 "-q"]) == 0
    record = json.loads((out / "registration.json").read_text())
    assert record["inputs"]["weights"]["epoch"] == 1 and record["inputs"]["network"]["model"] == "lddmm"
    assert record["evaluation"]["mean_dice"] > 0 and (out / "displacement_itk.nii.gz").exists()
    capsys.readouterr()
    assert main(["register", fixed, moving, "--model", "rdmm-net", "--weights", str(ckpt), "--out", str(out)]) == 2
    assert "lddmm network, not rdmm" in capsys.readouterr().err
    assert main(["register", fixed, moving, "--model", "lddmm", "--weights", str(ckpt), "--out", str(out)]) == 2
    assert "--weights is for a trained network" in capsys.readouterr().err
    assert main(["register", fixed, moving, "--model", "lddmm-net", "--out", str(out)]) == 2
    assert "needs --weights" in capsys.readouterr().err
    big = save_image(Image(torch.rand(1, 40, 40), Grid.from_shape((40, 40))), tmp_path / "big.nii.gz")
    assert main(["register", str(big), str(big), "--model", "lddmm-net", "--weights", str(ckpt), "--out",
                 str(tmp_path / "big")]) == 2
    assert "does not fit the network's input size (32, 32)" in capsys.readouterr().err
    assert main(["register", str(big), str(big), "--model", "lddmm-net", "--weights", str(ckpt), "--resample",
                 "--out", str(tmp_path / "big"), "--no-qc", "-q"]) == 0


def test_train_refuses_a_manifest_with_images_of_another_size(cohort, tmp_path, capsys):
    root, _, rows, _ = cohort
    big = save_image(Image(torch.rand(1, 40, 40), Grid.from_shape((40, 40))), tmp_path / "big.nii.gz")
    manifest = tmp_path / "mixed.csv"
    manifest.write_text(f"id,fixed,moving\na,{rows[0]['fixed']},{rows[0]['moving']}\nb,{big},{big}\n")
    assert main(["train", str(manifest), "--out", str(tmp_path / "run"), "--epochs", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "1 of 2 pairs cannot be used" in err and "b: fixed image of size (40, 40)" in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_network_task_and_cohort_method(cohort, tmp_path):
    from rdmm_pipelines.interfaces import NetworkRegistration, run
    from rdmm_pipelines.workflows.cohort import run_cohort
    from rdmm_pipelines.workflows.manifest import read_manifest

    root, manifest, rows, ckpt = cohort
    out = run(NetworkRegistration(fixed=rows[1]["fixed"], moving=rows[1]["moving"], weights=ckpt, subject_id="p1",
                                  method="lddmm-net", threads=1), cache_root=tmp_path / "cache")
    assert out.status == "ok" and out.device_used == "cpu" and out.sigma_t0 is None
    with pytest.raises(Exception, match="not a readable PyTorch checkpoint"):
        NetworkRegistration(fixed=rows[1]["fixed"], moving=rows[1]["moving"], weights=manifest, subject_id="p1")
    result = run_cohort(read_manifest(manifest)[:2], tmp_path / "cohort", ["lddmm-net"], worker="debug",
                        method_options={"lddmm-net": {"weights": str(ckpt)}}, threads=1, report=False, progress=False)
    assert [r["status"] for r in result.rows] == ["ok", "ok"]
    assert all(0 < float(r["mean_dice"]) <= 1 for r in result.rows)
    assert (tmp_path / "cohort" / "sub-p0" / "lddmm-net").is_dir()
