"""The input files of the command line: every file an option names is read and refused, naming
its flag, before any heavy work (images by their header, label maps, masks on their image's grid,
points, configurations, checkpoints), with the consistency checks of ``rdmm register``'s inputs.

Every check raises ValueError (or FileNotFoundError) with a one-line message naming the flag and
the file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import RegistrationConfig


__all__ = ["check_input_files", "check_label_inputs", "input_files", "read_config"]

log = logging.getLogger("rdmm")


def check_label_inputs(args: argparse.Namespace) -> None:
    """--fixed-labels and --moving-labels: both or neither, and readable label maps, checked
    before the registration (not after hours of it). :func:`check_input_files` checks them with
    every other input file."""
    if bool(getattr(args, "fixed_labels", None)) != bool(getattr(args, "moving_labels", None)):
        raise ValueError("give both --fixed-labels and --moving-labels, or neither")
    for flag, path in (("--fixed-labels", args.fixed_labels), ("--moving-labels", args.moving_labels)):
        if path:
            _read_input(flag, str(path), "labels", args)


# ------------------------------------------------------------------ the input files of the options
#: options given together or not at all, per command: (flag, attribute, flag, attribute)
_PAIRED: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "register": (("--fixed-labels", "fixed_labels", "--moving-labels", "moving_labels"),),
    "evaluate": (("--fixed-labels", "fixed_labels", "--moving-labels", "moving_labels"),
                 ("--fixed-points", "fixed_points", "--moving-points", "moving_points")),
}


def input_files(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """The input files the arguments of ``rdmm register``, ``evaluate`` or ``apply`` name.

    Returns:
        (name, path, kind) per file given, in the order they are checked: ``name`` is how an
        error names it (the flag, e.g. "--region-labels", or "fixed image" for an argument), and
        ``kind`` one of "image", "labels", "mask", "affine", "config", "points", "checkpoint".
        Options a parser does not have, or that are not given, are left out.
    """
    command = getattr(args, "command", None)
    if command == "register":
        given = [("fixed image", "fixed", "image"), ("moving image", "moving", "image"),
                 ("--region-labels", "region_labels", "labels"), ("--fixed-labels", "fixed_labels", "labels"),
                 ("--moving-labels", "moving_labels", "labels"), ("--fixed-mask", "fixed_mask", "mask"),
                 ("--moving-mask", "moving_mask", "mask"), ("--affine", "affine", "affine"),
                 ("--config", "config", "config")]
        if (getattr(args, "model", None) or "").endswith("-net"):  # else --weights is refused as such
            given.append(("--weights", "weights", "checkpoint"))
    elif command == "evaluate":
        given = [("--fixed-labels", "fixed_labels", "labels"), ("--moving-labels", "moving_labels", "labels"),
                 ("--fixed-points", "fixed_points", "points"), ("--moving-points", "moving_points", "points")]
    elif command == "apply":
        given = [("image", "image", "labels" if getattr(args, "labels", False) else "image"),
                 ("--reference", "reference", "image")]
    else:
        return []
    return [(name, str(getattr(args, attr)), kind) for name, attr, kind in given if getattr(args, attr, None)]


def check_input_files(args: argparse.Namespace) -> dict[str, Any]:
    """Read every input file the arguments name (:func:`input_files`) before any heavy work, and
    refuse a missing or unreadable one (not NIfTI, not a label map, not an affine, not a
    configuration, not a point file, not a checkpoint) with a one-line error naming its flag:
    ``--region-labels seg.nii: file not found``. Options given together are checked to be given
    together; for ``register``, also what the files must agree on (a pre-defined RDMM
    regulariser has --region-labels on the moving image's grid, with a weight row per label; an
    --affine of the images' dimension; a --fixed-mask / --moving-mask of its image's dimension,
    not empty, overlapping its image).

    Returns:
        name -> what was read: an Image (labels, masks), the image's dimension (images), an
        AffineTransform, a RegistrationConfig, (P, 3) points, or a Checkpoint.
    """
    command = getattr(args, "command", None)
    for first, a, second, b in _PAIRED.get(command, ()):
        if bool(getattr(args, a, None)) != bool(getattr(args, b, None)):
            raise ValueError(f"give both {first} and {second}, or neither")
    loaded = {name: _read_input(name, path, kind, args) for name, path, kind in input_files(args)}
    if command == "register":
        _check_register_inputs(args, loaded)
    return loaded


def read_config(path: str | os.PathLike, flag: str = "--config") -> RegistrationConfig:
    """The RegistrationConfig of a configuration JSON (or of a ``registration.json`` record, whose
    configuration is reused), with one-line errors naming ``flag`` and the file."""
    from .config import RegistrationConfig

    p = Path(path)
    who = f"{flag} {p}" if flag else str(p)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ValueError(f"{who}: file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{who}: is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{who}: not a text file (a configuration is JSON)") from None
    except OSError as err:
        raise ValueError(f"{who}: cannot be read ({err})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{who}: not valid JSON ({err})") from None
    if isinstance(data, dict) and "config" in data and "rdmm_pipelines_record" in data:
        data = data["config"]  # a registration.json record: reuse its configuration
    if not isinstance(data, dict):
        raise ValueError(f"{who}: not a configuration (a JSON object is expected, not a {type(data).__name__})")
    try:
        return RegistrationConfig.from_dict(data)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{who}: {err}") from None


def _image_dimension(path: Path) -> int:
    """Check that ``path`` is a NIfTI image (its header only: the data are read by the command,
    which names the file in any error) and return its spatial dimension, 2 or 3 (the layouts of
    :mod:`rdmm_pipelines.spatial.io`: (X, Y), (X, Y, 1[, C]) are 2D, (X, Y, Z[, C]) 3D)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, OSError, zlib/gzip errors, ...
        raise ValueError(f"{path}: cannot be read as NIfTI ({type(err).__name__}: {err})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path}: is a {type(img).__name__}, not a NIfTI image")
    shape = img.shape
    return 2 if len(shape) == 2 or (len(shape) >= 3 and shape[2] == 1) else 3


