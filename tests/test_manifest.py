"""Cohort manifests: parsing, validation (every problem at once), pair generators, writing."""

from __future__ import annotations

import ast
import gzip
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import rdmm_pipelines.workflows.manifest as manifest_module
import rdmm_pipelines.workflows.manifest_checks as checks_module
import rdmm_pipelines.workflows.pair_spec as pair_spec_module
import torch
from rdmm_pipelines.workflows.manifest import (
    COLUMNS,
    ManifestError,
    PairSpec,
    read_manifest,
    validate_pairs,
    write_manifest,
)
from rdmm_pipelines.workflows.pairing import (
    all_pairs,
    longitudinal_pairs,
    pairs_to_atlas,
)

from rdmm_pipelines.spatial import Grid, Image, save_image


# ------------------------------------------------------------------------------------ helpers
def nifti(path: Path, shape=(8, 8, 8), spacing=None, labels: bool = False) -> Path:
    """A tiny NIfTI image (or integer label map) on an axis-aligned grid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = Grid.from_shape(shape, spacing)
    if labels:
        data = (torch.arange(int(np.prod(shape))).reshape(1, *shape) % 3).to(torch.int64)
    else:
        data = torch.rand(1, *shape, generator=torch.Generator().manual_seed(0))
    save_image(Image(data, grid), path)
    return path


def points(path: Path, n: int) -> Path:
    path.write_text("".join(f"{i} {i + 1} {i + 2}\n" for i in range(n)))
    return path


def write(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    path.write_text("".join(delimiter.join(r) + "\n" for r in rows))
    return path


@pytest.fixture
def cohort(tmp_path):
    """Fixed and moving images with labels, a region map and landmarks, in tmp_path/data."""
    d = tmp_path / "data"
    files = {
        "f": nifti(d / "f.nii.gz"), "m": nifti(d / "m.nii.gz"),
        "fl": nifti(d / "f_seg.nii.gz", labels=True), "ml": nifti(d / "m_seg.nii.gz", labels=True),
        "mr": nifti(d / "m_regions.nii.gz", labels=True),
        "fp": points(d / "f_pts.txt", 4), "mp": points(d / "m_pts.txt", 4),
        "m2": nifti(d / "m2.nii"),
        "img2d": nifti(d / "slice.nii.gz", shape=(8, 8)),
        "small": nifti(d / "small.nii.gz", shape=(8, 8, 6)),
        "shifted": nifti(d / "shifted.nii.gz", spacing=(1.0, 1.0, 2.0), labels=True),
        "fp5": points(d / "f5_pts.txt", 5),
    }
    return tmp_path, files


HEADER = ["id", "fixed", "moving", "fixed_labels", "moving_labels", "moving_regions",
          "fixed_landmarks", "moving_landmarks", "group"]


def good_rows() -> list[list[str]]:
    return [
        ["ID", "Fixed", "MOVING", "fixed_labels", "moving_labels", "moving_regions",
         "fixed_landmarks", "moving_landmarks", "group"],
        ["p1", "data/f.nii.gz", "data/m.nii.gz", "data/f_seg.nii.gz", "data/m_seg.nii.gz",
         "data/m_regions.nii.gz", "data/f_pts.txt", "data/m_pts.txt", "subject A"],
        ["p2", "data/f.nii.gz", "./data/../data/m2.nii", "", "", "", "", "", ""],
    ]


def single(tmp_path: Path, row: list[str], header=HEADER[:3], name="bad.csv") -> list[str]:
    """The problems of a manifest with ``header`` and one data row."""
    path = write(tmp_path / name, [list(header), row])
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    return err.value.problems


# ------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("name,delimiter", [("pairs.csv", ","), ("pairs.tsv", "\t"),
                                            ("pairs.txt", "\t"), ("pairs.txt", ",")])
def test_good_manifest_parses_with_resolved_paths(cohort, name, delimiter):
    tmp_path, files = cohort
    path = write(tmp_path / name, good_rows(), delimiter)
    pairs = read_manifest(path)
    assert pairs == [
        PairSpec(id="p1", fixed=files["f"], moving=files["m"], fixed_labels=files["fl"],
                 moving_labels=files["ml"], moving_regions=files["mr"],
                 fixed_landmarks=files["fp"], moving_landmarks=files["mp"], group="subject A",
                 row=2),
        PairSpec(id="p2", fixed=files["f"], moving=files["m2"], row=3),
    ]
    assert all(p.fixed.is_absolute() and p.moving.is_absolute() for p in pairs)
    assert pairs[1].fixed_labels is None and pairs[1].group is None


def test_rows_are_file_lines_blank_lines_skipped_quoted_cells(cohort):
    tmp_path, files = cohort
    text = ('id,fixed,moving,group\n\n'
            f'a,{files["f"]},{files["m"]},"two\nlines"\n'
            f'b,{files["f"]},{files["m"]},\n')
    (tmp_path / "q.csv").write_text(text)
    pairs = read_manifest(tmp_path / "q.csv")
    assert [(p.id, p.row, p.group) for p in pairs] == [("a", 3, "two\nlines"), ("b", 5, None)]


# --------------------------------------------------------------------------- all problems at once
def test_every_problem_is_reported_at_once_with_rows(cohort):
    tmp_path, files = cohort
    rows = [
        HEADER + ["colour"],
        ["ok", "data/f.nii.gz", "data/m.nii.gz", "", "", "", "", "", "", ""],             # 2
        ["ok", "data/f.nii.gz", "data/nope.nii.gz", "", "", "", "", "", "", ""],          # 3
        ["bad id", "data/f.nii.gz", "data/m.nii.gz", "", "", "", "", "", "", ""],         # 4
        ["dim", "data/f.nii.gz", "data/slice.nii.gz", "", "", "", "", "", "", ""],        # 5
        ["grid", "data/f.nii.gz", "data/m.nii.gz", "data/shifted.nii.gz", "data/m_seg.nii.gz",
         "", "", "", "", ""],                                                             # 6
        ["pts", "data/f.nii.gz", "data/m.nii.gz", "", "", "", "data/f5_pts.txt",
         "data/m_pts.txt", "", ""],                                                       # 7
        ["half", "data/f.nii.gz", "data/m.nii.gz", "data/f_seg.nii.gz", "", "", "", "", "", ""],  # 8
        ["nomov", "data/f.nii.gz", "", "", "", "", "", "", "", ""],                       # 9
    ]
    with pytest.raises(ManifestError) as err:
        read_manifest(write(tmp_path / "many.csv", rows))
    problems = err.value.problems
    expected = [
        r"^row 1 \(header\): unknown column 'colour'; valid columns are id, fixed",
        r"^row 3, column 'id': duplicate id 'ok' \(also row 2\)",
        r"^row 3, column 'moving': no such file: .*nope\.nii\.gz",
        r"^row 4, column 'id': id 'bad id' is not a safe file name",
        r"^row 5, column 'moving': moving image is 2D but the fixed image is 3D",
        r"^row 6, column 'fixed_labels': not on the fixed image's grid: affine",
        r"^row 7, column 'moving_landmarks': 4 points but fixed_landmarks has 5",
        r"^row 8, column 'moving_labels': empty, but 'fixed_labels' is given",
        r"^row 9, column 'moving': empty \(required\)",
    ]
    assert len(problems) == len(expected), "\n".join(problems)
    for problem, pattern in zip(problems, expected):
        assert re.search(pattern, problem), (pattern, problem)
    message = str(err.value)
    assert message.splitlines()[0].endswith("9 problems in the manifest:")
    assert all(p in message.splitlines()[i + 1] for i, p in enumerate(problems))
    assert isinstance(err.value, ValueError)
    again = pickle.loads(pickle.dumps(err.value))
    assert again.problems == problems and str(again) == message


# ------------------------------------------------------------------------ each problem alone
def test_empty_manifests(tmp_path):
    (tmp_path / "empty.csv").write_text("\n  \n")
    with pytest.raises(ManifestError, match="empty manifest: no header"):
        read_manifest(tmp_path / "empty.csv")
    write(tmp_path / "header.csv", [HEADER])
    with pytest.raises(ManifestError, match="a header but no pairs"):
        read_manifest(tmp_path / "header.csv")
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "absent.csv")
    assert validate_pairs([]) == ["empty manifest: no pairs"]


def test_missing_required_column(cohort):
    tmp_path, _ = cohort
    problems = single(tmp_path, ["a", "data/f.nii.gz"], header=["id", "fixed"])
    assert problems == ["row 1 (header): missing required column 'moving'"]


def test_unknown_and_repeated_columns(cohort):
    tmp_path, _ = cohort
    problems = single(tmp_path, ["a", "data/f.nii.gz", "data/m.nii.gz", "x", "data/f.nii.gz"],
                      header=["id", "fixed", "moving", "Notes", "FIXED"])
    assert len(problems) == 2
    assert problems[0].startswith("row 1 (header): unknown column 'Notes'; valid columns are ")
    assert all(c in problems[0] for c in COLUMNS)
    assert problems[1] == "row 1 (header): repeated column 'FIXED'"


def test_empty_required_cells(cohort):
    tmp_path, _ = cohort
    assert single(tmp_path, ["", "data/f.nii.gz", "data/m.nii.gz"]) == [
        "row 2, column 'id': empty (required)"]
    assert single(tmp_path, ["a", " ", "data/m.nii.gz"]) == [
        "row 2, column 'fixed': empty (required)"]


def test_duplicate_ids_name_both_rows(cohort):
    tmp_path, _ = cohort
    rows = [HEADER[:3]] + [[i, "data/f.nii.gz", "data/m.nii.gz"] for i in ("a", "b", "a", "B")]
    with pytest.raises(ManifestError) as err:
        read_manifest(write(tmp_path / "dup.csv", rows))
    assert err.value.problems == [
        "row 4, column 'id': duplicate id 'a' (also row 2)",
        "row 5, column 'id': id 'B' differs only in case from 'b' (row 3); they collide on "
        "case-insensitive file systems",
    ]


@pytest.mark.parametrize("pair_id", ["a b", "a/b", "ü", "..", "x;rm", "a" * 201])
def test_unsafe_ids(cohort, pair_id):
    tmp_path, _ = cohort
    problems = single(tmp_path, [pair_id, "data/f.nii.gz", "data/m.nii.gz"])
    assert len(problems) == 1 and problems[0].startswith("row 2, column 'id': id ")


def test_safe_ids_pass(cohort):
    tmp_path, _ = cohort
    rows = [HEADER[:3], ["sub-01_ses-1.run2", "data/f.nii.gz", "data/m.nii.gz"]]
    assert read_manifest(write(tmp_path / "ok.csv", rows))[0].id == "sub-01_ses-1.run2"


def test_missing_file_and_directory(cohort):
    tmp_path, _ = cohort
    problems = single(tmp_path, ["a", "data/f.nii.gz", "data/absent.nii.gz"])
    assert problems == [f"row 2, column 'moving': no such file: {tmp_path / 'data/absent.nii.gz'}"]
    problems = single(tmp_path, ["a", "data", "data/m.nii.gz"])
    assert problems == [f"row 2, column 'fixed': not a regular file: {tmp_path / 'data'}"]


def test_not_nifti(cohort):
    tmp_path, _ = cohort
    (tmp_path / "data/text.nii.gz").write_text("not an image")
    problems = single(tmp_path, ["a", "data/f.nii.gz", "data/text.nii.gz"])
    assert len(problems) == 1
    assert problems[0].startswith("row 2, column 'moving': ")
    assert "text.nii.gz: cannot be read as NIfTI (ImageFileError" in problems[0]


def test_truncated_gzip_image(cohort):
    tmp_path, files = cohort
    raw = files["m"].read_bytes()
    (tmp_path / "data/cut.nii.gz").write_bytes(raw[: len(raw) - 200])
    problems = single(tmp_path, ["a", "data/f.nii.gz", "data/cut.nii.gz"])
    assert len(problems) == 1
    assert problems[0].startswith("row 2, column 'moving': ")
    assert "image data is truncated or corrupt (EOFError" in problems[0]


def test_truncated_uncompressed_image(cohort):
    tmp_path, files = cohort
    raw = files["m2"].read_bytes()
    (tmp_path / "data/cut.nii").write_bytes(raw[:-10])
    problems = single(tmp_path, ["a", "data/f.nii.gz", "data/cut.nii"])
    assert len(problems) == 1 and "image data is truncated: the file has" in problems[0]


def test_gzip_with_unusual_trailer_is_checked_in_full(cohort):
    """Two gzip members: the size trailer disagrees, the full stream check accepts the file."""
    tmp_path, files = cohort
    raw = gzip.decompress(files["m"].read_bytes())
    (tmp_path / "data/multi.nii.gz").write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))
    rows = [HEADER[:3], ["a", "data/f.nii.gz", "data/multi.nii.gz"]]
    assert read_manifest(write(tmp_path / "ok.csv", rows))[0].moving.name == "multi.nii.gz"


def test_dimension_mismatch(cohort):
    tmp_path, _ = cohort
    assert single(tmp_path, ["a", "data/slice.nii.gz", "data/m.nii.gz"]) == [
        "row 2, column 'moving': moving image is 3D but the fixed image is 2D"]


def test_image_too_small(cohort):
    tmp_path, files = cohort
    nifti(tmp_path / "data/tiny.nii.gz", shape=(8, 8, 3))
    problems = single(tmp_path, ["a", "data/f.nii.gz", "data/tiny.nii.gz"])
    assert len(problems) == 1 and "image is too small to register" in problems[0]


@pytest.mark.parametrize("column,value,ref,what", [
    ("fixed_labels", "data/shifted.nii.gz", "fixed", "affine"),
    ("moving_labels", "data/small.nii.gz", "moving", "shape (8, 8, 6)"),
    ("moving_regions", "data/shifted.nii.gz", "moving", "affine"),
])
def test_label_map_on_another_grid(cohort, column, value, ref, what):
    tmp_path, _ = cohort
    cells = {"id": "a", "fixed": "data/f.nii.gz", "moving": "data/m.nii.gz",
             "fixed_labels": "data/f_seg.nii.gz", "moving_labels": "data/m_seg.nii.gz"}
    cells[column] = value
    header = list(cells)
    problems = single(tmp_path, [cells[c] for c in header], header=header)
    assert len(problems) == 1
    assert problems[0].startswith(f"row 2, column '{column}': not on the {ref} image's grid: {what}")


def test_landmark_counts_and_unreadable_points(cohort):
    tmp_path, _ = cohort
    header = ["id", "fixed", "moving", "fixed_landmarks", "moving_landmarks"]
    assert single(tmp_path, ["a", "data/f.nii.gz", "data/m.nii.gz", "data/f_pts.txt",
                             "data/f5_pts.txt"], header=header) == [
        "row 2, column 'moving_landmarks': 5 points but fixed_landmarks has 4"]
    (tmp_path / "data/junk.txt").write_text("1 2 x\n")
    problems = single(tmp_path, ["a", "data/f.nii.gz", "data/m.nii.gz", "data/junk.txt",
                                 "data/m_pts.txt"], header=header)
    assert len(problems) == 1 and problems[0].startswith(
        "row 2, column 'fixed_landmarks': cannot read the points (")


@pytest.mark.parametrize("given,missing", [("fixed_labels", "moving_labels"),
                                           ("moving_labels", "fixed_labels"),
                                           ("fixed_landmarks", "moving_landmarks"),
                                           ("moving_landmarks", "fixed_landmarks")])
def test_only_one_of_a_fixed_moving_pair(cohort, given, missing):
    tmp_path, _ = cohort
    value = "data/f_pts.txt" if "landmarks" in given else "data/m_seg.nii.gz"
    problems = single(tmp_path, ["a", "data/f.nii.gz", "data/m.nii.gz", value],
                      header=["id", "fixed", "moving", given])
    assert problems == [f"row 2, column '{missing}': empty, but '{given}' is given "
                        "(give both or neither)"]


def test_extra_cells_and_unnamed_columns(cohort):
    tmp_path, _ = cohort
    problems = single(tmp_path, ["a", "data/f.nii.gz", "data/m.nii.gz", "extra"])
    assert problems == ["row 2: 4 cells but the header has 3 columns"]
    # a trailing delimiter (an unnamed, empty column) is fine
    rows = [HEADER[:3] + [""], ["a", "data/f.nii.gz", "data/m.nii.gz", ""]]
    assert len(read_manifest(write(tmp_path / "trail.csv", rows))) == 1


def test_check_images_false_checks_structure_and_files_only(cohort):
    tmp_path, files = cohort
    pair = PairSpec(id="a", fixed=files["img2d"], moving=files["m"])
    assert len(validate_pairs([pair])) == 1
    assert validate_pairs([pair], check_images=False) == []
    missing = PairSpec(id="b", fixed=tmp_path / "nope.nii.gz", moving=files["m"])
    assert validate_pairs([missing], check_images=False) == [
        f"pair 'b', column 'fixed': no such file: {tmp_path / 'nope.nii.gz'}"]


def test_image_headers_are_read_once_per_file(cohort, monkeypatch):
    tmp_path, files = cohort
    calls = []
    original = checks_module._read_header
    monkeypatch.setattr(checks_module, "_read_header", lambda p: calls.append(p) or original(p))
    pairs = [PairSpec(id=f"p{i}", fixed=files["f"], moving=files["m"], row=i + 2) for i in range(5)]
    assert validate_pairs(pairs) == []
    assert sorted(calls) == sorted([files["f"], files["m"]])


# --------------------------------------------------------------------------------- generators
def test_pairs_to_atlas(tmp_path):
    folder = tmp_path / "imgs"
    for name in ("s10", "s2", "s1"):
        nifti(folder / f"{name}.nii.gz")
        nifti(folder / f"{name}_seg.nii.gz", labels=True)
    atlas = nifti(folder / "atlas.nii.gz")
    nifti(folder / "atlas_seg.nii.gz", labels=True)
    (folder / "notes.txt").write_text("x")

    pairs = pairs_to_atlas(folder, atlas, labels_pattern="{stem}_seg.nii.gz")
    assert [p.id for p in pairs] == ["s1", "s2", "s10"]  # natural order, atlas left out
    assert [p.row for p in pairs] == [2, 3, 4]
    assert all(p.fixed == atlas and p.fixed_labels == folder / "atlas_seg.nii.gz" for p in pairs)
    assert [p.moving_labels.name for p in pairs] == ["s1_seg.nii.gz", "s2_seg.nii.gz",
                                                    "s10_seg.nii.gz"]
    assert validate_pairs(pairs) == []

    plain = pairs_to_atlas(folder, atlas, pattern="s?.nii.gz")
    assert [p.id for p in plain] == ["s1", "s2"] and plain[0].fixed_labels is None
    (folder / "s2_seg.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="s2_seg.nii.gz"):
        pairs_to_atlas(folder, atlas, labels_pattern="{stem}_seg.nii.gz")
    with pytest.raises(ValueError, match="no images match"):
        pairs_to_atlas(folder, atlas, pattern="*.mgz")


def test_all_pairs_ordered_and_unordered(tmp_path):
    for name in ("a", "b", "c", "d"):
        nifti(tmp_path / f"{name}.nii.gz")
    ordered = all_pairs(tmp_path)
    assert len(ordered) == 12 and len({p.id for p in ordered}) == 12
    assert all(p.fixed != p.moving for p in ordered)
    assert {(p.moving.name, p.fixed.name) for p in ordered} == {
        (f"{m}.nii.gz", f"{f}.nii.gz") for m in "abcd" for f in "abcd" if m != f}
    assert ordered[0].id == "a_to_b" and ordered[0].moving.name == "a.nii.gz"
    unordered = all_pairs(tmp_path, ordered=False)
    assert [p.id for p in unordered] == ["a_to_b", "a_to_c", "a_to_d", "b_to_c", "b_to_d",
                                         "c_to_d"]
    assert [p.row for p in unordered] == list(range(2, 8))
    with pytest.raises(ValueError, match="pairs need >= 2"):
        all_pairs(tmp_path, pattern="a.nii.gz")


def test_longitudinal_pairs_bids_tree(tmp_path):
    root = tmp_path / "bids"
    for sub, sessions in (("sub-02", ("ses-1", "ses-2", "ses-10")),
                          ("sub-01", ("ses-01", "ses-02", "ses-03"))):
        for ses in sessions:
            anat = root / sub / ses / "anat"
            nifti(anat / f"{sub}_{ses}_T1w.nii.gz")
            nifti(anat / f"{sub}_{ses}_T2w.nii.gz")
            if sub == "sub-01":
                nifti(anat / f"{sub}_{ses}_dseg.nii.gz", labels=True)
    (root / "sub-01" / "ses-04" / "anat").mkdir(parents=True)  # a session without the image
    (root / "dataset_description.json").write_text("{}")

    pairs = longitudinal_pairs(root)
    assert [p.id for p in pairs] == ["sub-01_ses-01_to_ses-02", "sub-01_ses-02_to_ses-03",
                                     "sub-02_ses-1_to_ses-2", "sub-02_ses-2_to_ses-10"]
    first = pairs[0]
    anat = root / "sub-01"
    assert first.moving == anat / "ses-01/anat/sub-01_ses-01_T1w.nii.gz"
    assert first.fixed == anat / "ses-02/anat/sub-01_ses-02_T1w.nii.gz"
    assert first.moving_labels == anat / "ses-01/anat/sub-01_ses-01_dseg.nii.gz"
    assert first.fixed_labels == anat / "ses-02/anat/sub-01_ses-02_dseg.nii.gz"
    assert pairs[2].fixed_labels is None and pairs[2].moving_labels is None
    assert [p.group for p in pairs] == ["sub-01", "sub-01", "sub-02", "sub-02"]
    assert [p.row for p in pairs] == [2, 3, 4, 5]
    assert validate_pairs(pairs) == []
    assert longitudinal_pairs(root, suffix="T2w")[0].moving.name == "sub-01_ses-01_T2w.nii.gz"
    with pytest.raises(ValueError, match="no subject has two sessions"):
        longitudinal_pairs(root, suffix="FLAIR")


# ------------------------------------------------------------------------------------ writing
@pytest.mark.parametrize("name", ["out.csv", "out.tsv"])
@pytest.mark.parametrize("relative", [False, True])
def test_write_read_round_trip(cohort, name, relative):
    tmp_path, files = cohort
    pairs = read_manifest(write(tmp_path / "in.csv", good_rows()))
    out = write_manifest(pairs, tmp_path / name, relative=relative)
    assert out == tmp_path / name
    assert read_manifest(out) == pairs
    text = out.read_text()
    assert ("\t" in text) == name.endswith(".tsv")
    assert (str(tmp_path) in text) != relative
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(["in.csv", name])


def test_write_only_used_columns_and_generated_pairs(tmp_path):
    for name in ("a", "b"):
        nifti(tmp_path / "imgs" / f"{name}.nii.gz")
    pairs = all_pairs(tmp_path / "imgs")
    out = write_manifest(pairs, tmp_path / "pairs.tsv")
    assert out.read_text().splitlines()[0] == "id\tfixed\tmoving"
    assert read_manifest(out) == pairs


def test_write_refuses_bad_pairs_and_names(tmp_path):
    pair = PairSpec(id="a", fixed="f.nii.gz", moving="m.nii.gz")  # files need not exist
    write_manifest([pair], tmp_path / "ok.csv")
    with pytest.raises(ManifestError, match="duplicate id 'a'"):
        write_manifest([pair, pair], tmp_path / "dup.csv")
    with pytest.raises(ValueError, match="must end in .csv"):
        write_manifest([pair], tmp_path / "pairs.json")
    assert not (tmp_path / "dup.csv").exists()


def test_manifest_module_does_not_import_pydra():
    for module in (manifest_module, checks_module, pair_spec_module):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if "pydra" in m or "nipype" in m]
