"""Provenance: versions, device resolution, file hashes and atomic JSON records."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["versions", "resolve_device", "sha256", "write_json_atomic", "device_description"]


def versions() -> dict[str, str]:
    """Versions of the packages that determine a result."""
    import nibabel
    import numpy

    from . import __version__

    out = {
        "rdmm_pipelines": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "nibabel": nibabel.__version__,
        "platform": platform.platform(),
    }
    try:
        import torchdiffeq

        out["torchdiffeq"] = getattr(torchdiffeq, "__version__", "unknown")
    except ImportError:  # pragma: no cover - a hard dependency
        pass
    return out


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> the first CUDA device if available, else the CPU; otherwise validated as given."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def device_description(device: torch.device) -> str:
    """Human-readable description, e.g. 'cpu (2 threads)' or 'cuda:0 (NVIDIA H100)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON via a temporary file and ``os.replace``."""
    from .atomic import write_text_atomic

    return write_text_atomic(path, json.dumps(data, indent=2, default=_default) + "\n")


def _default(obj: Any) -> Any:
    if isinstance(obj, (Path, torch.device)):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__}")
