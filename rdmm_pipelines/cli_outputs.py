"""The files of the command line: what is checked before a run writes into ``--out`` (a file,
unwritable, another result, an unfinished run, a concurrent run, free space), the input files
every option names (each read and refused, naming its flag, before any heavy work), and how a
finished result is found again (its displacement field and its record: method, seconds, grids).

Every check raises ValueError (or FileNotFoundError) with a one-line message naming the flag and
the file, before any heavy work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import RegistrationConfig
    from .spatial import Grid

__all__ = ["BASELINE_FIELD_SUFFIX", "LOCK_NAME", "RecordedResult", "check_free_space", "check_input_files",
           "check_label_inputs", "check_output_dir", "field_path", "input_files", "method_of_record",
           "output_lock", "output_names", "prepare_output_dir", "read_config", "read_record", "recorded"]

log = logging.getLogger("rdmm")


def check_output_dir(out: Path) -> None:
    """Refuse, before any work, an --out that is a file or lies in a directory this user cannot
    write to."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} is not writable")


#: held (flock) by the run writing into an --out; released by the kernel if the run is killed
LOCK_NAME = ".rdmm-register.lock"


@contextlib.contextmanager
def output_lock(out: Path):
    """Hold an exclusive lock on --out while a run writes into it: a second run into the same
    folder is refused instead of mixing its files with the first's."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_NAME
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"--out {out}: another rdmm register is writing into it; wait for it or choose "
                             "another --out") from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def prepare_output_dir(out: Path, overwrite: bool = False) -> None:
    """Refuse an --out that holds a result (a registration.json; unless ``overwrite``); remove
    what an unfinished run left there (result files without a record, temporaries)."""
    from .result import holds_result, stale_temporaries

    present = holds_result(out)
    if "registration.json" in present and not overwrite:
        raise ValueError(f"--out {out}: holds a registration result ({', '.join(present[:3])}"
                         f"{', ...' if len(present) > 3 else ''}); give --overwrite to replace it, or another --out")
    if present and "registration.json" not in present:  # no record: the leftovers of an unfinished run
        from .result import clear_result

        log.warning("--out %s: removing the files of an unfinished run (no registration.json): %s", out,
                    ", ".join(present))
        clear_result(out)
    for tmp in stale_temporaries(out):
        tmp.unlink(missing_ok=True)


def check_free_space(out: Path, fixed: str) -> None:
    """Refuse, before any work, an --out whose file system cannot hold the result: about 64 bytes
    per fixed-image voxel uncompressed (warped image, displacement field and composite transform in
    float64, det J, momentum, RDMM maps) plus 2 MB for the QC report."""
    import shutil

    import nibabel as nib

    try:
        voxels = math.prod(int(n) for n in nib.load(fixed).shape[:3])
    except Exception:  # an unreadable fixed image is reported, with its name, by register()
        return
    need = 64 * voxels + (2 << 20)
    existing = out
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < need:
        raise ValueError(f"--out {out}: {free / 2**20:.1f} MB free on its file system, a result needs about "
                         f"{need / 2**20:.0f} MB")


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


def output_names() -> set[str]:
    from .result import OUTPUT_FILES

    return set(OUTPUT_FILES.values())


#: how a baseline's displacement field ends (``{prefix}{method}_displacement.nii.gz``, with its record
#: ``{prefix}{method}.log`` beside it: :mod:`rdmm_pipelines.interfaces.baselines`)
BASELINE_FIELD_SUFFIX = "_displacement.nii.gz"

#: a baseline runner's method (its log's ``method:``) -> the method as the cohort names it
#: (:data:`rdmm_pipelines.workflows.pair.BASELINE_METHODS`)
_BASELINE_NAMES = {"ants-syn": "ants-syn", "sitk-demons-diffeomorphic": "sitk-demons",
                   "sitk-demons-fss": "sitk-demons", "niftyreg-f3d": "niftyreg"}


def _baseline_log(field: Path) -> Path | None:
    """The log (the record) of a baseline's displacement field, None for another file."""
    if not field.name.endswith(BASELINE_FIELD_SUFFIX):
        return None
    return field.with_name(field.name[:-len(BASELINE_FIELD_SUFFIX)] + ".log")


def _baseline_fields(folder: Path) -> list[Path]:
    """The baselines' displacement fields in ``folder`` that have their log beside them."""
    found = []
    for candidate in sorted(folder.glob(f"*{BASELINE_FIELD_SUFFIX}")):
        log = _baseline_log(candidate)
        if candidate.is_file() and log is not None and log.is_file():
            found.append(candidate)
    return found


def field_path(result: str) -> Path:
    """The displacement field of a result directory (or the field file itself): our result's
    (a directory with its registration.json, which is written last), or a baseline's (a
    directory with one ``*_displacement.nii.gz`` and its ``.log``)."""
    from .result import OUTPUT_FILES

    p = Path(result)
    if p.is_dir() and not (p / OUTPUT_FILES["record"]).is_file():
        baselines = _baseline_fields(p)
        if len(baselines) == 1:
            return baselines[0]
        if baselines:
            raise ValueError(f"{p}: holds {len(baselines)} baseline results ({', '.join(f.name for f in baselines)}); "
                             "give the displacement field of one")
        raise ValueError(f"{p}: not a complete result (no {OUTPUT_FILES['record']}, which is written last): "
                         "the registration did not finish")
    field = p / OUTPUT_FILES["displacement"] if p.is_dir() else p
    if not field.is_file():
        raise FileNotFoundError(f"{field}: no displacement field (give a result directory or a field file)")
    return field


