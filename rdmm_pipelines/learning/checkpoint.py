"""Network checkpoints: the weights with the configuration that built them, read back safely.

A checkpoint is a ``torch.save`` dictionary of plain values and tensors (loaded with
``weights_only=True``, so a checkpoint file cannot run code):

    format: "rdmm_pipelines.network", format_version: 1,
    network: NetworkConfig.to_dict(), training: TrainingConfig.to_dict() or None,
    state_dict, epoch, history (one dict per epoch), versions, device, seed,
    optimizer / scheduler state (for resuming training; optional).

Loading checks, before any weight is used, that the file is such a checkpoint, that its
configuration is valid, that it matches what the caller expects (model, dimension) and that the
weights fit the network the configuration builds, and says which of these failed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_output
from ..config import ConfigError
from ..provenance import versions
from .config import NetworkConfig, TrainingConfig
from .network import RegistrationNetwork

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = "rdmm_pipelines.network"
FORMAT_VERSION = 2
#: version 1 predates the border taper and the composed map (kernel.border, integrator.map_update,
#: max_cfl, max_steps): its networks were trained with the plain kernel, the advected map and fixed
#: steps, and are loaded with those settings
_LEGACY_NUMERICS = {"kernel": {"border": 0.0},
                    "integrator": {"map_update": "advection", "max_cfl": 0.0}}


class CheckpointError(ValueError):
    """A file is not a usable network checkpoint (or not the one the caller asked for)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network (weights loaded, in eval mode) and its record."""

    network: RegistrationNetwork
    path: Path
    epoch: int
    training: TrainingConfig | None
    history: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    path: str | os.PathLike,
    net: RegistrationNetwork,
    *,
    epoch: int,
    training: TrainingConfig | None = None,
    history: list[dict[str, Any]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    device: str = "cpu",
) -> Path:
    """Write ``net`` (and the training state) to ``path`` atomically."""
    data = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "network": net.cfg.to_dict(),
        "training": None if training is None else training.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "epoch": int(epoch),
        "history": list(history or []),
        "versions": {k: str(v) for k, v in versions().items()},
        "device": device,
        "seed": None if training is None else training.seed,
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
    }
    dest = Path(path)
    with atomic_output(dest, suffix=".tmp.pt") as tmp:
        torch.save(data, tmp)
    return dest


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for foreign or damaged files
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {first})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an rdmm_pipelines network checkpoint (no format {FORMAT!r}); "
            "checkpoints come from `rdmm train` or rdmm_pipelines.learning.train")
    version = data.get("format_version")
    if version == 1 and isinstance(data.get("network"), dict):
        data = dict(data, network=_with_legacy_numerics(data["network"]))
        log.warning("%s: a version-1 checkpoint; its network runs with the numerics it was trained with "
                    "(no border taper, advected map, fixed steps)", path)
    elif version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r}; "
                              f"this rdmm_pipelines reads versions 1 and {FORMAT_VERSION}")
    return data


def _with_legacy_numerics(network: dict) -> dict:
    """A version-1 network configuration with the numerics of that version made explicit."""
    out = dict(network)
    for section, values in _LEGACY_NUMERICS.items():
        given = dict(out.get(section) or {})
        out[section] = {**values, **given}
    return out


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: str | None = None,
    ndim: int | None = None,
    device: torch.device | str = "cpu",
) -> Checkpoint:
    """Read a checkpoint and rebuild its network.

    Args:
        model: the shooting model the caller expects ("vsvf", "lddmm", "rdmm"), or None for any.
        ndim: the image dimension the caller will feed (2 or 3), or None.
        device: where the network's weights go.

    Raises:
        CheckpointError: not a checkpoint, damaged, another model or dimension, or weights that do
            not fit the configuration.
    """
    p = Path(path)
    data = _read(p)
    try:
        cfg = NetworkConfig.from_dict(data["network"])
        training = None if data.get("training") is None else TrainingConfig.from_dict(data["training"])
    except (ConfigError, KeyError, TypeError) as err:
        raise CheckpointError(f"{p}: the checkpoint's configuration is invalid: {err}") from None
    if model is not None and cfg.model != model:
        raise CheckpointError(f"{p}: this checkpoint is a {cfg.model} network, not {model}")
    if ndim is not None and cfg.ndim != ndim:
        raise CheckpointError(f"{p}: this checkpoint is a {cfg.ndim}D network ({cfg.image_shape}) but the images are {ndim}D")
    net = RegistrationNetwork(cfg)
    state = data.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{p}: the checkpoint has no weights (state_dict)")
    mine = net.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    wrong = sorted(k for k in set(mine) & set(state) if tuple(mine[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]})" if wrong else ""]
        raise CheckpointError(f"{p}: the weights do not fit the {cfg.model} network of its configuration: "
                              + ", ".join(x for x in parts if x))
    net.load_state_dict(state)
    net.to(device).eval()
    return Checkpoint(network=net, path=p, epoch=int(data.get("epoch", 0)), training=training,
                      history=list(data.get("history") or []), record=data)
