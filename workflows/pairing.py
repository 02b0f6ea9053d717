"""Pair lists from folder trees, for cohort manifests (:func:`.manifest.write_manifest` writes them).

* :func:`pairs_to_atlas`: every image of a folder registered to one atlas;
* :func:`all_pairs`: every pair of distinct images of a folder (both directions, or one);
* :func:`longitudinal_pairs`: consecutive sessions of each subject of a BIDS-like tree.

Pair ids ``A_to_B`` mean "moving A registered to fixed B". The lists are checked as a manifest's
rows are (ids unique and safe), and numbered as the rows of the manifest they would make.

This module needs neither pydra nor nipype.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path

from .pair_spec import (
    _NIFTI_SUFFIXES,
    ManifestError,
    PairSpec,
    _natural_key,
    _nifti_ext,
    _norm,
    _safe_id,
    _stem,
)
from .manifest_checks import validate_pairs

__all__ = ["all_pairs", "longitudinal_pairs", "pairs_to_atlas"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------- generators
def _numbered(pairs: list[PairSpec]) -> list[PairSpec]:
    """Rows as written, and a structural check (ids unique and safe)."""
    out = [PairSpec(**{f.name: getattr(p, f.name) for f in fields(PairSpec) if f.name != "row"},
                    row=i + 2) for i, p in enumerate(pairs)]
    problems = validate_pairs(out, check_images=False)
    if problems:
        raise ManifestError(problems)
    return out


def _images(folder: str | os.PathLike, pattern: str, labels_pattern: str | None,
            exclude: Iterable[Path] = ()) -> tuple[list[Path], dict[Path, Path]]:
    """Images matching ``pattern`` in ``folder`` (natural order; label maps named by
    ``labels_pattern`` and ``exclude`` left out) and, with ``labels_pattern``, each one's labels."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: no such folder")
    if labels_pattern is not None and "{stem}" not in labels_pattern:
        raise ValueError(f"labels_pattern {labels_pattern!r} must contain '{{stem}}', e.g. "
                         "'{stem}_seg.nii.gz'")
    skip = {_norm(p) for p in exclude}
    found = [_norm(p) for p in root.glob(pattern) if p.is_file()]
    found = [p for p in found if p not in skip]
    labels: dict[Path, Path] = {}
    if labels_pattern is not None:
        names = {p.parent / labels_pattern.format(stem=_stem(p)) for p in found}
        found = [p for p in found if p not in names]
        missing = []
        for p in found:
            lab = p.parent / labels_pattern.format(stem=_stem(p))
            if lab.is_file():
                labels[p] = lab
            else:
                missing.append(str(lab))
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) in {root} have no label map "
                                    f"({labels_pattern!r}): " + ", ".join(missing))
    found.sort(key=lambda p: _natural_key(p.name))
    return found, labels


def pairs_to_atlas(folder: str | os.PathLike, atlas: str | os.PathLike,
                   pattern: str = "*.nii.gz", labels_pattern: str | None = None, *,
                   atlas_labels: str | os.PathLike | None = None) -> list[PairSpec]:
    """Every image of ``folder`` registered to ``atlas`` (the fixed image of every pair).

    Args:
        folder: the images' folder (``pattern`` is a glob in it; the atlas is left out if it
            lies there).
        atlas: the atlas image.
        pattern: glob for the images.
        labels_pattern: the name of each image's label map next to it, with ``{stem}`` standing
            for the image name without ``.nii``/``.nii.gz`` (e.g. ``"{stem}_seg.nii.gz"``); files
            with such names are not taken as images. Every image must have one.
        atlas_labels: the atlas's label map (default, with ``labels_pattern``: the pattern
            applied to the atlas's name, next to the atlas).

    Returns:
        One pair per image (natural name order), id = the image's name without extension.
    """
    atlas_p = _norm(Path(atlas))
    if not atlas_p.is_file():
        raise FileNotFoundError(f"{atlas_p}: no such atlas image")
    exclude = [atlas_p]
    atlas_lab = None
    if atlas_labels is not None:
        atlas_lab = _norm(Path(atlas_labels))
    elif labels_pattern is not None and "{stem}" in labels_pattern:
        atlas_lab = atlas_p.parent / labels_pattern.format(stem=_stem(atlas_p))
    if labels_pattern is not None:
        if atlas_lab is None or not atlas_lab.is_file():
            raise FileNotFoundError(f"{atlas_lab}: no such atlas label map (pass atlas_labels)")
        exclude.append(atlas_lab)
    images, labels = _images(folder, pattern, labels_pattern, exclude)
    if not images:
        raise ValueError(f"{folder}: no images match {pattern!r}")
    return _numbered([
        PairSpec(id=_safe_id(_stem(p)), fixed=atlas_p, moving=p,
                 fixed_labels=atlas_lab if labels_pattern else None, moving_labels=labels.get(p))
        for p in images])


