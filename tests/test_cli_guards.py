"""The command line refuses bad output locations and label inputs before any work, never writes over
an input, refuses an incomplete result, and names a result's method from its record."""

import json
import os
import time
from pathlib import Path

import pytest
import torch

from conftest import blob as _blob, blob_pair_files
from rdmm_pipelines import Grid, Image, save_image
from rdmm_pipelines.cli import main


@pytest.fixture()
def files(tmp_path):
    return blob_pair_files(tmp_path)


def _register(files, out, *extra):
    return main(["register", str(files["fixed"]), str(files["moving"]), "--out", str(out), "-q", "--no-qc",
                 "--config", str(files["config"]), *extra])


def test_a_typo_in_a_label_path_fails_before_the_registration(files, tmp_path, capsys):
    t0 = time.perf_counter()
    rc = _register(files, tmp_path / "o", "--fixed-labels", str(files["fixed_labels"]),
                   "--moving-labels", str(tmp_path / "mvoing_labels.nii.gz"))
    assert rc == 2 and time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert "--moving-labels" in err and "mvoing_labels.nii.gz" in err and "not found" in err
    assert not (tmp_path / "o" / "registration.json").exists()
    rc = _register(files, tmp_path / "o", "--fixed-labels", str(files["fixed_labels"]))
    assert rc == 2 and "both --fixed-labels and --moving-labels" in capsys.readouterr().err


