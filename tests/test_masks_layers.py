"""Masks and the similarity choice above the library: ``rdmm register --fixed-mask/--moving-mask/
--similarity`` (recorded in registration.json; a bad mask refused naming its flag before any work),
the cohort manifest's ``fixed_mask``/``moving_mask`` columns through the cohort workflow, the pydra
tasks (RdmmRegistration, AffineRegistration, AntsSyN) and the nipype interface.

Images are 24 px 2D blobs and every registration runs 2 iterations at one scale, so each test
takes a few seconds.
"""

import os

os.environ.setdefault("NO_ET", "1")  # pydra's online version check: not offline

import argparse
import json
import time
from pathlib import Path

import pytest
import torch

from rdmm_pipelines import Grid, Image, OptimizerConfig, get_preset, save_image
from rdmm_pipelines.cli import main
from rdmm_pipelines.cli_config import registration_config

pytestmark = pytest.mark.filterwarnings("ignore")

N = 24


def _blob(shift: float, n: int = N) -> torch.Tensor:
    ax = torch.arange(n, dtype=torch.float32)
    y, x = torch.meshgrid(ax, ax, indexing="ij")
    return torch.exp(-(((y - n / 2 - shift) / 4) ** 2 + ((x - n / 2) / 5) ** 2))[None]


