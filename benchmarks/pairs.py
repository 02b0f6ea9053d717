"""Benchmark pairs written as NIfTI (images and labels), cached under a folder.

* ``2d200``: the paper's synthetic 2D pair (200x200, seed 2018), object labels.
* ``phantom64`` / ``phantom96``: the 3D lung-like phantom (64^3 / 96^3), tissue labels.
* ``brain2mm``: a brain-sized 2 mm grid, 80x96x112: the MNI152 T1 of the shared data
  (``/work/shared/data/brain3d``) centred on a 160x192x224 mm box, as fixed image with its AAL
  labels (116 regions); the moving image is the same brain deformed by a smooth random
  diffeomorphism (displacements up to about 6 mm, Gaussian-smoothed noise field) with 2 %
  intensity noise, and its labels deformed with it (nearest neighbour). Only a brain-sized grid
  and realistic anatomy: not a cross-subject pair (the shared data has no labelled second
  subject), so every method finds it easier than a real one.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from rdmm_pipelines.core.gaussian import gaussian_filter
from rdmm_pipelines.core.interpolation import identity_map, sample_voxel
from rdmm_pipelines.synthetic import make_pairs_2d, make_phantom_3d

SHARED = Path(os.environ.get("RDMM_SHARED_DATA", "/work/shared/data"))
CASES = ("2d200", "phantom64", "phantom96", "brain2mm")


def _save(path: Path, data: np.ndarray, spacing, dtype) -> None:
    aff = np.diag(list(spacing) + [1.0] * (4 - len(spacing)))  # 2D images are saved as (X, Y)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), aff), str(path))


def _write(folder: Path, src, tgt, src_lab, tgt_lab, spacing) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {k: folder / f"{k}.nii.gz" for k in ("fixed", "moving", "fixed_labels", "moving_labels")}
    _save(files["fixed"], tgt, spacing, np.float32)
    _save(files["moving"], src, spacing, np.float32)
    _save(files["fixed_labels"], tgt_lab, spacing, np.int16)
    _save(files["moving_labels"], src_lab, spacing, np.int16)
    return files


def _brain(seed: int = 0) -> tuple[np.ndarray, ...]:
    t1 = nib.load(str(SHARED / "brain3d" / "mni.nii.gz"))
    lab = nib.load(str(SHARED / "brain3d" / "mnia.nii.gz"))
    box = (160, 192, 224)

    def centre(a: np.ndarray) -> np.ndarray:
        out = np.zeros(box, dtype=np.float32)
        src, dst = [], []
        for n, m in zip(a.shape, box):
            if n >= m:
                o = (n - m) // 2
                src.append(slice(o, o + m))
                dst.append(slice(0, m))
            else:
                o = (m - n) // 2
                src.append(slice(0, n))
                dst.append(slice(o, o + n))
        out[tuple(dst)] = a[tuple(src)]
        return out

    img = centre(np.asarray(t1.dataobj, dtype=np.float32))
    labels = centre(np.asarray(lab.dataobj, dtype=np.float32))
    img_t = torch.from_numpy(img)[None, None]
    img2 = torch.nn.functional.avg_pool3d(img_t, 2)[0, 0].numpy()  # 2 mm
    lab2 = labels[::2, ::2, ::2]  # nearest (even voxel of each 2x2x2 block)
    gen = torch.Generator().manual_seed(seed)
    shape = img2.shape
    noise = torch.randn((1, 3) + shape, generator=gen, dtype=torch.float64)
    u = gaussian_filter(noise, (1.0,) * 3, (6.0,))[:, 0]  # voxel units, sigma 12 mm
    u = u * (3.0 / u.abs().max())  # up to 3 voxels = 6 mm
    coords = identity_map(shape, (1.0,) * 3, dtype=torch.float64) + u
    moving = sample_voxel(torch.from_numpy(img2).double()[None, None], coords)[0, 0].numpy()
    moving = moving * (1 + 0.02 * torch.randn(shape, generator=gen, dtype=torch.float64).numpy())
    moving_lab = sample_voxel(torch.from_numpy(lab2).double()[None, None], coords, mode="nearest")[0, 0].numpy()
    return moving, img2, moving_lab, lab2


def make_pair(case: str, folder: Path) -> dict[str, Path]:
    """NIfTI files (fixed, moving, fixed_labels, moving_labels) of benchmark ``case`` in ``folder``."""
    folder = Path(folder) / case
    files = {k: folder / f"{k}.nii.gz" for k in ("fixed", "moving", "fixed_labels", "moving_labels")}
    if all(p.is_file() for p in files.values()):
        return files
    if case == "2d200":
        p = make_pairs_2d(1, seed=2018, size=200)[0]
        return _write(folder, p.source[0].numpy(), p.target[0].numpy(), p.source_labels.numpy(),
                      p.target_labels.numpy(), p.spacing)
    if case.startswith("phantom"):
        n = int(case[len("phantom"):])
        p = make_phantom_3d(7, (n, n, n))
        return _write(folder, p.source[0].numpy(), p.target[0].numpy(), p.source_labels.numpy(),
                      p.target_labels.numpy(), p.spacing)
    if case == "brain2mm":
        return _write(folder, *_brain(), (2.0, 2.0, 2.0))
    raise ValueError(f"unknown case {case!r}; choose one of {CASES}")
