"""The catalogue of bad inputs to ``rdmm register``: each case, on tiny images, must fail with exit
code 2 and a one-line message naming the problem, before any heavy work (well under the time of a
registration), leaving no result behind and every input byte-identical.

Cases that need a registration to run first (reruns, incomplete results, labels on other grids) are
in test_cli_guards.py; manifest problems in test_manifest.py.
"""

import gzip
import hashlib
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rdmm_pipelines.cli import main


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture()
def lab(tmp_path):
    """Inputs for the catalogue: good ones and one bad one per case."""
    rng = np.random.default_rng(0)
    img = rng.random((24, 24)).astype(np.float32)
    d = tmp_path / "in"
    d.mkdir()
    files = {
        "fixed": _save(d / "fixed.nii.gz", img),
        "moving": _save(d / "moving.nii.gz", np.roll(img, 2, axis=0)),
        "labels": _save(d / "labels.nii.gz", (img > 0.5).astype(np.int16)),
        "vol": _save(d / "vol.nii.gz", rng.random((12, 12, 12)).astype(np.float32)),
        "two_channels": _save(d / "two.nii.gz", rng.random((24, 24, 1, 2)).astype(np.float32)),
        "nan": _save(d / "nan.nii.gz", np.where(img > 0.9, np.nan, img).astype(np.float32)),
        "inf": _save(d / "inf.nii.gz", np.where(img > 0.9, np.inf, img).astype(np.float32)),
        "constant": _save(d / "constant.nii.gz", np.ones((24, 24), np.float32)),
        "tiny": _save(d / "tiny.nii.gz", rng.random((3, 3)).astype(np.float32)),
        "float_labels": _save(d / "float_labels.nii.gz", img),
        "far": _save(d / "far.nii.gz", img, np.diag([1.0, 1.0, 1.0, 1.0]) + np.array(
            [[0, 0, 0, 900.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])),
    }
    (d / "text.nii.gz").write_text("not an image")
    files["text"] = d / "text.nii.gz"
    raw = Path(files["fixed"]).read_bytes()
    (d / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    files["truncated"] = d / "truncated.nii.gz"
    crc = bytearray(raw)
    crc[-6] ^= 0xFF
    (d / "crc.nii.gz").write_bytes(bytes(crc))
    files["crc"] = d / "crc.nii.gz"
    (d / "header_only.nii.gz").write_bytes(gzip.compress(gzip.decompress(raw)[:348]))
    files["header_only"] = d / "header_only.nii.gz"
    (d / "bad.json").write_text('{"optimizer": {"iters": [1]}}')
    (d / "broken.json").write_text('{"model": ')
    files["bad_config"], files["broken_config"] = d / "bad.json", d / "broken.json"
    (d / "warped.nii.gz").write_bytes(Path(files["moving"]).read_bytes())  # an input under an output's name
    singular = nib.Nifti1Image(img, None)
    collapsed = np.eye(4)
    collapsed[0, 0] = 0.0  # the first axis has no extent in the world
    singular.header.set_sform(collapsed, code=1)
    singular.header.set_qform(None, code=0)
    nib.save(singular, str(d / "singular.nii.gz"))
    files["singular"] = d / "singular.nii.gz"
    (tmp_path / "afile").write_text("x")
    return tmp_path, files


#: (case, argv after "register" with {name} for lab's files and {tmp} for the folder, message regex)
CASES = [
    ("missing fixed", ["{tmp}/in/absent.nii.gz", "{moving}"], r"absent\.nii\.gz: no such file"),
    ("missing moving", ["{fixed}", "{tmp}/in/absent.nii.gz"], r"absent\.nii\.gz: no such file"),
    ("not an image", ["{fixed}", "{text}"], r"text\.nii\.gz: cannot be read as NIfTI"),
    ("truncated", ["{fixed}", "{truncated}"], r"truncated\.nii\.gz: .*(truncated|corrupt)"),
    ("checksum fails", ["{fixed}", "{crc}"], r"crc\.nii\.gz: the gzip stream is corrupt"),
    ("header without data", ["{fixed}", "{header_only}"], r"header_only\.nii\.gz: .*(truncated|corrupt)"),
    ("singular header", ["{fixed}", "{singular}"], r"singular\.nii\.gz: affine is singular"),
    ("2D against 3D", ["{fixed}", "{vol}"], r"fixed image is 2D but moving image is 3D"),
    ("channels differ", ["{fixed}", "{two_channels}"], r"channels"),
    ("NaN", ["{fixed}", "{nan}"], r"nan\.nii\.gz: image contains \d+ NaN or infinite"),
    ("infinite", ["{inf}", "{moving}"], r"inf\.nii\.gz: image contains \d+ NaN or infinite"),
    ("constant", ["{fixed}", "{constant}"], r"constant"),
    ("too small", ["{tiny}", "{tiny}"], r"too small"),
    ("no overlap", ["{fixed}", "{far}", "--no-affine"], r"does not overlap"),
    ("intensity image as labels", ["{fixed}", "{moving}", "--fixed-labels", "{float_labels}", "--moving-labels",
                                   "{labels}"], r"--fixed-labels .*float_labels\.nii\.gz: label map has \d+ non-integer"),
    ("one label map", ["{fixed}", "{moving}", "--moving-labels", "{labels}"], r"both --fixed-labels and --moving-labels"),
    ("missing label map", ["{fixed}", "{moving}", "--fixed-labels", "{labels}", "--moving-labels",
                           "{tmp}/in/nolabels.nii.gz"], r"--moving-labels .*nolabels\.nii\.gz: file not found"),
    ("out is a file", ["{fixed}", "{moving}", "--out", "{tmp}/afile"], r"afile: exists and is not a directory"),
    ("input under an output's name in out", ["{fixed}", "{tmp}/in/warped.nii.gz", "--out", "{tmp}/in"],
     r"would be overwritten"),
    ("unknown configuration key", ["{fixed}", "{moving}", "--config", "{bad_config}"], r"optimizer\.iters"),
    ("broken configuration JSON", ["{fixed}", "{moving}", "--config", "{broken_config}"], r"broken\.json: not valid JSON"),
    ("unknown preset", ["{fixed}", "{moving}", "--preset", "nope"], r"unknown preset 'nope'"),
    ("negative threads", ["{fixed}", "{moving}", "--threads", "-1"], r"threads must be"),
    ("deterministic on two threads", ["{fixed}", "{moving}", "--deterministic", "--threads", "2"], r"one thread"),
    ("weights without a network", ["{fixed}", "{moving}", "--weights", "{labels}"], r"--weights is for a trained network"),
    ("network without weights", ["{fixed}", "{moving}", "--model", "lddmm-net"], r"needs --weights"),
    ("predefined without regions", ["{fixed}", "{moving}", "--model", "rdmm", "--regularizer", "predefined"],
     r"region"),
    ("region map with a region beyond the weights", ["{fixed}", "{moving}", "--preset", "lung-predefined",
                                                     "--region-labels", "{float_labels}"], r"non-integer"),
    ("unknown device", ["{fixed}", "{moving}", "--device", "tpu"], r"device"),
]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("case,argv,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_at_once_with_a_message_naming_it(lab, capsys, case, argv, message):
    tmp, files = lab
    before = _digests(tmp / "in")
    args = [a.format(tmp=tmp, **{k: str(v) for k, v in files.items()}) for a in argv]
    if "--out" not in args:
        args += ["--out", str(tmp / "out")]
    t0 = time.perf_counter()
    rc = main(["register", *args, "-q"])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rdmm register: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert seconds < 5.0, f"{case}: refused after {seconds:.1f} s"
    assert not (tmp / "out" / "registration.json").exists()
    assert _digests(tmp / "in") == before  # every input byte-identical


def test_the_catalogue_covers_every_kind_of_problem():
    """A guard on the table itself: one case per named problem, no duplicates."""
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)) >= 25
