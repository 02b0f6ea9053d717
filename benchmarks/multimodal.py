"""Masks and mutual information (issue 17): pairs with a known answer, our models beside ANTs SyN.

    python benchmarks/multimodal.py --case t1t2 --out runs/multimodal/results.jsonl
    python benchmarks/multimodal.py --case ct-head
    python benchmarks/multimodal.py --case ring
    python benchmarks/multimodal.py --case t1t2 --methods lddmm-mi \\
        --variant 'mi-b64={"model": "lddmm", "set": {"similarity.name": "mi", "similarity.bins": 64}}'

Cases (made once under ``--data``, then reused):

* ``t1t2``: multi-modal with a known answer. Fixed: the MNI152 T1 (brought to RAS), the axial
  slice through the middle of the volume (``--dim 2``, default; 1 mm, cropped to 160x192) or the
  whole brain (``--dim 3``, box 160x192x224 averaged to ``--mm``). Moving: a second contrast made
  from it by a NON-monotone intensity map (inside the brain CSF bright, grey matter mid, white
  matter dark, as in a T2; the background stays dark: T1 0 is background outside the brain and
  CSF inside), plus 2 % Gaussian noise, warped by a known smooth random deformation (seeded;
  Gaussian-smoothed noise, sigma ``--smooth`` mm, scaled to a largest displacement of
  ``--amplitude`` mm; its det J is checked > 0). Labels: the AAL atlas
  (``mnia``, 116 regions, on MNI's grid) on the fixed, warped by the same deformation for the
  moving. Scores: mean Dice over the AAL labels present, the error to the known deformation
  inside the brain mask (``|phi_true(R(y)) - y|`` in mm for fixed voxels y, R the recovered
  fixed -> moving map, phi_true the known moving -> fixed map: 0 for the exact inverse), folds.
* ``t1t1``: the control of ``t1t2``: the same deformation and noise, the moving image in the
  fixed image's contrast (what each method reaches without the change of contrast).
* ``ct-head``: the real 2D head CT pair of ITKElastix (``real_pairs.make_real_pair``): Dice of the
  head masks (not of anatomy), folds; no known deformation.
* ``ring``: masks. Fixed: the same T1 (MNI152 here is skull-stripped) plus a bright synthetic
  "skull" ring 3-8 mm outside the brain that the moving image does not have; moving: the T1
  (same contrast) warped by the known deformation. The fixed mask is the brain mask dilated by
  2 mm (the ring stays outside), the moving mask the same for the moving brain. Scores as for
  ``t1t2`` (the error inside the undilated fixed brain mask).

Every method's full transform (affine included) is scored the same way, from its dense fixed ->
moving voxel map (ours: ``DenseTransform.from_result``; SyN: its composed displacement field):
Dice with the moving labels warped nearest-neighbour (the mean over all labels, and over the
labels of at least ``MIN_LABEL_VOXELS`` fixed voxels), the error to the known deformation, voxels
with det J <= 0 (central differences, physical) and folded grid cells (the corner test). One
process, one thread (torch and ITK). Prints a table per case and appends one JSON line per run
to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from overrides import apply_overrides  # noqa: E402
from real_pairs import SHARED, box_slices, make_real_pair  # noqa: E402

CASES = ("t1t2", "t1t1", "ct-head", "ring")
#: labels with fewer fixed voxels than this are left out of ``dice_big`` (the 2D slice cuts one AAL
#: region in a single voxel: its Dice, 0 or 1, moves the mean over 42 labels by 0.024)
MIN_LABEL_VOXELS = 10

#: method name -> how it runs. ours: a preset of ``model`` with dotted ``set`` overrides and the
#: ``masks`` given to register() ("fixed", "moving"); ants: ``ants.registration`` keyword arguments
#: (``type_of_transform`` "SyN" unless given) and the masks passed as ``mask`` / ``moving_mask``
#: (with ``mask_all_stages=True``: the affine stage too, as our masks).
METHODS: dict[str, dict] = {
    # multi-modal: MI (32 bins: the config's default), the affine stage off (the known deformation
    # has no affine part) or with MI
    "lddmm-mi": {"model": "lddmm", "set": {"similarity.name": "mi", "affine.enabled": False}},
    "lddmm-mi-affmi": {"model": "lddmm", "set": {"similarity.name": "mi", "affine.similarity": "mi"}},
    # the multi-modal preset proposed by the sweep (docs/benchmarks_issue17.md): MI, 64 bins, MI affine
    "lddmm-mi64-affmi": {"model": "lddmm", "set": {"similarity.name": "mi", "similarity.bins": 64,
                                                   "affine.similarity": "mi"}},
    "vsvf-mi64-affmi": {"model": "vsvf", "set": {"similarity.name": "mi", "similarity.bins": 64,
                                                 "affine.similarity": "mi"}},
    # the defaults' mk-LNCC, affine off / at its default (NCC)
    "lddmm-mklncc": {"model": "lddmm", "set": {"affine.enabled": False}},
    "lddmm-default": {"model": "lddmm", "set": {}},
    # masks (the ring case): the defaults with the fixed mask, with both masks; the MI preset with the fixed mask
    "lddmm-fixed-mask": {"model": "lddmm", "set": {}, "masks": ["fixed"]},
    "lddmm-both-masks": {"model": "lddmm", "set": {}, "masks": ["fixed", "moving"]},
    "lddmm-mi64-affmi-fixed-mask": {"model": "lddmm", "set": {"similarity.name": "mi", "similarity.bins": 64,
                                                              "affine.similarity": "mi"}, "masks": ["fixed"]},
    # ANTs SyN through antspyx 0.6.3, whose defaults are aff_metric = syn_metric = "mattes" (MI, 32
    # bins): "syn-mi" is antspyx's default SyN; "syn-cc" has CC (radius 4) in the SyN stage as
    # antspyx's "SyNCC" (Mattes MI linear stages); "synonly-mi" skips the linear stages
    "syn-mi": {"ants": {"aff_metric": "mattes", "syn_metric": "mattes"}},
    "syn-cc": {"ants": {"aff_metric": "mattes", "syn_metric": "CC", "syn_sampling": 4}},
    "synonly-mi": {"ants": {"type_of_transform": "SyNOnly", "syn_metric": "mattes"}},
    "syn-mask": {"ants": {"aff_metric": "mattes", "syn_metric": "mattes"}, "masks": ["fixed"]},
    "syn-both-masks": {"ants": {"aff_metric": "mattes", "syn_metric": "mattes"}, "masks": ["fixed", "moving"]},
    "syn-cc-mask": {"ants": {"aff_metric": "mattes", "syn_metric": "CC", "syn_sampling": 4}, "masks": ["fixed"]},
}

_MULTIMODAL = ["lddmm-mi", "lddmm-mi-affmi", "lddmm-mi64-affmi", "vsvf-mi64-affmi", "lddmm-mklncc", "lddmm-default",
               "syn-mi", "syn-cc", "synonly-mi"]
DEFAULT_METHODS = {
    "t1t2": _MULTIMODAL,
    "t1t1": _MULTIMODAL,
    "ct-head": ["lddmm-default", "lddmm-mi-affmi", "lddmm-mi64-affmi", "vsvf-mi64-affmi", "syn-mi", "syn-cc"],
    "ring": ["lddmm-default", "lddmm-mklncc", "lddmm-fixed-mask", "lddmm-both-masks", "lddmm-mi64-affmi",
             "lddmm-mi64-affmi-fixed-mask", "syn-mi", "syn-mask", "syn-both-masks", "syn-cc", "syn-cc-mask"],
}

# --------------------------------------------------------------------------------------- data


def _save(path: Path, data: np.ndarray, affine: np.ndarray, dtype) -> None:
    import nibabel as nib

    tmp = path.with_name(path.name + ".part.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=dtype), affine), str(tmp))
    os.replace(tmp, path)


def _mni(dim: int, mm: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(T1, AAL labels, spacing): RAS, box 160x192(x224) around the centre, averaged to ``mm``; 2D:
    the axial slice through the middle of the volume (z = 91 of 182 at 1 mm)."""
    import nibabel as nib

    arrays = []
    for name in ("mni", "mnia"):
        img = nib.as_closest_canonical(nib.load(str(SHARED / "brain3d" / f"{name}.nii.gz")))
        arrays.append(np.asarray(img.dataobj, dtype=np.float32))
    t1, lab = arrays
    box = (160, 192, 224)
    out_t1, out_lab = np.zeros(box, np.float32), np.zeros(box, np.int16)
    src, dst = box_slices(t1.shape, box)
    out_t1[dst] = t1[src]
    out_lab[dst] = np.rint(lab[src]).astype(np.int16)
    z = dst[2].start + t1.shape[2] // 2  # the middle of the volume in the box
    if dim == 2:
        if mm == 1:
            return out_t1[:, :, z], out_lab[:, :, z], 1.0
        k = mm
        a = out_t1[:, :, z - k // 2: z - k // 2 + k].mean(axis=2)
        a = a.reshape(160 // k, k, 192 // k, k).mean(axis=(1, 3))
        lab2 = out_lab[:, :, z][::k, ::k]
        return a, lab2, float(mm)
    if mm == 1:
        return out_t1, out_lab, 1.0
    k = mm
    a = out_t1.reshape(160 // k, k, 192 // k, k, 224 // k, k).mean(axis=(1, 3, 5))
    return a, out_lab[::k, ::k, ::k], float(mm)  # labels: nearest (every k-th voxel)


def brain_mask(t1: np.ndarray) -> np.ndarray:
    """MNI152 here is skull-stripped: the brain is T1 above 10 % of the 99th percentile, holes filled."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(t1 > 0.1 * np.percentile(t1[t1 > 0], 99))


def t2_like(t1: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A non-monotone intensity map of the T1: inside the brain mask CSF bright, grey matter mid,
    white matter dark, as in a T2 (x = T1 / its 99th percentile in the brain at 0, .35, .55, .75,
    .95, 1.2 -> 1, .95, .7, .45, .3, .25; the ventricles are 0 in this MNI152 and become bright);
    outside the mask the background stays 0."""
    x = t1 / np.percentile(t1[mask], 99)
    inside = np.interp(x, [0.0, 0.35, 0.55, 0.75, 0.95, 1.2], [1.0, 0.95, 0.7, 0.45, 0.30, 0.25])
    return np.where(mask, inside, 0.0).astype(np.float32)


def known_displacement(shape: tuple[int, ...], spacing: float, smooth_mm: float, amplitude_mm: float,
                       seed: int) -> np.ndarray:
    """u (d, *shape) in voxels: seeded white noise smoothed by a Gaussian of ``smooth_mm``, scaled so
    that the largest |u| is ``amplitude_mm``. phi_true(x) = x + u(x) maps a moving voxel to the
    fixed voxel it shows; the moving image is the fixed one sampled at phi_true."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    d = len(shape)
    u = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), smooth_mm / spacing, mode="constant")
                  for _ in range(d)])
    u *= (amplitude_mm / spacing) / np.sqrt((u ** 2).sum(0)).max()
    det = jacobian_det_np(u)
    if det.min() <= 0.1:
        raise ValueError(f"the known deformation is too strong (min det J {det.min():.3f}): lower --amplitude")
    return u.astype(np.float64)


def jacobian_det_np(u: np.ndarray) -> np.ndarray:
    """det(I + grad u) by central differences (voxel units)."""
    d = u.shape[0]
    g = np.stack([np.stack(np.gradient(u[i]), 0) for i in range(d)])  # g[i, j] = du_i / dx_j
    jac = g + np.eye(d).reshape(d, d, *([1] * d))
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


def _sample(a: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.map_coordinates(a, coords, order=order, mode="constant", cval=0.0)


def make_case(case: str, root: Path, dim: int, mm: int, smooth: float, amplitude: float, seed: int) -> dict:
    """Files of ``case`` under ``root`` (written once): fixed, moving, fixed_labels, moving_labels,
    and for the synthetic cases the brain mask (fixed), fixed_mask / moving_mask (dilated brain)
    and the known displacement (truth.npy)."""
    if case == "ct-head":
        files = make_real_pair("ct-head", root)
        return {**files, "brain_mask": files["fixed_labels"], "fixed_mask": files["fixed_labels"],
                "moving_mask": files["moving_labels"], "truth": None, "spacing": 1.0}
    folder = root / f"{case}-{dim}d-{mm}mm-s{smooth:g}-a{amplitude:g}-seed{seed}"
    names = ("fixed", "moving", "fixed_labels", "moving_labels", "brain_mask", "fixed_mask", "moving_mask")
    files: dict = {k: folder / f"{k}.nii.gz" for k in names}
    files["truth"] = folder / "truth.npy"
    t1, lab, spacing = _mni(dim, mm)
    files["spacing"] = spacing
    if all(Path(p).is_file() for k, p in files.items() if k != "spacing"):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    from scipy import ndimage

    aff = np.diag([spacing] * dim + [1.0] * (4 - dim))
    brain = brain_mask(t1)
    u = known_displacement(t1.shape, spacing, smooth, amplitude, seed)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in t1.shape], indexing="ij"))
    at = grid + u  # phi_true(x): the fixed voxel shown at moving voxel x
    t1n = t1 / np.percentile(t1[brain], 99)
    rng = np.random.default_rng(seed + 1)
    if case == "t1t2":
        fixed = t1n.astype(np.float32)
        contrast = t2_like(t1, brain)
        moving = _sample(contrast, at, 1) + 0.02 * rng.standard_normal(t1.shape)
        moving = np.clip(moving, 0, None)
    elif case == "t1t1":  # the control: the same deformation and noise, one contrast
        fixed = t1n.astype(np.float32)
        moving = np.clip(_sample(t1n, at, 1) + 0.02 * rng.standard_normal(t1.shape), 0, None)
    elif case == "ring":
        dist = ndimage.distance_transform_edt(~brain, sampling=spacing)
        ring = ndimage.gaussian_filter(((dist > 3.0) & (dist <= 8.0)).astype(np.float32), 0.7 / spacing)
        fixed = (t1n + 1.1 * ring).astype(np.float32)
        moving = _sample(t1n, at, 1)
    else:
        raise ValueError(f"unknown case {case!r}; choose one of {', '.join(CASES)}")
    moving_lab = _sample(lab.astype(np.float64), at, 0).astype(np.int16)
    moving_brain = _sample(brain.astype(np.float64), at, 0) > 0.5
    dilate = max(1, int(round(2.0 / spacing)))
    _save(files["fixed"], fixed, aff, np.float32)
    _save(files["moving"], moving, aff, np.float32)
    _save(files["fixed_labels"], lab, aff, np.int16)
    _save(files["moving_labels"], moving_lab, aff, np.int16)
    _save(files["brain_mask"], brain, aff, np.int16)
    _save(files["fixed_mask"], ndimage.binary_dilation(brain, iterations=dilate), aff, np.int16)
    _save(files["moving_mask"], ndimage.binary_dilation(moving_brain, iterations=dilate), aff, np.int16)
    np.save(files["truth"], u)
    return files


# ------------------------------------------------------------------------------------ scoring


def true_inverse(u: np.ndarray, iterations: int = 50) -> np.ndarray:
    """R*(y) = y - u(R*(y)) by fixed-point iteration: the exact answer (voxels), (d, *S)."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in u.shape[1:]], indexing="ij"))
    r = grid.copy()
    for _ in range(iterations):
        r = grid - np.stack([_sample_edge(u[k], r) for k in range(u.shape[0])])
    return r


def _sample_edge(a: np.ndarray, coords: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.map_coordinates(a, coords, order=1, mode="nearest")


def score(files: dict, moving_voxels, fixed_grid, moving_grid) -> dict:
    """Dice, error to the known deformation inside the brain mask, folds of a fixed -> moving map
    (1, d, *S) in moving voxel indices."""
    import torch

    from rdmm_pipelines.evaluation import dice_per_label, folded_cells, jacobian_determinant_physical, mean_dice
    from rdmm_pipelines.spatial import load_labels
    from rdmm_pipelines.transforms import DenseTransform

    mv = moving_voxels.to(torch.float64)
    tr = DenseTransform(fixed_grid, moving_grid, mv)
    fixed_lab = load_labels(files["fixed_labels"]).data[0]
    warped = tr.apply(load_labels(files["moving_labels"])).data[0]
    det = jacobian_determinant_physical(mv, fixed_grid, moving_grid)
    cells = folded_cells(mv, fixed_grid, moving_grid)
    per_label = dice_per_label(warped, fixed_lab)
    values, counts = torch.unique(fixed_lab, return_counts=True)
    big = {int(v) for v, c in zip(values.tolist(), counts.tolist()) if v != 0 and c >= MIN_LABEL_VOXELS}
    out = {"dice": mean_dice(per_label), "dice_big": mean_dice({k: v for k, v in per_label.items() if k in big}),
           "labels": len([v for v in per_label.values() if v == v]), "labels_big": len(big),
           "folding_voxels": int((det <= 0).sum()),
           "folded_cells": int(cells.sum()), "det_min": float(det.min())}
    if files.get("truth") is not None:
        u = np.load(files["truth"])
        r = mv[0].numpy()
        p = r + np.stack([_sample_edge(u[k], r) for k in range(u.shape[0])])
        grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in u.shape[1:]], indexing="ij"))
        err = np.sqrt((((p - grid) * files["spacing"]) ** 2).sum(0))
        brain = load_labels(files["brain_mask"]).data[0].numpy() > 0
        out.update(err_mean_mm=float(err[brain].mean()), err_p95_mm=float(np.percentile(err[brain], 95)),
                   err_max_mm=float(err[brain].max()))
    return out


def baseline_scores(files: dict) -> dict:
    """Before registration (identity) and with the exact inverse of the known deformation (the
    ceiling the label resampling leaves)."""
    import torch

    from rdmm_pipelines.spatial import load_image

    fixed = load_image(files["fixed"])
    moving = load_image(files["moving"])
    ident = fixed.grid.voxel_indices(torch.float64)
    before = score(files, ident, fixed.grid, moving.grid)
    out = {"dice_before": before["dice"], "dice_big_before": before["dice_big"]}
    if files.get("truth") is not None:
        out["err_before_mm"] = before["err_mean_mm"]
        r = true_inverse(np.load(files["truth"]))
        best = score(files, torch.from_numpy(r)[None], fixed.grid, moving.grid)
        out.update(dice_ceiling=best["dice"], dice_big_ceiling=best["dice_big"], err_ceiling_mm=best["err_mean_mm"])
    return out


# ------------------------------------------------------------------------------------ methods




def run_ours(spec: dict, files: dict, preset: str) -> dict:
    import torch

    from rdmm_pipelines.config import RegistrationConfig
    from rdmm_pipelines.presets import get_preset
    from rdmm_pipelines.registration import register

    base = get_preset(preset, spec["model"]).to_dict()
    cfg = RegistrationConfig.from_dict(apply_overrides(json.loads(json.dumps(base)), spec.get("set", {})))
    kwargs = {f"{m}_mask": str(files[f"{m}_mask"]) for m in spec.get("masks", [])}
    t0 = time.perf_counter()
    result = register(str(files["fixed"]), str(files["moving"]), config=cfg, device="cpu", threads=1, **kwargs)
    seconds = time.perf_counter() - t0
    per_scale: dict[float, int] = {}
    for rec in result.history:
        per_scale[rec.scale] = per_scale.get(rec.scale, 0) + 1
    return {"seconds": seconds, "iterations": list(per_scale.values()), "evaluations": result.evaluations,
            "timings": result.timings, "warnings": list(result.warnings), "threads": torch.get_num_threads(),
            "moving_voxels": result.moving_voxels().double(), "fixed_grid": result.fixed.grid,
            "moving_grid": result.moving.grid, "config": cfg.to_dict()}


def run_ants(spec: dict, files: dict, work: Path, name: str) -> dict:
    import inspect

    from rdmm_pipelines.interfaces.baselines import BASELINES
    from rdmm_pipelines.spatial import load_image
    from rdmm_pipelines.transforms import DenseTransform

    runner = BASELINES["ants-syn"]
    kwargs = dict(spec["ants"])
    kind = kwargs.pop("type_of_transform", "SyN")
    masks = spec.get("masks", [])
    call: dict = {}
    if masks and "fixed_mask" in inspect.signature(runner).parameters:  # the wrapper's masks: every stage
        call = {f"{m}_mask": str(files[f"{m}_mask"]) for m in masks}
    elif masks:  # an older wrapper: antspyx's own keywords
        import ants

        kwargs["mask_all_stages"] = True
        if "fixed" in masks:
            kwargs["mask"] = ants.image_read(str(files["fixed_mask"]))
        if "moving" in masks:
            kwargs["moving_mask"] = ants.image_read(str(files["moving_mask"]))
    work.mkdir(parents=True, exist_ok=True)
    out = runner(str(files["fixed"]), str(files["moving"]), work, prefix=f"{name}_", threads=1,
                 type_of_transform=kind, registration_kwargs=kwargs, **call)
    moving_grid = load_image(files["moving"]).grid
    tr = DenseTransform.from_displacement_field(out.displacement, moving_grid)
    return {"seconds": out.seconds, "iterations": None, "evaluations": None, "tool_version": out.tool_version,
            "moving_voxels": tr.moving_voxels.double(), "fixed_grid": tr.fixed_grid, "moving_grid": moving_grid,
            "ants_kwargs": {k: (v if not hasattr(v, "numpy") else "<mask>") for k, v in kwargs.items()},
            "type_of_transform": kind, "log": str(out.log) if hasattr(out, "log") else None}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip() + ("+dirty" if subprocess.run(
                                  ["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                                  capture_output=True, text=True).stdout.strip() else "")
    except Exception:  # noqa: BLE001
        return "unknown"


def _fmt(v, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", required=True, choices=CASES)
    ap.add_argument("--methods", nargs="*", default=None, help=f"names of METHODS: {', '.join(METHODS)}")
    ap.add_argument("--variant", nargs="*", default=[], metavar="NAME=JSON",
                    help='extra methods, e.g. mi-b64=\'{"model": "lddmm", "set": {"similarity.name": "mi"}}\'')
    ap.add_argument("--preset", default="default", help="the configuration our methods' overrides change")
    ap.add_argument("--dim", type=int, default=2, choices=(2, 3))
    ap.add_argument("--mm", type=int, default=1, choices=(1, 2, 4))
    ap.add_argument("--smooth", type=float, default=10.0, help="known deformation: smoothing sigma (mm)")
    ap.add_argument("--amplitude", type=float, default=6.0, help="known deformation: largest displacement (mm)")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default="runs/multimodal/data")
    ap.add_argument("--out", default="runs/multimodal/results.jsonl")
    ap.add_argument("--tag", default="", help="a free note recorded with every line")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    methods = dict(METHODS)
    for v in args.variant:
        name, _, spec = v.partition("=")
        methods[name] = json.loads(spec)
    names = (args.methods if args.methods is not None else DEFAULT_METHODS[args.case]) + \
        [v.partition("=")[0] for v in args.variant if v.partition("=")[0] not in (args.methods or [])]
    files = make_case(args.case, Path(args.data), args.dim, args.mm, args.smooth, args.amplitude, args.seed)
    base = baseline_scores(files)
    print(f"case {args.case}: fixed {files['fixed']}  Dice before {base['dice_before']:.3f}"
          + (f", error before {base['err_before_mm']:.2f} mm; exact inverse: Dice {base['dice_ceiling']:.3f}, "
             f"error {base['err_ceiling_mm']:.3f} mm" if "err_before_mm" in base else ""), flush=True)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    rows = []
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = methods[name]
        try:
            if "ants" in spec:
                rec = run_ants(spec, files, Path(args.data) / "work" / args.case, name)
            else:
                rec = run_ours(spec, files, args.preset)
            rec.update(score(files, rec.pop("moving_voxels"), rec.pop("fixed_grid"), rec.pop("moving_grid")))
            rec["failed"] = None
        except Exception as exc:  # noqa: BLE001 - a failed method is a row, not the end of the run
            rec = {"failed": f"{type(exc).__name__}: {exc}", "seconds": None}
        rec.update(case=args.case, method=name, spec=spec, dim=args.dim if args.case != "ct-head" else 2,
                   mm=args.mm, smooth_mm=args.smooth, amplitude_mm=args.amplitude, seed=args.seed,
                   preset=args.preset, threads=args.threads, tag=args.tag, command=command, commit=_commit(),
                   date=time.strftime("%Y-%m-%d %H:%M"), **base)
        rows.append(rec)
        print(f"  {name:24s} Dice {_fmt(rec.get('dice'), '.3f')} ({_fmt(rec.get('dice_big'), '.3f')})  "
              f"err {_fmt(rec.get('err_mean_mm'), '.2f')} mm "
              f"(p95 {_fmt(rec.get('err_p95_mm'), '.2f')})  det<=0 {_fmt(rec.get('folding_voxels'), 'd')} "
              f"cells {_fmt(rec.get('folded_cells'), 'd')}  {_fmt(rec.get('seconds'), '.1f')} s"
              + (f"  FAILED {rec['failed']}" if rec["failed"] else ""), flush=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")
    print()
    print(f"| method | Dice, all {rows[0].get('labels', '')} labels | Dice, labels >= {MIN_LABEL_VOXELS} voxels "
          "| error in brain mask, mean (p95) mm | det J <= 0 voxels | folded cells | s |" if rows else "")
    print("|---|---|---|---|---|---|---|")
    print(f"| (before) | {base['dice_before']:.3f} | {base['dice_big_before']:.3f} | "
          f"{_fmt(base.get('err_before_mm'), '.2f')} | | | |")
    if "dice_ceiling" in base:
        print(f"| (exact inverse) | {base['dice_ceiling']:.3f} | {base['dice_big_ceiling']:.3f} | "
              f"{base['err_ceiling_mm']:.3f} | | | |")
    for r in rows:
        if r["failed"]:
            print(f"| {r['method']} | failed: {r['failed'][:80]} | | | | | |")
            continue
        err = "-" if "err_mean_mm" not in r else f"{r['err_mean_mm']:.2f} ({r['err_p95_mm']:.2f})"
        print(f"| {r['method']} | {r['dice']:.3f} | {r['dice_big']:.3f} | {err} | {r['folding_voxels']} | "
              f"{r['folded_cells']} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
