"""Refinement of a network's prediction through the user-facing layers: ``rdmm register --refine``,
the ``refine`` inputs of the ``NetworkRegistration`` task and the cohort's "+io" methods."""

import os

os.environ.setdefault("NO_ET", "1")

import argparse
import json

import pytest
import torch
from conftest import synthetic_pair_manifest

from rdmm_pipelines.cli import build_parser, main
from rdmm_pipelines.config import KernelConfig, RegionalConfig
from rdmm_pipelines.learning import NetworkConfig, RegistrationNetwork, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore")

KERNEL = KernelConfig(sigmas=(0.1, 0.2, 0.3), weights=(0.3, 0.3, 0.4))


def _checkpoint(path, model: str = "lddmm", **changes):
    """A tiny untrained network whose prediction moves (a constant momentum offset), saved."""
    cfg = NetworkConfig(model=model, image_shape=(32, 32), features=(8, 16, 16), kernel=KERNEL,
                        regional=RegionalConfig(smoothing_sigma=0.1), **changes)
    torch.manual_seed(0)
    net = RegistrationNetwork(cfg)
    with torch.no_grad():
        net.momentum_net.head.bias.copy_(torch.tensor([0.4, -0.3]))
    return save_checkpoint(path, net, epoch=0)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Two 32x32 pairs as NIfTI, their manifest, an LDDMM checkpoint and one that cannot be refined."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("refine_layers")
    rows, manifest = synthetic_pair_manifest(root, 2)
    return {"root": root, "rows": rows, "manifest": manifest, "lddmm": _checkpoint(root / "lddmm.pt"),
            "steps": _checkpoint(root / "steps.pt", refine_steps=2)}


def _register(lab, out, *extra):
    row = lab["rows"][0]
    return main(["register", str(row["fixed"]), str(row["moving"]), "--model", "lddmm-net", "--weights",
                 str(lab["lddmm"]), "--out", str(out), "--no-qc", "-q", *extra])


