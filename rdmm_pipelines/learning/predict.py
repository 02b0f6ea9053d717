"""Registration by a trained network: one forward pass instead of an optimisation.

:func:`register_with_network` returns the same :class:`~rdmm_pipelines.RegistrationResult` as
:func:`~rdmm_pipelines.register` (``apply()``, ``save()``, the ITK outputs, det J, RDMM's sigma
maps), with the network's affine (if it has one) as the result's affine and its deformation as the
map. With ``refine`` the prediction starts the optimisation of :func:`~rdmm_pipelines.register`
on the finest scales (instance optimisation, :mod:`rdmm_pipelines.learning.refine`).
"""

from __future__ import annotations

import dataclasses
import os
import time

import torch

from ..affine import AffineTransform
from ..config import AffineConfig, OptimizerConfig
from ..optim.initial import InitialConditions
from ..core.interpolation import resize_field
from ..provenance import device_description, resolve_device, sha256
from ..registration import ImageLike, _describe, as_image
from ..result import RegistrationResult
from .affine_net import affine_to_world
from .checkpoint import Checkpoint, load_checkpoint
from .data import prepare_pair
from .network import RegistrationNetwork
from .refine import RefineConfig, refine_config

__all__ = ["NetworkLike", "register_with_network"]

NetworkLike = Checkpoint | RegistrationNetwork | str | os.PathLike


def register_with_network(
    fixed: ImageLike,
    moving: ImageLike,
    weights: NetworkLike,
    *,
    model: str | None = None,
    resample: bool = False,
    device: str | torch.device = "auto",
    refine: RefineConfig | bool = False,
    threads: int | None = None,
    progress=None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` with a trained network.

    Args:
        fixed, moving: images (Image, NIfTI path or (C, *S) tensor); the moving image is taken onto
            the fixed grid through the headers, as for training.
        weights: a checkpoint file (from ``rdmm train``), a loaded :class:`Checkpoint`, or a network.
        model: the shooting model expected ("vsvf", "lddmm", "rdmm"); a checkpoint of another is refused.
        resample: allow a fixed image whose size differs from the network's input size (resized to
            it, the result returned on the fixed grid); without it such images are refused.
        device: "auto", "cpu", "cuda" or "cuda:N".
        refine: False (the prediction as it is), True (the default :class:`RefineConfig`: the
            finest scale, at most 30 iterations) or a :class:`RefineConfig`: instance optimisation
            from the prediction, as :func:`~rdmm_pipelines.register` with its ``threads`` and
            ``progress``; the record names the network and the refinement.
        threads, progress: as for :func:`~rdmm_pipelines.register` (the refinement only).

    Returns:
        A :class:`RegistrationResult` on the fixed grid (on the CPU).
    """
    t0 = time.perf_counter()
    fixed_img, moving_img = as_image(fixed, "fixed image"), as_image(moving, "moving image")
    if fixed_img.ndim != moving_img.ndim:
        raise ValueError(f"fixed image is {fixed_img.ndim}D but moving image is {moving_img.ndim}D")
    if refine is True:
        refine = RefineConfig()
    elif refine is not False and not isinstance(refine, RefineConfig):
        raise TypeError(f"refine must be True, False or a RefineConfig; got {type(refine).__name__}")
    dev = resolve_device(device)
    if isinstance(weights, RegistrationNetwork):
        net, source_record = weights, None
    else:
        ckpt = weights if isinstance(weights, Checkpoint) else load_checkpoint(
            weights, model=model, ndim=fixed_img.ndim, device=dev)
        net = ckpt.network
        source_record = {"path": str(ckpt.path.resolve()), "sha256": sha256(ckpt.path), "epoch": ckpt.epoch}
    net = net.to(dev).eval()
    cfg = net.cfg
    if model is not None and cfg.model != model:
        raise ValueError(f"this is a {cfg.model} network, not {model}")
    if cfg.ndim != fixed_img.ndim:
        raise ValueError(f"this is a {cfg.ndim}D network ({cfg.image_shape}) but the images are {fixed_img.ndim}D")
    if refine:
        refine_cfg, first_iteration = refine_config(net, refine)  # refuses a network it cannot refine, before work
    pair = prepare_pair(fixed_img, moving_img, cfg.image_shape, resample=resample)
    notes = []
    if tuple(fixed_img.grid.shape) != cfg.image_shape:
        notes.append(f"images resized from {fixed_img.grid.shape} to the network's {cfg.image_shape} and back")
    t_prep = time.perf_counter()
    with torch.no_grad():
        pred = net(pair.source[None].to(dev), pair.target[None].to(dev), pair.spacing)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t_net = time.perf_counter()
    grid = fixed_img.grid
    last = pred.steps[-1]
    reg_cfg = net.registration_config.replace(
        affine=AffineConfig(enabled=False), optimizer=OptimizerConfig(iterations=(0, 0, 0)))
    inputs = {"fixed": _describe(fixed), "moving": _describe(moving), "region_labels": None, "affine": None,
              "weights": source_record,
              "network": cfg.to_dict()}
    affine = None if pred.affine is None else affine_to_world(pred.affine[0], grid)
    if refine:
        from ..registration import register  # the optimisation, started from the prediction

        start = InitialConditions(m0=last.m0.detach().cpu(), h0=None if last.h0 is None else last.h0.detach().cpu(),
                                  iteration=first_iteration,
                                  source=f"network {source_record['path'] if source_record else '(in memory)'}")
        refined = register(fixed_img, moving_img, config=refine_cfg,
                           affine=affine if affine is not None else AffineTransform.identity(fixed_img.ndim),
                           device=dev, threads=threads, progress=progress, initial=start)
        timings = {**refined.timings, "network": t_net - t_prep, "preprocess": t_prep - t0 + refined.timings.get("preprocess", 0.0),
                   "total": time.perf_counter() - t0}
        return dataclasses.replace(
            refined, timings=timings, warnings=notes + list(refined.warnings),
            inputs={**refined.inputs, "weights": source_record, "network": cfg.to_dict(),
                    "refine": refine.to_dict()})
    return RegistrationResult(
        fixed=fixed_img, moving=moving_img, config=reg_cfg,
        phi=resize_field(pred.phi, grid.shape).cpu(), map_grid=grid.resized(cfg.map_shape), map_phi=pred.map_phi.cpu(),
        m0=last.m0.cpu(), h0=None if last.h0 is None else last.h0.cpu(), model=net.shooting_model(pair.spacing),
        affine=affine,
        timings={"preprocess": t_prep - t0, "network": t_net - t_prep, "total": time.perf_counter() - t0},
        device=device_description(dev), inputs=inputs, warnings=notes)
