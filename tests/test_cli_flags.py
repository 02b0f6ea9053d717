"""Every input file of ``rdmm register``, ``evaluate`` and ``apply`` is read before any heavy work,
and a missing or unreadable one is refused with one line that names its flag (``--region-labels``,
never ``region_labels``) and the file, leaving nothing behind."""

import time
from pathlib import Path

import pytest

from conftest import blob as _blob, blob_pair_files
from rdmm_pipelines import Grid, Image, save_image
from rdmm_pipelines.cli import main
from rdmm_pipelines.cli_inputs import input_files


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Good inputs, a registered result to evaluate and apply, and bad files of every sort."""
    d = tmp_path_factory.mktemp("flags")
    files = blob_pair_files(d)
    files["points"] = d / "points.txt"
    files["points"].write_text("10 10\n14 12\n")
    files["text"] = d / "text.nii.gz"  # not NIfTI (nor JSON, an affine, points or a checkpoint)
    files["text"].write_text("not an image\n")
    files["missing"] = d / "absent.nii.gz"
    files["result"] = d / "result"
    assert main(["register", str(files["fixed"]), str(files["moving"]), "--out", str(files["result"]), "-q",
                 "--no-qc", "--config", str(files["config"])]) == 0
    return d, files


#: (command, the option's words in the error, argv with {bad} for the bad file, {out} for the output)
OPTIONS = [
    ("register", "fixed image", ["register", "{bad}", "{moving}", "--out", "{out}"]),
    ("register", "moving image", ["register", "{fixed}", "{bad}", "--out", "{out}"]),
    ("register", "--region-labels", ["register", "{fixed}", "{moving}", "--out", "{out}", "--regularizer",
                                     "predefined", "--region-labels", "{bad}"]),
    ("register", "--fixed-labels", ["register", "{fixed}", "{moving}", "--out", "{out}", "--fixed-labels", "{bad}",
                                    "--moving-labels", "{moving_labels}"]),
    ("register", "--moving-labels", ["register", "{fixed}", "{moving}", "--out", "{out}", "--fixed-labels",
                                     "{fixed_labels}", "--moving-labels", "{bad}"]),
    ("register", "--fixed-mask", ["register", "{fixed}", "{moving}", "--out", "{out}", "--fixed-mask", "{bad}"]),
    ("register", "--moving-mask", ["register", "{fixed}", "{moving}", "--out", "{out}", "--moving-mask", "{bad}"]),
    ("register", "--affine", ["register", "{fixed}", "{moving}", "--out", "{out}", "--affine", "{bad}"]),
    ("register", "--config", ["register", "{fixed}", "{moving}", "--out", "{out}", "--config", "{bad}"]),
    ("register", "--weights", ["register", "{fixed}", "{moving}", "--out", "{out}", "--model", "lddmm-net",
                               "--weights", "{bad}"]),
    ("evaluate", "--fixed-labels", ["evaluate", "{result}", "--out", "{out}", "--fixed-labels", "{bad}",
                                    "--moving-labels", "{moving_labels}"]),
    ("evaluate", "--moving-labels", ["evaluate", "{result}", "--out", "{out}", "--fixed-labels", "{fixed_labels}",
                                     "--moving-labels", "{bad}"]),
    ("evaluate", "--fixed-points", ["evaluate", "{result}", "--out", "{out}", "--fixed-points", "{bad}",
                                    "--moving-points", "{points}"]),
    ("evaluate", "--moving-points", ["evaluate", "{result}", "--out", "{out}", "--fixed-points", "{points}",
                                     "--moving-points", "{bad}"]),
    ("apply", "image", ["apply", "{result}", "{bad}", "--out", "{out}"]),
    ("apply", "image", ["apply", "{result}", "{bad}", "--labels", "--out", "{out}"]),
    ("apply", "--reference", ["apply", "{result}", "{fixed}", "--inverse", "--reference", "{bad}", "--out", "{out}"]),
]

#: the bad files: absent, not NIfTI (text), and a file of the wrong kind (a NIfTI image where a
#: configuration, an affine, points or a checkpoint is expected, an intensity image as labels)
BAD = ("missing", "text", "wrong kind")


def _run(lab, argv, bad: str, out: Path):
    d, files = lab
    bad_path = {"missing": files["missing"], "text": files["text"], "wrong kind": files["moving"]}[bad]
    args = [a.format(bad=bad_path, out=out, **{k: str(v) for k, v in files.items()}) for a in argv]
    t0 = time.perf_counter()
    rc = main(args)
    return rc, time.perf_counter() - t0, str(bad_path)


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("command,name,argv", OPTIONS, ids=[f"{c[0]} {c[1]} {i}" for i, c in enumerate(OPTIONS)])
def test_a_bad_input_file_is_refused_naming_its_flag(lab, tmp_path, capsys, command, name, argv, bad):
    if bad == "wrong kind" and name in ("fixed image", "moving image", "image", "--reference", "--fixed-mask",
                                        "--moving-mask"):
        pytest.skip("an intensity image is the right kind here (a mask: nonzero = inside)")
    out = tmp_path / ("out.nii.gz" if command == "apply" else "out.json" if command == "evaluate" else "out")
    rc, seconds, path = _run(lab, argv, bad, out)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"rdmm {command}: error: {name} {path}"), lines[0]
    if "-" in name[2:]:
        assert name[2:].replace("-", "_") not in lines[0], lines[0]  # the flag, never the attribute
    if bad == "missing":
        assert lines[0].endswith("file not found" if name.startswith("--") else "no such file"), lines[0]
    assert seconds < 5.0, f"refused after {seconds:.1f} s"
    assert not out.exists()  # nothing written: no --out folder, no evaluation, no warped image


#: words of an option's help text that say its value is an input file
_FILE_WORDS = ("nifti", "label map", "file", "json", "checkpoint", "landmarks", "image", "affine")


def _file_options(command: str) -> list[str]:
    """The attributes of ``command``'s options and arguments whose help says they name a file
    (outputs and the result folder, checked by field_path, left out)."""
    import argparse

    from rdmm_pipelines.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    found = []
    for action in sub._actions:
        if action.dest in ("help", "out", "csv", "result") or action.nargs in (0, "+", "*") or action.choices:
            continue
        if action.type not in (None, str) or action.default not in (None, argparse.SUPPRESS):
            continue
        if any(word in (action.help or "").lower() for word in _FILE_WORDS):
            found.append(action.dest)
    return found


@pytest.mark.parametrize("command", ["register", "evaluate", "apply"])
def test_every_file_option_is_checked_and_tested(command):
    """Every option whose value is an input file is read by check_input_files() (input_files()
    names it) and is a case of OPTIONS above: a new file option cannot slip past both."""
    from rdmm_pipelines.cli import build_parser

    base = {"register": ["register", "f", "m", "--out", "o", "--model", "lddmm-net"],
            "evaluate": ["evaluate", "r", "--out", "o"], "apply": ["apply", "r", "i", "--out", "o"]}[command]
    args = build_parser().parse_args(base)
    options = _file_options(command)
    assert options, command
    for dest in options:
        setattr(args, dest, f"{dest}.nii.gz")
    named = {path: name for name, path, _ in input_files(args)}
    assert set(named) == {f"{dest}.nii.gz" for dest in options}, (command, options, named)
    tested = {n for c, n, _ in OPTIONS if c == command}
    assert set(named.values()) <= tested, set(named.values()) - tested


def test_what_the_register_inputs_must_agree_on_names_the_flags(lab, tmp_path, capsys):
    d, files = lab
    base = ["register", str(files["fixed"]), str(files["moving"]), "--out", str(tmp_path / "o"), "-q"]
    assert main([*base, "--regularizer", "predefined"]) == 2
    err = capsys.readouterr().err
    assert "--region-labels" in err and "region_labels" not in err
    assert main([*base, "--preset", "lung-predefined"]) == 2
    err = capsys.readouterr().err
    assert "--preset needs --region-labels" in err
    beyond = save_image(Image((_blob(1.5) > 0.5).long() * 3, Grid.from_shape((24, 24))), tmp_path / "r3.nii.gz")
    assert main([*base, "--regularizer", "predefined", "--region-labels", str(beyond)]) == 2
    assert f"--region-labels {beyond}: labels [0, 3]" in capsys.readouterr().err
    shifted = save_image(Image((_blob(1.5) > 0.5).long(), Grid.from_shape((24, 24), origin=(4.0, 0.0, 0.0))),
                         tmp_path / "shifted.nii.gz")
    assert main([*base, "--regularizer", "predefined", "--region-labels", str(shifted)]) == 2
    assert f"--region-labels {shifted}: grid" in capsys.readouterr().err
    affine3d = tmp_path / "a3.txt"
    affine3d.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
                        "Parameters: 1 0 0 0 1 0 0 0 1 0 0 0\nFixedParameters: 0 0 0\n")
    assert main([*base, "--affine", str(affine3d)]) == 2
    assert f"--affine {affine3d}: a 3D transform, but the images are 2D" in capsys.readouterr().err
    assert main([*base, "--config", str(files["config"]), "--preset", "quick"]) == 2
    assert "give either --config or --preset, not both" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_options_given_together_are_given_together(lab, tmp_path, capsys):
    d, files = lab
    out = tmp_path / "e.json"
    assert main(["evaluate", str(files["result"]), "--out", str(out), "--fixed-points", str(files["points"])]) == 2
    assert "give both --fixed-points and --moving-points, or neither" in capsys.readouterr().err
    assert main(["evaluate", str(files["result"]), "--out", str(out), "--moving-labels",
                 str(files["moving_labels"])]) == 2
    assert "give both --fixed-labels and --moving-labels, or neither" in capsys.readouterr().err
    assert not out.exists()


def test_a_bad_cohort_config_names_its_flag(lab, tmp_path, capsys):
    d, files = lab
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(f"id,fixed,moving\np1,{files['fixed']},{files['moving']}\n")
    assert main(["cohort", str(manifest), "--out", str(tmp_path / "c"), "--config", str(files["text"])]) == 2
    assert f"--config {files['text']}: not valid JSON" in capsys.readouterr().err