def all_pairs(folder: str | os.PathLike, pattern: str = "*.nii.gz", ordered: bool = True, *,
              labels_pattern: str | None = None) -> list[PairSpec]:
    """Every pair of distinct images of ``folder`` (no self pairs).

    With ``ordered`` (default) both directions, n (n - 1) pairs: for each moving image (natural
    name order), every other image as fixed. Otherwise n (n - 1) / 2 pairs, the earlier image
    (natural order) moving and the later one fixed. Ids are ``<moving>_to_<fixed>``.
    ``labels_pattern`` as in :func:`pairs_to_atlas`.
    """
    images, labels = _images(folder, pattern, labels_pattern)
    if len(images) < 2:
        raise ValueError(f"{folder}: {len(images)} image(s) match {pattern!r}; pairs need >= 2")
    combos = itertools.permutations(images, 2) if ordered else itertools.combinations(images, 2)
    return _numbered([
        PairSpec(id=_safe_id(f"{_stem(m)}_to_{_stem(f)}"), fixed=f, moving=m,
                 fixed_labels=labels.get(f), moving_labels=labels.get(m))
        for m, f in combos])


def _session_image(anat: Path, sub: str, ses: str, suffix: str) -> Path | None:
    found = [p for ext in _NIFTI_SUFFIXES for p in anat.glob(f"{sub}_{ses}_*{suffix}{ext}")
             if p.is_file() and _stem(p).endswith(f"_{suffix}") and _nifti_ext(p) == ext]
    if len(found) > 1:
        names = ", ".join(sorted(p.name for p in found))
        raise ValueError(f"{anat}: {len(found)} '{suffix}' images for {sub} {ses} ({names}); "
                         "the pair would be ambiguous")
    return _norm(found[0]) if found else None


def _session_labels(image: Path, suffix: str) -> Path | None:
    stem, ext = _stem(image), _nifti_ext(image)
    for name in (f"{stem[: -len(suffix) - 1]}_dseg{ext}", f"{stem}_dseg{ext}"):
        cand = image.parent / name
        if cand.is_file():
            return cand
    return None


def longitudinal_pairs(bids_root: str | os.PathLike, suffix: str = "T1w") -> list[PairSpec]:
    """Consecutive sessions of each subject of a BIDS-like tree.

    Images are ``sub-*/ses-*/anat/sub-<s>_ses-<t>[_<entities>]_<suffix>.nii[.gz]`` (one per
    session). Subjects and sessions are sorted naturally; sessions without the image are skipped,
    so each subject with k imaged sessions gives k - 1 pairs: the earlier session moving, the
    next one fixed, id ``sub-<s>_ses-<t1>_to_ses-<t2>``, group ``sub-<s>``. A sibling label map
    ``..._dseg.nii[.gz]`` (the image's name with ``_<suffix>`` replaced by ``_dseg``, or
    ``_dseg`` appended) is used when both sessions of a pair have one.
    """
    root = Path(bids_root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: no such folder")
    pairs: list[PairSpec] = []
    subjects = sorted((d for d in root.glob("sub-*") if d.is_dir()),
                      key=lambda d: _natural_key(d.name))
    for sub_dir in subjects:
        sub = sub_dir.name
        sessions = sorted((d for d in sub_dir.glob("ses-*") if d.is_dir()),
                          key=lambda d: _natural_key(d.name))
        imaged = []
        for ses_dir in sessions:
            image = _session_image(ses_dir / "anat", sub, ses_dir.name, suffix)
            if image is not None:
                imaged.append((ses_dir.name, image, _session_labels(image, suffix)))
        if len(imaged) < 2:
            logger.info("%s: %d session(s) with a %s image; no pairs", sub, len(imaged), suffix)
        for (ses_a, img_a, lab_a), (ses_b, img_b, lab_b) in zip(imaged, imaged[1:]):
            both = lab_a is not None and lab_b is not None
            pairs.append(PairSpec(
                id=_safe_id(f"{sub}_{ses_a}_to_{ses_b}"), fixed=img_b, moving=img_a,
                fixed_labels=lab_b if both else None, moving_labels=lab_a if both else None,
                group=sub))
    if not pairs:
        raise ValueError(f"{root}: no subject has two sessions with a '{suffix}' image")
    return _numbered(pairs)
