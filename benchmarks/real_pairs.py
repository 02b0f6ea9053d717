"""The real-anatomy case set: fixed lists of pairs, written as NIfTI under a folder.

* ``oai-x01`` .. ``oai-x12``: OAI knee cartilage, cross-subject. Subjects of each knee side, sorted
  by id, paired in order (first visits): 6 left and 6 right pairs. The image is made from the
  labels (femoral cartilage 0.6, tibial 1.0, background 0), 0.3646 mm pixels; labels 1 (femoral)
  and 2 (tibial) give the Dice.
* ``oai-l01`` .. ``oai-l06``: OAI longitudinal, the second visit registered to the first, for the
  six subjects after those of the cross-subject pairs (sorted by id).
* ``ct-head``: the 2D head CT pair of ITKElastix (256x256, int16), Dice on its masks.
* ``brain-2mm`` / ``brain-1mm``: MNI152 (moving) to Colin27 (fixed), T1, cross-subject, at 2 mm
  (box 80x96x112 after 2x2x2 averaging) and 1 mm (160x192x224). No labels on Colin27: the label
  files are head masks (intensity above 10 % of the 99th percentile), so Dice is of the head only;
  report the similarity (``similarity_after``) and folds.
* ``brain-2mm-rev``: Colin27 (moving) to MNI152 (fixed). The two 2 mm pairs are the brain
  preset's set (the shared data has no third T1: ``mnia`` is the AAL label map on MNI's grid).

Every brain is first brought to RAS (``nibabel.as_closest_canonical``: MNI152 is stored LAS,
Colin27 RAS); before 2026-12-06 the raw arrays were paired, so MNI's left was Colin's right.

The lists are fixed so that runs compare across commits. Data: ``$RDMM_SHARED_DATA`` or
``/work/shared/data`` (not shipped with the package).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np

SHARED = Path(os.environ.get("RDMM_SHARED_DATA", "/work/shared/data"))
OAI_SPACING = 0.3646  # mm, in-plane (the files' headers say 1 mm)
OAI_CROSS = tuple(f"oai-x{i:02d}" for i in range(1, 13))
OAI_LONG = tuple(f"oai-l{i:02d}" for i in range(1, 7))
BRAIN_CASES = {"brain-2mm": ("mni", "ch2", 2), "brain-1mm": ("mni", "ch2", 1),
               "brain-2mm-rev": ("ch2", "mni", 2)}
REAL_CASES = OAI_CROSS + OAI_LONG + ("ct-head", *BRAIN_CASES)
_NAME = re.compile(r"^(\d+)_(\d{8})_SAG_3D_DESS_(LEFT|RIGHT)_\d+_label_all\.alignedCOM\.Label([12])\.sliced\.nii\.gz$")


def oai_scans(folder: Path | None = None) -> dict[tuple[str, str, str], dict[int, Path]]:
    """(subject, date, side) -> {1: femoral file, 2: tibial file}."""
    folder = Path(folder or SHARED / "oai_cartilage2d")
    scans: dict[tuple[str, str, str], dict[int, Path]] = {}
    for p in sorted(folder.glob("*.nii.gz")):
        m = _NAME.match(p.name)
        if m:
            scans.setdefault((m[1], m[2], m[3]), {})[int(m[4])] = p
    return scans


def oai_pairs(folder: Path | None = None) -> dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]]:
    """Case name -> (moving scan, fixed scan) keys of :func:`oai_scans`."""
    scans = oai_scans(folder)
    visits: dict[tuple[str, str], list[str]] = {}
    for subj, date, side in scans:
        visits.setdefault((subj, side), []).append(date)
    subjects = sorted(visits)
    pairs: dict[str, tuple] = {}
    n = 0
    for side in ("LEFT", "RIGHT"):
        firsts = [(s, min(visits[(s, sd)]), sd) for s, sd in subjects if sd == side]
        for k in range(6):
            fixed, moving = firsts[2 * k], firsts[2 * k + 1]
            n += 1
            pairs[f"oai-x{n:02d}"] = (moving, fixed)
    used = {key[0] for pair in pairs.values() for key in pair}
    rest = [(s, sd) for s, sd in subjects if s not in used and len(visits[(s, sd)]) >= 2]
    for k, (s, sd) in enumerate(rest[:6], start=1):
        d = sorted(visits[(s, sd)])
        pairs[f"oai-l{k:02d}"] = ((s, d[1], sd), (s, d[0], sd))
    return pairs


def _oai_image(files: dict[int, Path]) -> tuple[np.ndarray, np.ndarray]:
    fem = np.asarray(nib.load(str(files[1])).dataobj, dtype=np.float32) > 0.5
    tib = np.asarray(nib.load(str(files[2])).dataobj, dtype=np.float32) > 0.5
    labels = np.where(tib, 2, np.where(fem, 1, 0)).astype(np.int16)
    image = np.where(tib, 1.0, np.where(fem, 0.6, 0.0)).astype(np.float32)
    return image, labels


def _save(path: Path, data: np.ndarray, affine: np.ndarray, dtype) -> None:
    tmp = path.with_name(path.name + ".part.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), affine), str(tmp))
    os.replace(tmp, path)


def _head_mask(image: np.ndarray) -> np.ndarray:
    return (image > 0.1 * np.percentile(image, 99)).astype(np.int16)


def box_slices(shape: tuple[int, ...], box: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """(source, destination) slices that centre an array of ``shape`` in ``box``: cropped where it
    is larger, zero-padded where smaller."""
    src, dst = [], []
    for n, m in zip(shape, box):
        o = abs(n - m) // 2
        src.append(slice(o, o + m) if n >= m else slice(0, n))
        dst.append(slice(0, m) if n >= m else slice(o, o + n))
    return tuple(src), tuple(dst)


def _brain(folder: Path, moving: str, fixed: str, mm: int) -> None:
    box = (160, 192, 224)
    for name, role in ((moving, "moving"), (fixed, "fixed")):
        img = nib.as_closest_canonical(nib.load(str(SHARED / "brain3d" / f"{name}.nii.gz")))
        a = np.asarray(img.dataobj, dtype=np.float32)
        out = np.zeros(box, dtype=np.float32)
        src, dst = box_slices(a.shape, box)
        out[dst] = a[src]
        if mm == 2:
            out = out.reshape(80, 2, 96, 2, 112, 2).mean(axis=(1, 3, 5))
        aff = np.diag([float(mm)] * 3 + [1.0])
        _save(folder / f"{role}.nii.gz", out, aff, np.float32)
        _save(folder / f"{role}_labels.nii.gz", _head_mask(out), aff, np.int16)


def _ct_head(folder: Path) -> None:
    import SimpleITK as sitk

    src = SHARED / "ct2d_head"
    for role in ("fixed", "moving"):
        for suffix, key, dtype in (("", role, np.float32), ("_mask", f"{role}_labels", np.int16)):
            im = sitk.ReadImage(str(src / f"CT_2D_head_{role}{suffix}.mha"))
            a = sitk.GetArrayFromImage(im).T  # (x, y)
            sp = im.GetSpacing()
            aff = np.diag([sp[0], sp[1], 1.0, 1.0])
            data = (a > 0).astype(np.int16) if suffix else a.astype(np.float32)
            _save(folder / f"{key}.nii.gz", data, aff, dtype)


def make_real_pair(case: str, folder: Path) -> dict[str, Path]:
    """NIfTI files (fixed, moving, fixed_labels, moving_labels) of real case ``case`` under
    ``folder / case`` (written once, then reused)."""
    folder = Path(folder) / case
    files = {k: folder / f"{k}.nii.gz" for k in ("fixed", "moving", "fixed_labels", "moving_labels")}
    if all(p.is_file() for p in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    if case.startswith("oai-"):
        scans, pairs = oai_scans(), oai_pairs()
        if case not in pairs:
            raise ValueError(f"unknown OAI case {case!r}")
        aff = np.diag([OAI_SPACING, OAI_SPACING, 1.0, 1.0])
        for role, key in zip(("moving", "fixed"), pairs[case]):
            image, labels = _oai_image(scans[key])
            _save(files[role], image, aff, np.float32)
            _save(files[f"{role}_labels"], labels, aff, np.int16)
        (folder / "source.txt").write_text("moving: %s %s %s\nfixed: %s %s %s\n" % (*pairs[case][0], *pairs[case][1]))
    elif case == "ct-head":
        _ct_head(folder)
    elif case in BRAIN_CASES:
        _brain(folder, *BRAIN_CASES[case])
    else:
        raise ValueError(f"unknown real case {case!r}; choose one of {', '.join(REAL_CASES)}")
    return files