def _checkpoint(path: Path, args: argparse.Namespace) -> Any:
    from .learning.checkpoint import load_checkpoint

    model = getattr(args, "model", None) or ""
    return load_checkpoint(path, model=model[:-len("-net")] if model.endswith("-net") else None)


def _readers() -> dict[str, Callable[[Path, argparse.Namespace], Any]]:
    from .affine import AffineTransform
    from .evaluation import read_points
    from .spatial import load_image, load_labels

    return {
        "image": lambda p, args: _image_dimension(p),
        "labels": lambda p, args: load_labels(p),
        "mask": lambda p, args: load_image(p),
        "affine": lambda p, args: AffineTransform.read(p),
        "config": lambda p, args: read_config(p, flag=""),
        "points": lambda p, args: read_points(p),
        "checkpoint": _checkpoint,
    }


def _read_input(name: str, path: str, kind: str, args: argparse.Namespace) -> Any:
    """Read one input file; any failure becomes a ValueError that starts with ``name path``."""
    p = Path(path)
    if not p.exists():  # an argument's file is missing as the library says it, a flag's as the flags say it
        raise ValueError(f"{name} {path}: {'file not found' if name.startswith('-') else 'no such file'}")
    if p.is_dir():
        raise ValueError(f"{name} {path}: is a directory, not a file")
    try:
        return _readers()[kind](p, args)
    except (ValueError, OSError) as err:  # CheckpointError and ConfigError are ValueErrors
        raise _naming(name, path, err) from None


def _naming(name: str, path: str, err: BaseException) -> ValueError:
    """``err`` as one line that starts with ``name path``: the loaders' messages start with the
    file (``"seg.nii: cannot be read as NIfTI (...)"``), which is replaced by the flag and file."""
    text = " ".join(str(err).split())
    for prefix in dict.fromkeys((path, str(Path(path)), str(Path(path).resolve()))):
        if text.startswith(prefix) and text[len(prefix):len(prefix) + 1] in (":", ","):
            return ValueError(f"{name} {path}{text[len(prefix):]}")
    return ValueError(f"{name} {path}: {text}")


def _check_register_inputs(args: argparse.Namespace, loaded: Mapping[str, Any]) -> None:
    """What ``rdmm register``'s input files must agree on, checked before the registration."""
    if getattr(args, "config", None) and getattr(args, "preset", None):
        raise ValueError("give either --config or --preset, not both")
    affine = loaded.get("--affine")
    ndim = loaded.get("fixed image")
    if affine is not None and ndim is not None and affine.ndim != ndim:
        raise ValueError(f"--affine {args.affine}: a {affine.ndim}D transform, but the images are {ndim}D")
    _check_masks(args, loaded)
    if (getattr(args, "model", None) or "").endswith("-net"):
        return  # a network: its own options are checked by the command
    from .registration import resolve_config

    cfg = resolve_config(args.model, loaded.get("--config"), args.preset, args.regularizer)
    if cfg.model != "rdmm" or cfg.regional.source != "predefined":
        return
    if not args.region_labels:
        how = "--regularizer predefined" if args.regularizer else "the pre-defined regulariser of " + (
            "--config" if args.config else "--preset" if args.preset else "the configuration")
        raise ValueError(f"{how} needs --region-labels: a label map of the moving image (its regions)")
    from .spatial import load_image, same_grid

    regions = loaded["--region-labels"]
    try:
        moving = load_image(args.moving).grid
    except (ValueError, OSError) as err:
        raise _naming("moving image", str(args.moving), err) from None
    if not same_grid(regions.grid, moving):
        raise ValueError(f"--region-labels {args.region_labels}: grid {regions.grid} is not the moving image's "
                         f"grid {moving}")
    found = sorted(int(v) for v in regions.data.unique().tolist())
    rows = len(cfg.regional.region_weights)
    if found[0] < 0 or found[-1] >= rows:
        raise ValueError(f"--region-labels {args.region_labels}: labels {found}, but the region weights "
                         f"(regional.region_weights) cover labels 0..{rows - 1}")


def _check_masks(args: argparse.Namespace, loaded: Mapping[str, Any]) -> None:
    """--fixed-mask and --moving-mask checked against their images as the registration checks
    them (:func:`rdmm_pipelines.masks.mask_on_grid`): the images' dimension, one channel, not
    empty, and inside voxels in the image's field of view; errors start with the flag and file."""
    from .masks import mask_on_grid
    from .spatial import load_image

    for flag, attr, which in (("--fixed-mask", "fixed_mask", "fixed"), ("--moving-mask", "moving_mask", "moving")):
        mask = loaded.get(flag)
        if mask is None:
            continue
        image_path = str(getattr(args, which))
        try:
            grid = load_image(image_path).grid
        except (ValueError, OSError) as err:
            raise _naming(f"{which} image", image_path, err) from None
        mask_on_grid(mask, grid, f"{flag} {getattr(args, attr)}:", f"{which} image")
