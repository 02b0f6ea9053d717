"""The options users change most (--iterations, --steps, --map-resolution) reach the registration
and its record; bad values are refused naming the flag before anything is written; `rdmm presets`
prints whole descriptions and the README's preset table is the one the presets make."""

import argparse
import json
from pathlib import Path

import pytest

from conftest import blob as _blob, blob_pair_files
from rdmm_pipelines import Grid, Image, save_image
from rdmm_pipelines.cli import main
from rdmm_pipelines.cli_config import registration_config
from rdmm_pipelines.presets import PRESETS, describe, get_preset, markdown_table

README = Path(__file__).resolve().parents[1] / "README.md"


def _args(**kw) -> argparse.Namespace:
    base = dict(model="lddmm", preset=None, seed=None, no_affine=False, iterations=None, steps=None,
                map_resolution=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_without_options_the_config_and_preset_pass_through():
    assert registration_config(_args(preset="brain"), None) == (None, "brain")


def test_options_change_the_resolved_configuration():
    cfg, preset = registration_config(_args(preset="knee-optimized", iterations=[7], steps=3, map_resolution=1.0),
                                      None)
    assert preset is None
    knee = get_preset("knee-optimized", "lddmm")
    assert cfg.optimizer.iterations == (7, 7, 7) and cfg.integrator.steps == 3
    assert cfg.optimizer.map_low_res_factor == 1.0
    assert cfg.kernel == knee.kernel  # the rest is the preset's
    cfg, _ = registration_config(_args(iterations=[30, 30, 0], no_affine=True, seed=4), None)
    assert cfg.optimizer.iterations == (30, 30, 0) and not cfg.affine.enabled and cfg.seed == 4


@pytest.mark.parametrize("option, value, words", [
    ("iterations", [1, 2], "--iterations: give one number, or one per scale (3 scales"),
    ("iterations", [0], "--iterations: every scale at 0"),
    ("iterations", [5, -1, 5], "--iterations: iterations cannot be negative"),
    ("steps", 0, "--steps: the shooting needs at least 1"),
    ("map_resolution", 1.5, "--map-resolution: a fraction"),
    ("map_resolution", 0.0, "--map-resolution: a fraction"),
])
def test_bad_values_name_the_flag(option, value, words):
    with pytest.raises(ValueError) as err:
        registration_config(_args(**{option: value}), None)
    assert str(err.value).startswith(words)


@pytest.fixture()
def pair(tmp_path):
    files = blob_pair_files(tmp_path)
    return files["fixed"], files["moving"]


def test_register_options_reach_the_record(pair, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["register", str(pair[0]), str(pair[1]), "--model", "lddmm", "--out", str(out), "-q", "--no-qc",
               "--no-affine", "--iterations", "2", "1", "0", "--steps", "3", "--map-resolution", "1"])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((out / "registration.json").read_text())
    cfg = record["config"]
    assert cfg["optimizer"]["iterations"] == [2, 1, 0]
    assert cfg["optimizer"]["map_low_res_factor"] == 1.0
    assert cfg["integrator"]["steps"] == 3 and cfg["affine"]["enabled"] is False
    done = {s["scale"]: s for s in record["scales"]}  # a scale with 0 iterations is not run
    assert sorted(done) == [0.25, 0.5]
    assert done[0.25]["iterations"] <= 2 and done[0.5]["iterations"] <= 1
    # the map at the image's resolution (map_low_res_factor 1; the default 0.5 would halve it)
    assert done[0.5]["map_shape"] == done[0.5]["image_shape"] == [12, 12]


def test_a_bad_option_is_refused_before_anything_is_written(pair, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["register", str(pair[0]), str(pair[1]), "--out", str(out), "--iterations", "3", "3"])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.strip().splitlines() == [
        "rdmm register: error: --iterations: give one number, or one per scale (3 scales: 0.25, 0.5, 1); got 2"]
    assert not out.exists()


def test_presets_prints_every_whole_description(capsys):
    assert main(["presets"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in PRESETS:
        assert f"{name} {describe(name)}" in text
    assert "quick" in PRESETS and "brain" in PRESETS


def test_readme_preset_table_is_the_presets_own():
    assert markdown_table("rdmm") in README.read_text()


def test_the_embedded_evaluation_names_the_method_as_the_cohort_does(pair, tmp_path, capsys):
    grid = Grid.from_shape((24, 24))
    fl = save_image(Image((_blob(0.0) > 0.5).long(), grid), tmp_path / "fl.nii.gz")
    ml = save_image(Image((_blob(1.5) > 0.5).long(), grid), tmp_path / "ml.nii.gz")
    out = tmp_path / "out"
    rc = main(["register", str(pair[0]), str(pair[1]), "--out", str(out), "-q", "--no-qc", "--no-affine",
               "--iterations", "2", "--fixed-labels", str(fl), "--moving-labels", str(ml)])
    assert rc == 0, capsys.readouterr().err
    evaluation = json.loads((out / "registration.json").read_text())["evaluation"]
    assert evaluation["method"] == "rdmm-optimized"
    assert 0 < evaluation["mean_dice_before"] < evaluation["mean_dice"] <= 1
    assert "before registration" in capsys.readouterr().out