# ------------------------------------------------------------------ rdmm register --refine
def test_register_refine_records_the_refinement_and_its_iterations(lab, tmp_path, capsys):
    row = lab["rows"][0]
    out = tmp_path / "refined"
    assert _register(lab, out, "--refine-iterations", "3", "--threads", "1", "--fixed-labels",
                     str(row["fixed_labels"]), "--moving-labels", str(row["moving_labels"])) == 0, \
        capsys.readouterr().err
    printed = capsys.readouterr().out
    record = json.loads((out / "registration.json").read_text())
    assert record["inputs"]["refine"] == {"scales": 1, "iterations": 3}
    assert record["inputs"]["network"]["model"] == "lddmm" and record["inputs"]["weights"]["epoch"] == 0
    assert record["inputs"]["initial"] is not None
    assert 1 <= len(record["history"]) <= 3
    assert record["evaluation"]["method"] == "lddmm-net+io"
    assert f"lddmm: a network + {len(record['history'])} refinement iterations in " in printed
    # rdmm evaluate names it as the cohort does
    assert main(["evaluate", str(out), "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["method"] == "lddmm-net+io"


def test_register_without_refine_is_the_network_alone(lab, tmp_path, capsys):
    out = tmp_path / "net"
    assert _register(lab, out) == 0, capsys.readouterr().err
    assert "lddmm: a network in " in capsys.readouterr().out
    record = json.loads((out / "registration.json").read_text())
    assert "refine" not in record["inputs"] and not record["history"]


@pytest.mark.parametrize("argv, words", [
    (["--model", "lddmm", "--refine"], "--refine refines a trained network's prediction: use --model vsvf-net"),
    (["--refine-iterations", "5"], "--refine-iterations refines a trained network's prediction"),
    (["--model", "lddmm-net", "--weights", "{lddmm}", "--refine-iterations", "0"],
     "--refine-iterations must be a positive integer; got 0"),
    (["--model", "lddmm-net", "--weights", "{lddmm}", "--refine-scales", "9"], "--refine-scales must be an integer from 1 to 3"),
    (["--model", "lddmm-net", "--weights", "{steps}", "--refine"], "--refine: "),
])
def test_bad_refine_options_are_refused_at_once(lab, tmp_path, capsys, argv, words):
    row = lab["rows"][0]
    out = tmp_path / "out"
    args = [a.format(lddmm=lab["lddmm"], steps=lab["steps"]) for a in argv]
    assert main(["register", str(row["fixed"]), str(row["moving"]), "--out", str(out), "-q", *args]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rdmm register: error: "), lines
    assert words in lines[0], lines[0]
    assert not out.exists()


def test_refine_options_imply_refine_and_have_help():
    from rdmm_pipelines.cli_network import _refine_option

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["register"]
    options = {a.dest: a for a in sub._actions}
    for dest in ("refine", "refine_scales", "refine_iterations"):
        assert options[dest].help, dest
    from rdmm_pipelines.learning.refine import RefineConfig

    assert f"default {RefineConfig().scales}:" in options["refine_scales"].help
    assert f"default {RefineConfig().iterations};" in options["refine_iterations"].help
    base = ["register", "f", "m", "--out", "o", "--model", "lddmm-net", "--weights", "w.pt"]
    assert _refine_option(parser.parse_args(base)) is None
    assert _refine_option(parser.parse_args([*base, "--refine"])).to_dict() == {"scales": 1, "iterations": 30}
    assert _refine_option(parser.parse_args([*base, "--refine-scales", "2"])).to_dict() == {"scales": 2,
                                                                                           "iterations": 30}


# ------------------------------------------------------------------ the pydra task and the cohort
def test_network_task_refines_when_asked(lab, tmp_path):
    from rdmm_pipelines.interfaces import NetworkRegistration, run
    from rdmm_pipelines.learning.refine import RefineConfig

    row = lab["rows"][1]
    defaults = NetworkRegistration(fixed=row["fixed"], moving=row["moving"], weights=lab["lddmm"], subject_id="p1")
    assert (defaults.refine, defaults.refine_scales, defaults.refine_iterations) == (
        False, RefineConfig().scales, RefineConfig().iterations)
    out = run(NetworkRegistration(fixed=row["fixed"], moving=row["moving"], weights=lab["lddmm"], subject_id="p1",
                                  method="lddmm-net", threads=1, refine=True, refine_iterations=2),
              cache_root=tmp_path / "cache")
    assert out.status == "ok", out.message
    record = json.loads(open(out.record).read())
    assert record["inputs"]["refine"] == {"scales": 1, "iterations": 2} and 1 <= len(record["history"]) <= 2
    with pytest.raises(Exception, match="refine_iterations must be a positive integer"):
        NetworkRegistration(fixed=row["fixed"], moving=row["moving"], weights=lab["lddmm"], subject_id="p1",
                            refine_iterations=0)
    with pytest.raises(Exception, match="refine_scales must be an integer from 1 to 3"):
        NetworkRegistration(fixed=row["fixed"], moving=row["moving"], weights=lab["lddmm"], subject_id="p1",
                            refine_scales=4)


def test_cohort_with_a_refined_network_method(lab, tmp_path):
    from rdmm_pipelines.workflows.cohort import run_cohort
    from rdmm_pipelines.workflows.manifest import read_manifest

    ckpt = str(lab["lddmm"])
    options = {"lddmm-net": {"weights": ckpt}, "lddmm-net+io": {"weights": ckpt, "refine_iterations": 2}}
    result = run_cohort(read_manifest(lab["manifest"])[:1], tmp_path / "cohort", ["lddmm-net", "lddmm-net+io"],
                        worker="debug", method_options=options, threads=1, report=False, progress=False)
    assert [(r["method"], r["status"]) for r in result.rows] == [("lddmm-net", "ok"), ("lddmm-net+io", "ok")]
    assert all(0 < float(r["mean_dice"]) <= 1 for r in result.rows)
    import nibabel as nib
    import numpy as np

    fields = [nib.load(str(result.outputs[("p0", m)]["xfm"])).get_fdata() for m in ("lddmm-net", "lddmm-net+io")]
    assert fields[0].shape == fields[1].shape and not np.allclose(fields[0], fields[1], atol=1e-4)  # refined
    assert result.outputs[("p0", "lddmm-net+io")]["xfm"].parent == tmp_path / "cohort" / "sub-p0" / "lddmm-net+io"
    assert "lddmm-net+io" in (tmp_path / "cohort" / "cohort_report.html").read_text()


def test_cohort_weights_of_refined_methods(lab):
    from rdmm_pipelines.cli_network import network_weights
    from rdmm_pipelines.workflows.pair import METHODS, check_method, registration_node

    for method in ("vsvf-net+io", "lddmm-net+io", "rdmm-net+io"):
        assert check_method(method) in METHODS
    ckpt = str(lab["lddmm"].resolve())
    assert network_weights([f"lddmm-net+io={ckpt}"], ["lddmm-net+io"]) == {"lddmm-net+io": {"weights": ckpt}}
    # the network's checkpoint serves its refined method too
    assert network_weights([f"lddmm-net={ckpt}"], ["lddmm-net", "lddmm-net+io"]) == {
        "lddmm-net": {"weights": ckpt}, "lddmm-net+io": {"weights": ckpt}}
    with pytest.raises(ValueError, match="lddmm-net\\+io need a trained network: --weights lddmm-net\\+io="):
        network_weights([], ["lddmm-net+io"])
    with pytest.raises(ValueError, match="lddmm network, not rdmm"):
        network_weights([f"rdmm-net+io={ckpt}"], ["rdmm-net+io"])
    with pytest.raises(ValueError, match="refine_steps"):
        network_weights([f"lddmm-net+io={lab['steps']}"], ["lddmm-net+io"])
    with pytest.raises(ValueError, match="needs a trained network"):
        registration_node("lddmm-net+io", fixed="f", moving="m", subject_id="s")
    row = lab["rows"][0]
    task = registration_node("lddmm-net+io", fixed=row["fixed"], moving=row["moving"], subject_id="s", weights=ckpt)
    assert task.refine is True and task.method == "lddmm-net+io"


def test_cohort_command_refuses_a_refined_method_without_weights(lab, tmp_path, capsys):
    assert main(["cohort", str(lab["manifest"]), "--out", str(tmp_path / "c"), "--methods", "lddmm-net+io"]) == 2
    assert "lddmm-net+io need a trained network" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