def test_an_out_that_is_a_file_or_unwritable_fails_before_the_registration(files, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert _register(files, tmp_path / "afile") == 2
    assert "not a directory" in capsys.readouterr().err
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere: the read-only case cannot be made here")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert _register(files, ro / "out") == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_a_label_input_inside_out_is_never_written_over(files, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    victim = out / "warped.nii.gz"  # an output's name
    victim.write_bytes(Path(files["moving_labels"]).read_bytes())
    before = victim.read_bytes()
    rc = _register(files, out, "--fixed-labels", str(files["fixed_labels"]), "--moving-labels", str(victim))
    assert rc == 2 and "would be overwritten" in capsys.readouterr().err
    assert victim.read_bytes() == before


def test_apply_refuses_an_incomplete_result_and_evaluate_names_the_recorded_method(files, tmp_path, capsys):
    out = tmp_path / "o"
    assert _register(files, out) == 0
    capsys.readouterr()
    incomplete = tmp_path / "killed"
    incomplete.mkdir()
    (incomplete / "displacement_itk.nii.gz").write_bytes((out / "displacement_itk.nii.gz").read_bytes())
    rc = main(["apply", str(incomplete), str(files["moving"]), "--out", str(tmp_path / "w.nii.gz")])
    assert rc == 2 and "not a complete result" in capsys.readouterr().err
    assert not (tmp_path / "w.nii.gz").exists()
    rc = main(["evaluate", str(out), "--fixed-labels", str(files["fixed_labels"]),
               "--moving-labels", str(files["moving_labels"]), "--out", str(tmp_path / "e.json")])
    assert rc == 0
    assert json.loads((tmp_path / "e.json").read_text())["method"] == "vsvf"


def test_a_second_run_into_the_same_out_is_refused_and_overwrite_replaces_the_whole_result(files, tmp_path, capsys):
    out = tmp_path / "o"
    rdmm = json.loads(Path(files["config"]).read_text())
    rdmm["model"] = "rdmm"
    (tmp_path / "rdmm.json").write_text(json.dumps(rdmm))
    assert main(["register", str(files["fixed"]), str(files["moving"]), "--out", str(out), "-q",
                 "--config", str(tmp_path / "rdmm.json")]) == 0
    assert (out / "preweights.nii.gz").is_file() and (out / "qc.html").is_file()
    assert (out / "qc.png").stat().st_mtime_ns <= (out / "registration.json").stat().st_mtime_ns  # record last
    record = (out / "registration.json").read_bytes()
    (out / ".warped.nii.gz.abc123.tmp.nii.gz").write_text("left by a killed run")
    capsys.readouterr()
    assert _register(files, out) == 2  # vSVF into the RDMM result's folder
    err = capsys.readouterr().err
    assert "holds a registration result" in err and "--overwrite" in err
    assert (out / "registration.json").read_bytes() == record  # nothing touched
    assert _register(files, out, "--overwrite") == 0
    names = {p.name for p in out.iterdir()}
    assert "preweights.nii.gz" not in names and "sigma_t0.nii.gz" not in names  # nothing stale
    assert not any(n.startswith(".") for n in names)
    assert "qc.png" not in names  # --no-qc this time: the old report went with the old result
    assert json.loads((out / "registration.json").read_text())["config"]["model"] == "vsvf"
    # the record is the last file written
    record_time = (out / "registration.json").stat().st_mtime_ns
    assert all(p.stat().st_mtime_ns <= record_time for p in out.iterdir())


def test_the_library_never_silently_replaces_a_saved_result(files, tmp_path):
    from rdmm_pipelines import register
    from rdmm_pipelines.config import RegistrationConfig

    cfg = json.loads(Path(files["config"]).read_text())
    r = register(str(files["fixed"]), str(files["moving"]), config=RegistrationConfig.from_dict(cfg), device="cpu")
    r.save(tmp_path / "r")
    with pytest.raises(FileExistsError, match="already holds a registration result"):
        r.save(tmp_path / "r")
    r.save(tmp_path / "r", overwrite=True)
    assert (tmp_path / "r" / "registration.json").is_file()


def test_evaluate_refuses_moving_labels_on_another_grid(files, tmp_path, capsys):
    out = tmp_path / "o"
    assert _register(files, out) == 0
    shifted = Grid.from_shape((24, 24), spacing=(1.0, 1.0), origin=(5.0, 0.0, 0.0))
    other = save_image(Image((_blob(1.5) > 0.5).long(), shifted), tmp_path / "ml_shifted.nii.gz")
    capsys.readouterr()
    rc = main(["evaluate", str(out), "--fixed-labels", str(files["fixed_labels"]), "--moving-labels", str(other),
               "--out", str(tmp_path / "e.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "ml_shifted.nii.gz" in err and "moving image's grid" in err
    assert not (tmp_path / "e.json").exists()
    record = json.loads((out / "registration.json").read_text())
    assert record["inputs"]["moving"]["grid"]["shape"] == [24, 24]


def test_a_gzip_whose_checksum_fails_is_refused_by_the_library_and_the_baselines(files, tmp_path):
    from rdmm_pipelines.interfaces.baselines.common import check_inputs
    from rdmm_pipelines.spatial import load_image

    good = Path(files["moving"]).read_bytes()
    bad = bytearray(good)
    bad[-6] ^= 0xFF  # the CRC-32 field of the gzip trailer: nibabel alone reads the voxels happily
    path = tmp_path / "crc.nii.gz"
    path.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="crc.nii.gz: the gzip stream is corrupt"):
        load_image(path)
    with pytest.raises(ValueError, match="moving image .*crc.nii.gz: the gzip stream is corrupt"):
        check_inputs(files["fixed"], path, tmp_path / "out", "", "ants-syn")
    assert main(["register", str(files["fixed"]), str(path), "--out", str(tmp_path / "o"), "-q"]) == 2


def test_images_that_do_not_overlap_are_refused_before_the_optimisation(files, tmp_path, capsys):
    far = save_image(Image(_blob(1.5), Grid.from_shape((24, 24), origin=(500.0, 0.0, 0.0))), tmp_path / "far.nii.gz")
    rc = main(["register", str(files["fixed"]), str(far), "--out", str(tmp_path / "o"), "-q", "--no-affine"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not overlap" in err and "affine" in err
    assert not (tmp_path / "o" / "registration.json").exists()
    half = save_image(Image(_blob(1.5), Grid.from_shape((24, 24), origin=(22.0, 0.0, 0.0))), tmp_path / "half.nii.gz")
    assert _register(files, tmp_path / "h", "--no-affine") == 0  # the fixture's pair overlaps fully
    assert main(["register", str(files["fixed"]), str(half), "--out", str(tmp_path / "w"), "-q", "--no-qc",
                 "--no-affine", "--config", str(files["config"])]) == 0
    record = json.loads((tmp_path / "w" / "registration.json").read_text())
    assert any("% of the fixed image's voxels fall inside" in w for w in record["warnings"])


def test_evaluate_records_points_outside_the_grid_and_off_the_plane(files, tmp_path, capsys):
    out = tmp_path / "o"
    assert _register(files, out) == 0
    fixed_pts, moving_pts = tmp_path / "f.txt", tmp_path / "m.txt"
    fixed_pts.write_text("10 12 0\n300 12 0\n11 13 7\n")  # the 2nd outside, the 3rd 7 mm off the plane
    moving_pts.write_text("10 12 0\n300 12 0\n11 13 0\n")
    rc = main(["evaluate", str(out), "--fixed-labels", str(files["fixed_labels"]), "--moving-labels",
               str(files["moving_labels"]), "--fixed-points", str(fixed_pts), "--moving-points", str(moving_pts),
               "--out", str(tmp_path / "e.json")])
    assert rc == 0
    warnings = json.loads((tmp_path / "e.json").read_text())["warnings"]
    assert any("1 of 3 fixed points lie outside the fixed grid" in w for w in warnings), warnings
    assert any("1 of 3 fixed points lie off the 2D image's plane (up to 7 mm)" in w for w in warnings), warnings


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only: skipped where mounting is not allowed)."""
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_full_disk_is_refused_before_the_work_and_a_save_that_runs_out_leaves_no_final_file(files, tmp_path,
                                                                                             tiny_disk, capsys):
    from rdmm_pipelines import register
    from rdmm_pipelines.config import RegistrationConfig

    big = save_image(Image(torch.rand(1, 96, 96), Grid.from_shape((96, 96))), tmp_path / "big.nii.gz")
    t0 = time.perf_counter()
    assert main(["register", str(big), str(big), "--out", str(tiny_disk / "out"), "-q"]) == 2
    assert "MB free on its file system" in capsys.readouterr().err and time.perf_counter() - t0 < 5
    # the library's save on a disk that fills up: an error, and nothing under a final name
    cfg = RegistrationConfig.from_dict(json.loads(Path(files["config"]).read_text()))
    r = register(str(big), str(big), config=cfg, device="cpu")
    with pytest.raises(OSError):
        r.save(tiny_disk / "lib")
    left = {p.name for p in (tiny_disk / "lib").iterdir()} if (tiny_disk / "lib").exists() else set()
    assert "registration.json" not in left and not any(n.startswith(".") for n in left)
    from rdmm_pipelines.spatial import load_image

    for name in left:  # whatever was completed before the disk filled is whole
        load_image(tiny_disk / "lib" / name)


def test_killed_at_any_moment_a_run_leaves_no_record_and_no_partial_file_and_the_next_run_completes(files, tmp_path):
    import signal
    import subprocess
    import sys

    from rdmm_pipelines.spatial import load_image

    cfg = json.loads(Path(files["config"]).read_text())
    cfg["optimizer"] = {"scales": [0.5, 1.0], "iterations": [40, 40], "window": 0}
    (tmp_path / "slow.json").write_text(json.dumps(cfg))
    big = save_image(Image(torch.rand(1, 128, 128), Grid.from_shape((128, 128))), tmp_path / "big.nii.gz")
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "rdmm_pipelines.cli", "register", str(big), str(files["moving"]), "--out", str(out),
           "-q", "--config", str(tmp_path / "slow.json")]
    for delay in (1.0, 2.0, 3.0):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "registration.json").exists():  # finished before the kill: nothing to check
            break
        for p in (out.iterdir() if out.exists() else []):  # (hidden temporaries may stay: the next run removes them)
            if p.name.endswith(".nii.gz") and not p.name.startswith("."):
                load_image(p)  # a file under a final name is whole
    rc = subprocess.run(cmd, capture_output=True, text=True).returncode  # no --overwrite needed
    assert rc == 0 and (out / "registration.json").is_file()
    assert not any(p.name.startswith(".") for p in out.iterdir())


def test_a_second_run_into_a_folder_being_written_is_refused(files, tmp_path, capsys):
    import fcntl

    out = tmp_path / "o"
    out.mkdir()
    with open(out / ".rdmm-register.lock", "w") as fh:  # what a running `rdmm register` holds
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _register(files, out) == 2
        assert "another rdmm register is writing into it" in capsys.readouterr().err
    assert _register(files, out) == 0  # released: the next run goes ahead
    assert not (out / ".rdmm-register.lock").exists()


def test_every_command_line_option_has_help_text():
    import argparse

    from rdmm_pipelines.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    missing = [(name, action.option_strings or action.dest) for name, sub in commands.items()
               for action in sub._actions if not action.help and not isinstance(action, argparse._HelpAction)]
    assert missing == []


# ------------------------------------------------------------------ rdmm evaluate: what it measures, what it names
def test_evaluate_without_labels_gives_folds_and_the_recorded_method_and_seconds(files, tmp_path, capsys):
    out = tmp_path / "o"
    assert _register(files, out) == 0
    recorded = json.loads((out / "registration.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(out), "--out", str(tmp_path / "e.json")]) == 0
    printed = capsys.readouterr().out
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["method"] == "vsvf" and ev["seconds"] == pytest.approx(recorded["timings_seconds"]["total"])
    assert ev["dice"] == {} and ev["mean_dice"] is None and ev["tre"] is None
    assert ev["folds"]["folding_voxels"] == recorded["folds"]["folding_voxels"]
    assert "folding voxels" in printed and "Dice" not in printed and "nan" not in printed
    assert printed.startswith(f"vsvf ({recorded['timings_seconds']['total']:.2f} s): ")
    points = tmp_path / "f.txt"
    points.write_text("10 10\n14 12\n")
    assert main(["evaluate", str(out), "--fixed-points", str(points), "--moving-points", str(points),
                 "--out", str(tmp_path / "t.json"), "--method", "mine"]) == 0
    printed = capsys.readouterr().out
    ev = json.loads((tmp_path / "t.json").read_text())
    assert ev["method"] == "mine" and ev["tre"]["n_points"] == 2 and ev["dice"] == {}
    assert "TRE" in printed and "Dice" not in printed


def test_evaluate_names_what_was_run_as_the_cohort_does(files, tmp_path):
    from rdmm_pipelines.cli_records import method_of_record, read_record
    from rdmm_pipelines.workflows.pair import METHODS

    def record(model, source="optimized", **inputs):
        return {"config": {"model": model, "regional": {"source": source}}, "inputs": inputs}

    names = {method_of_record(record("rdmm")), method_of_record(record("rdmm", "predefined")),
             method_of_record(record("lddmm")), method_of_record(record("vsvf", "predefined")),
             method_of_record(record("rdmm", network={"model": "rdmm"})),
             method_of_record(record("lddmm", weights={"epoch": 1}))}
    assert names == {"rdmm-optimized", "rdmm-predefined", "lddmm", "vsvf", "rdmm-net", "lddmm-net"}
    assert names <= set(METHODS)
    assert method_of_record({"inputs": {}}) is None
    # a network's record names the moving image's file, not its grid: the grid is read from the file
    folder = tmp_path / "net"
    folder.mkdir()
    data = {**record("lddmm", network={"model": "lddmm"}), "timings_seconds": {"total": 0.25}}
    data["inputs"]["moving"] = {"path": str(files["moving"]), "sha256": "x"}
    (folder / "registration.json").write_text(json.dumps(data))
    found = read_record(folder / "displacement_itk.nii.gz")
    assert (found.method, found.seconds, found.moving_grid.shape) == ("lddmm-net", 0.25, (24, 24))


def test_evaluate_reads_a_baseline_folder_and_falls_back_clearly_without_a_record(files, tmp_path, capsys):
    from rdmm_pipelines.cli_records import _BASELINE_NAMES
    from rdmm_pipelines.interfaces.baselines import BASELINES, METHODS, available
    from rdmm_pipelines.workflows.pair import BASELINE_METHODS

    assert {_BASELINE_NAMES[m] for m in METHODS} == set(BASELINE_METHODS)  # every runner, named as the cohort does
    ok, why = available("sitk-demons-fss")
    if not ok:
        pytest.skip(why)
    folder = tmp_path / "demons"
    run = BASELINES["sitk-demons-fss"](files["fixed"], files["moving"], folder, prefix="p1_", levels=1, iterations=5)
    capsys.readouterr()
    assert main(["evaluate", str(folder), "--out", str(tmp_path / "b.json")]) == 0  # no labels: the log's moving grid
    ev = json.loads((tmp_path / "b.json").read_text())
    assert ev["method"] == "sitk-demons" and ev["seconds"] == pytest.approx(run.seconds, abs=0.006)
    assert main(["apply", str(folder), str(files["moving_labels"]), "--labels", "--out", str(tmp_path / "w.nii.gz")]) == 0
    # a field without a record: the method is "unknown" (said on stderr), the seconds empty, and
    # without labels the grid it maps into is unknown: refused, naming the flags that give it
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "field.nii.gz").write_bytes(run.displacement.read_bytes())
    capsys.readouterr()
    assert main(["evaluate", str(bare / "field.nii.gz"), "--out", str(tmp_path / "u.json")]) == 2
    assert "--fixed-labels and --moving-labels" in capsys.readouterr().err
    assert main(["evaluate", str(bare / "field.nii.gz"), "--fixed-labels", str(files["fixed_labels"]),
                 "--moving-labels", str(files["moving_labels"]), "--out", str(tmp_path / "u.json")]) == 0
    captured = capsys.readouterr()
    ev = json.loads((tmp_path / "u.json").read_text())
    assert ev["method"] == "unknown" and ev["seconds"] is None and ev["mean_dice"] > 0
    assert "'unknown'" in captured.err and "--method" in captured.err
    assert "time not recorded" in captured.out and "mean Dice" in captured.out