@dataclass(frozen=True)
class RecordedResult:
    """What a result's own record says about it (None where it says nothing).

    Attributes:
        method: what was run, named as the cohort names its methods: "rdmm-optimized",
            "rdmm-predefined", "lddmm", "vsvf", "<model>-net" (a trained network), "ants-syn",
            "sitk-demons", "niftyreg".
        seconds: the registration's total time (registration.json's ``timings_seconds.total``, a
            baseline log's "finished in ... s").
        moving_grid: the moving image's grid (the grid the transform maps into).
        source: the record read (a registration.json or a baseline's log); None without one.
        notes: what could not be read from it, in words.
    """

    method: str | None = None
    seconds: float | None = None
    moving_grid: Grid | None = None
    source: Path | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def method_of_record(record: Mapping[str, Any]) -> str | None:
    """The method a ``registration.json`` record says was run, named as the cohort names it
    ("rdmm-optimized", "rdmm-predefined", "lddmm", "vsvf", or "<model>-net" for a trained
    network's prediction); None when the record names no model."""
    config = record.get("config") or {}
    model = config.get("model") if isinstance(config, Mapping) else None
    if not model:
        return None
    inputs = record.get("inputs") or {}
    if isinstance(inputs, Mapping) and (inputs.get("network") is not None or inputs.get("weights") is not None):
        return f"{model}-net"
    if model == "rdmm":
        source = (config.get("regional") or {}).get("source")
        return f"rdmm-{source}" if source in ("predefined", "optimized") else "rdmm"
    return str(model)


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _grid_of_file(path: Any, notes: list[str]) -> Grid | None:
    """The grid of the image file a record names (None, with a note, when it is gone)."""
    from .spatial import load_image

    if not path:
        return None
    try:
        return load_image(str(path)).grid
    except (ValueError, OSError) as err:
        notes.append(f"the moving image it names cannot be read ({' '.join(str(err).split())})")
        return None


def _our_record(path: Path) -> RecordedResult:
    from .spatial import Grid

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return RecordedResult(source=path, notes=(f"{path} cannot be read ({err})",))
    if not isinstance(data, dict):
        return RecordedResult(source=path, notes=(f"{path} is not a registration record",))
    notes: list[str] = []
    moving = (data.get("inputs") or {}).get("moving") or {}
    grid = moving.get("grid")
    if grid:
        moving_grid = Grid(shape=tuple(grid["shape"]), affine=grid["affine"])
    else:  # a network's record names the moving image's file only
        moving_grid = _grid_of_file(moving.get("path"), notes)
    method = method_of_record(data)
    seconds = _seconds((data.get("timings_seconds") or {}).get("total"))
    if method is None:
        notes.append("it names no model")
    if seconds is None:
        notes.append("it has no total time")
    return RecordedResult(method=method, seconds=seconds, moving_grid=moving_grid, source=path, notes=tuple(notes))


def _baseline_record(log: Path) -> RecordedResult:
    """A baseline's log: a header of ``key: value`` lines (method, tool, fixed, moving, ...), a
    blank line, what was run, and ``[<method> finished in <seconds> s]``."""
    try:
        text = log.read_text(errors="replace")
    except OSError as err:
        return RecordedResult(source=log, notes=(f"{log} cannot be read ({err})",))
    header: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, sep, value = line.partition(": ")
        if sep:
            header[key.strip()] = value.strip()
    notes: list[str] = []
    tool_method = header.get("method")
    method = _BASELINE_NAMES.get(tool_method, tool_method) if tool_method else None
    finished = re.search(r"\[(\S+) finished in ([0-9.eE+-]+) s\]", text)
    seconds = _seconds(finished.group(2)) if finished else None
    if method is None:
        notes.append("it names no method")
    if seconds is None:
        notes.append("it has no time (the run did not finish?)")
    moving_grid = _grid_of_file(header.get("moving"), notes)
    return RecordedResult(method=method, seconds=seconds, moving_grid=moving_grid, source=log, notes=tuple(notes))


def read_record(field_file: Path) -> RecordedResult:
    """What the record beside a displacement field says: our ``registration.json``, or a
    baseline's log (``<prefix><method>.log`` beside ``<prefix><method>_displacement.nii.gz``).
    A field without either gives an empty :class:`RecordedResult` with a note."""
    from .result import OUTPUT_FILES

    log = _baseline_log(field_file)
    if log is not None and log.is_file():
        return _baseline_record(log)
    ours = field_file.parent / OUTPUT_FILES["record"]
    if ours.is_file():
        return _our_record(ours)
    return RecordedResult(notes=(f"no {OUTPUT_FILES['record']} (nor a baseline's .log) beside {field_file}",))


def recorded(record: Path) -> tuple[str | None, Grid | None]:
    """The method and the moving image's grid a result's registration.json records (None where
    absent); see :func:`read_record` for everything a record says."""
    found = _our_record(record) if record.is_file() else RecordedResult()
    return found.method, found.moving_grid