def _box(n: int, lo: int, hi: int) -> torch.Tensor:
    mask = torch.zeros(1, n, n)
    mask[:, lo:hi, lo:hi] = 1.0
    return mask


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A 2D pair, good masks (the fixed one on a coarser grid of the same world space), bad masks
    and a 2-iteration one-scale LDDMM configuration without the affine stage."""
    d = tmp_path_factory.mktemp("masks_layers")
    grid = Grid.from_shape((N, N))
    files = {
        "fixed": save_image(Image(_blob(0.0), grid), d / "fixed.nii.gz"),
        "moving": save_image(Image(_blob(1.5), grid), d / "moving.nii.gz"),
        # 12 voxels of 2 mm: the same field of view as the images, another grid
        "fixed_mask": save_image(Image(_box(N // 2, 2, 10), Grid.from_shape((N // 2, N // 2), spacing=(2.0, 2.0))),
                                 d / "fixed_mask.nii.gz"),
        "moving_mask": save_image(Image(_box(N, 3, 21), grid), d / "moving_mask.nii.gz"),
        "empty": save_image(Image(torch.zeros(1, N, N), grid), d / "empty.nii.gz"),
        "mask3d": save_image(Image(torch.ones(1, N, N, 5), Grid.from_shape((N, N, 5))), d / "mask3d.nii.gz"),
        "outside": save_image(Image(_box(N, 3, 21), Grid.from_shape((N, N), origin=(500.0, 0.0, 0.0))),
                              d / "outside.nii.gz"),
        "missing": d / "absent_mask.nii.gz",
    }
    cfg = get_preset("default", "lddmm")
    cfg = cfg.replace(affine=cfg.affine.replace(enabled=False),
                      optimizer=OptimizerConfig(scales=(1.0,), iterations=(2,), map_low_res_factor=None))
    files["config"] = d / "config.json"
    files["config"].write_text(json.dumps(cfg.to_dict()))
    # the same with the affine stage (2 iterations at one scale): the workflows' separate affine node
    with_affine = cfg.replace(affine=cfg.affine.replace(enabled=True, scales=(1.0,), iterations=(2,), min_size=8))
    files["config_affine"] = d / "config_affine.json"
    files["config_affine"].write_text(json.dumps(with_affine.to_dict()))
    return d, files


def _record(folder: Path) -> dict:
    return json.loads((folder / "registration.json").read_text())


def _assert_mask_recorded(record: dict, key: str, path: Path) -> None:
    entry = record["inputs"][key]
    assert entry is not None and Path(entry["path"]) == Path(path).resolve(), entry
    assert entry["voxels_inside"] > 0


# ------------------------------------------------------------------ rdmm register
def test_register_with_masks_and_mi_records_them(lab, tmp_path, capsys):
    d, files = lab
    out = tmp_path / "out"
    rc = main(["register", str(files["fixed"]), str(files["moving"]), "--out", str(out), "--model", "lddmm",
               "--iterations", "2", "--no-affine", "--map-resolution", "1", "-q", "--no-qc",
               "--fixed-mask", str(files["fixed_mask"]), "--moving-mask", str(files["moving_mask"]),
               "--similarity", "mi"])
    assert rc == 0, capsys.readouterr().err
    record = _record(out)
    _assert_mask_recorded(record, "fixed_mask", files["fixed_mask"])
    _assert_mask_recorded(record, "moving_mask", files["moving_mask"])
    assert record["config"]["similarity"]["name"] == "mi"
    assert record["config"]["affine"]["similarity"] == "mi"  # a multi-modal pair: MI in the affine stage too


def test_register_without_masks_records_none(lab, tmp_path):
    d, files = lab
    out = tmp_path / "out"
    assert main(["register", str(files["fixed"]), str(files["moving"]), "--out", str(out), "-q", "--no-qc",
                 "--config", str(files["config"]), "--similarity", "ssd"]) == 0
    record = _record(out)
    assert record["inputs"]["fixed_mask"] is None and record["inputs"]["moving_mask"] is None
    assert record["config"]["similarity"]["name"] == "ssd"
    assert record["config"]["affine"]["similarity"] == "ncc"  # only mi changes the affine stage's


@pytest.mark.parametrize("flag", ["--fixed-mask", "--moving-mask"])
@pytest.mark.parametrize("bad, words", [
    ("missing", "file not found"),
    ("mask3d", "is 3D but the"),
    ("empty", "is empty"),
    ("outside", "does not overlap the"),
    ("config", "cannot be read as NIfTI"),
])
def test_a_bad_mask_is_refused_naming_its_flag_before_any_work(lab, tmp_path, capsys, flag, bad, words):
    d, files = lab
    out = tmp_path / "out"
    t0 = time.perf_counter()
    rc = main(["register", str(files["fixed"]), str(files["moving"]), "--out", str(out), "-q",
               "--config", str(files["config"]), flag, str(files[bad])])
    seconds = time.perf_counter() - t0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"rdmm register: error: {flag} {files[bad]}"), lines[0]
    assert words in lines[0], lines[0]
    assert not out.exists()  # refused before --out is made
    assert seconds < 5.0


def test_masks_and_similarity_do_not_apply_to_a_network():
    from rdmm_pipelines.cli import _check_network_options, build_parser

    args = build_parser().parse_args(["register", "f", "m", "--out", "o", "--model", "lddmm-net", "--weights",
                                      "best.pt", "--similarity", "ncc", "--fixed-mask", "m.nii.gz"])
    with pytest.raises(ValueError, match="^--similarity, --fixed-mask do not apply to a trained network"):
        _check_network_options(args)


def test_similarity_is_applied_on_top_of_a_preset_and_checked():
    def args(**kw):
        base = dict(model="rdmm", preset="brain", seed=None, no_affine=False, iterations=None, steps=None,
                    map_resolution=None, similarity=None)
        return argparse.Namespace(**{**base, **kw})

    assert registration_config(args(), None) == (None, "brain")
    cfg, preset = registration_config(args(similarity="mi"), None)
    brain = get_preset("brain", "rdmm")
    assert preset is None and cfg.similarity.name == "mi" and cfg.affine.similarity == "mi"
    assert cfg.kernel == brain.kernel and cfg.optimizer == brain.optimizer  # the rest is the preset's
    cfg, _ = registration_config(args(similarity="lncc"), None)
    assert cfg.similarity.name == "lncc" and cfg.affine.similarity == brain.affine.similarity
    with pytest.raises(ValueError, match="^--similarity: "):
        registration_config(args(similarity="nope"), None)
    assert brain.with_similarity("ncc").similarity.sigma == brain.similarity.sigma


def test_similarity_choices_and_help():
    from rdmm_pipelines.cli import build_parser
    from rdmm_pipelines.similarity import SIMILARITIES

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["register"]
    options = {a.dest: a for a in sub._actions}
    assert set(options["similarity"].choices) == set(SIMILARITIES) and "mi" in options["similarity"].choices
    for dest in ("similarity", "fixed_mask", "moving_mask"):
        assert options[dest].help, dest
    with pytest.raises(SystemExit):
        parser.parse_args(["register", "f", "m", "--out", "o", "--similarity", "nope"])


# ------------------------------------------------------------------ pydra tasks
def test_rdmm_registration_task_with_masks(lab, tmp_path):
    from rdmm_pipelines.interfaces import RdmmRegistration, run

    d, files = lab
    task = RdmmRegistration(fixed=files["fixed"], moving=files["moving"], subject_id="s1", model="lddmm",
                            config_json=files["config"], fixed_mask=files["fixed_mask"],
                            moving_mask=files["moving_mask"], similarity="ncc", device="cpu", threads=1)
    out = run(task, cache_root=tmp_path / "cache", worker="debug")
    assert out.status == "ok", out.message
    record = json.loads(Path(out.record).read_text())
    _assert_mask_recorded(record, "fixed_mask", files["fixed_mask"])
    _assert_mask_recorded(record, "moving_mask", files["moving_mask"])
    assert record["config"]["similarity"]["name"] == "ncc"
    bad = run(RdmmRegistration(fixed=files["fixed"], moving=files["moving"], subject_id="s2", model="lddmm",
                               config_json=files["config"], fixed_mask=files["empty"], device="cpu", threads=1),
              cache_root=tmp_path / "cache", worker="debug")
    assert bad.status == "failed" and "fixed mask" in bad.message and "empty" in bad.message
    with pytest.raises((TypeError, ValueError), match="fixed_mask"):  # not NIfTI: refused when the task is built
        RdmmRegistration(fixed=files["fixed"], moving=files["moving"], subject_id="s3",
                         fixed_mask=files["config"])


def test_affine_registration_task_with_masks(lab, tmp_path):
    from rdmm_pipelines.interfaces import AffineRegistration, run

    d, files = lab
    out = run(AffineRegistration(fixed=files["fixed"], moving=files["moving"], subject_id="s1",
                                 config_json=files["config_affine"], fixed_mask=files["fixed_mask"],
                                 moving_mask=files["moving_mask"], device="cpu", threads=1),
              cache_root=tmp_path / "cache", worker="debug")
    assert out.status == "ok", out.message
    record = json.loads(Path(out.record).read_text())
    assert Path(record["fixed_mask"]) == Path(files["fixed_mask"]).absolute()
    assert Path(record["moving_mask"]) == Path(files["moving_mask"]).absolute()
    bad = run(AffineRegistration(fixed=files["fixed"], moving=files["moving"], subject_id="s2",
                                 config_json=files["config_affine"], moving_mask=files["outside"], device="cpu",
                                 threads=1),
              cache_root=tmp_path / "cache", worker="debug")
    assert bad.status == "failed" and "moving mask" in bad.message


@pytest.mark.ants
def test_ants_syn_task_with_a_mask_and_mattes(lab, tmp_path):
    pytest.importorskip("ants")
    from rdmm_pipelines.interfaces import AntsSyN, run

    d, files = lab
    out = run(AntsSyN(fixed=files["fixed"], moving=files["moving"], subject_id="s1", fixed_mask=files["moving_mask"],
                      metric="mattes", threads=1),
              cache_root=tmp_path / "cache", worker="debug")
    assert out.status == "ok", out.message
    log = Path(out.log).read_text()
    assert "'syn_metric': 'mattes'" in log and "fixed_mask=" in log
    bad = run(AntsSyN(fixed=files["fixed"], moving=files["moving"], subject_id="s2", fixed_mask=files["empty"],
                      threads=1), cache_root=tmp_path / "cache", worker="debug")
    assert bad.status == "failed" and "fixed mask" in bad.message and "empty" in bad.message
    with pytest.raises(ValueError):
        AntsSyN(fixed=files["fixed"], moving=files["moving"], subject_id="s3", metric="nope")


# ------------------------------------------------------------------ the manifest and the cohort
def test_manifest_mask_columns_are_read_and_checked(lab, tmp_path):
    from rdmm_pipelines.workflows.manifest import ManifestError, read_manifest, write_manifest

    d, files = lab
    manifest = d / "masks.csv"  # relative paths: resolved against the manifest's folder
    manifest.write_text("id,fixed,moving,fixed_mask,moving_mask\n"
                        "p1,fixed.nii.gz,moving.nii.gz,fixed_mask.nii.gz,\n"
                        "p2,fixed.nii.gz,moving.nii.gz,,moving_mask.nii.gz\n")
    p1, p2 = read_manifest(manifest)
    assert p1.fixed_mask == files["fixed_mask"].absolute() and p1.moving_mask is None
    assert p2.moving_mask == files["moving_mask"].absolute() and p2.fixed_mask is None
    again = read_manifest(write_manifest([p1, p2], tmp_path / "again.tsv", relative=True))
    assert [(p.fixed_mask, p.moving_mask) for p in again] == [(p.fixed_mask, p.moving_mask) for p in (p1, p2)]
    bad = d / "bad_masks.csv"
    bad.write_text("id,fixed,moving,fixed_mask,moving_mask\n"
                   "p1,fixed.nii.gz,moving.nii.gz,absent_mask.nii.gz,mask3d.nii.gz\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(bad)
    problems = err.value.problems
    assert any("row 2, column 'fixed_mask': no such file" in p for p in problems), problems
    assert any("row 2, column 'moving_mask': the mask is 3D but the moving image is 2D" in p for p in problems), \
        problems


def test_cohort_passes_the_manifest_masks_to_the_registration(lab, tmp_path):
    from rdmm_pipelines.workflows.cohort import run_cohort

    d, files = lab
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("id,fixed,moving,fixed_mask,moving_mask\n"
                        f"p1,{files['fixed']},{files['moving']},{files['fixed_mask']},{files['moving_mask']}\n")
    # the configuration enables the affine stage: it runs as the pair's separate affine node, with the masks
    result = run_cohort(manifest, tmp_path / "out", ["lddmm"], worker="debug", config_json=files["config_affine"],
                        report=False, progress=False)
    assert not result.failed, result.failed
    records = sorted((tmp_path / "out" / "cache").rglob("registration.json"))
    assert len(records) == 1, records
    record = json.loads(records[0].read_text())
    _assert_mask_recorded(record, "fixed_mask", files["fixed_mask"])
    _assert_mask_recorded(record, "moving_mask", files["moving_mask"])
    assert record["inputs"]["affine"]["path"], "the registration started from the affine node's transform"
    affine_records = sorted((tmp_path / "out" / "cache").rglob("*_affine_record.json"))
    assert len(affine_records) == 1
    assert Path(json.loads(affine_records[0].read_text())["fixed_mask"]) == files["fixed_mask"].absolute()


def test_pair_workflow_gives_masks_only_to_the_methods_that_use_them(lab):
    from rdmm_pipelines.workflows.pair import MASKED_METHODS, registration_node

    d, files = lab
    common = dict(fixed=files["fixed"], moving=files["moving"], subject_id="s1", fixed_mask=files["fixed_mask"],
                  moving_mask=files["moving_mask"])
    for method in ("lddmm", "ants-syn"):
        assert method in MASKED_METHODS
        node = registration_node(method, **common)
        assert Path(node.fixed_mask) == files["fixed_mask"] and Path(node.moving_mask) == files["moving_mask"]
    demons = registration_node("sitk-demons", **common)
    assert not hasattr(demons, "fixed_mask")


# ------------------------------------------------------------------ nipype
def test_nipype_register_interface_takes_masks_and_similarity(lab, tmp_path):
    pytest.importorskip("nipype")
    from traits.api import TraitError

    from rdmm_pipelines.interfaces.nipype import RdmmRegister

    d, files = lab
    node = RdmmRegister(fixed=str(files["fixed"]), moving=str(files["moving"]), subject_id="s1", model="lddmm",
                        config_json=str(files["config"]), fixed_mask=str(files["fixed_mask"]),
                        moving_mask=str(files["moving_mask"]), similarity="ssd", threads=1, device="cpu")
    assert "mi" in node.inputs.trait("similarity").trait_type.values
    with pytest.raises(TraitError):
        node.inputs.fixed_mask = str(files["missing"])  # File(exists=True)
    with pytest.raises(TraitError):
        node.inputs.similarity = "nope"
    result = node.run(cwd=str(tmp_path))
    record = json.loads(Path(result.outputs.record).read_text())
    _assert_mask_recorded(record, "fixed_mask", files["fixed_mask"])
    _assert_mask_recorded(record, "moving_mask", files["moving_mask"])
    assert record["config"]["similarity"]["name"] == "ssd"
