"""Learnt registration as pydra tasks: ``TrainNetwork`` and ``NetworkRegistration``.

``NetworkRegistration`` gives the same outputs as :class:`~.register.RdmmRegistration` (so a
pair workflow treats a trained network as one more method: "vsvf-net", "lddmm-net", "rdmm-net",
and "vsvf-net+io", "lddmm-net+io", "rdmm-net+io": the prediction refined by instance
optimisation); ``TrainNetwork`` trains a network on a manifest's pairs and outputs its best
checkpoint.
"""

import math
import os
import typing as ty
from pathlib import Path

from fileformats.application import Json
from fileformats.generic import File

from rdmm_pipelines.config import MODELS
from rdmm_pipelines.config import NETWORK_METHODS as _NETWORKS
from rdmm_pipelines.config import REFINED_METHODS

from ._pydra import Outputs, Task, arg, define
from .common import (
    NiftiImage,
    check_device,
    check_nifti,
    check_retry,
    check_subject_id,
    check_threads,
    task_device,
    thread_limits,
)
from .register import RdmmRegistration, guarded_registration, save_registration

__all__ = ["NETWORK_METHODS", "REFINED_METHODS", "NetworkRegistration", "TrainNetwork", "network_register_pair",
           "train_network"]

#: method name -> the shooting model the network drives ("<model>-net" and "<model>-net+io")
NETWORK_METHODS = {**_NETWORKS, **{refined: _NETWORKS[net] for refined, net in REFINED_METHODS.items()}}


def _refine_settings(refine: bool, method: str, refine_scales: int, refine_iterations: int):
    """The ``refine`` of :func:`~rdmm_pipelines.learning.register_with_network`: a RefineConfig
    when ``refine`` is set or the method is a "+io" one, else False."""
    if not (refine or method in REFINED_METHODS):
        return False
    from rdmm_pipelines.learning.refine import RefineConfig

    return RefineConfig(scales=refine_scales, iterations=refine_iterations)


def _check_refine_value(_instance: ty.Any, attribute: ty.Any, value: ty.Any) -> None:
    """attrs validator of ``refine_scales`` / ``refine_iterations`` (RefineConfig's own check)."""
    from rdmm_pipelines.learning.refine import refine_value_problem

    problem = refine_value_problem(attribute.name.removeprefix("refine_"), value)
    if problem:
        raise ValueError(f"{attribute.name} {problem}")


def _check_weights(_instance: ty.Any, attribute: ty.Any, value: ty.Any) -> None:
    """Refuse, when the task is built, a checkpoint that is missing or not a network checkpoint."""
    if value is None or type(value).__name__ == "_Nothing" or not isinstance(value, (str, os.PathLike, File)):
        return
    from rdmm_pipelines.learning import load_checkpoint

    load_checkpoint(os.fspath(value))


def network_register_pair(fixed, moving, weights, *, subject_id: str, method: str = "rdmm-net",
                          resample: bool = False, device: str = "auto", threads: int = 0,
                          out_dir: os.PathLike | str | None = None, refine: bool = False,
                          refine_scales: int = 1, refine_iterations: int = 30) -> dict[str, ty.Any]:
    """Register ``moving`` to ``fixed`` with the trained network in ``weights``; outputs as
    :func:`~.register.register_pair` (named ``{subject_id}_{method}_...``).

    With ``refine``, or a "+io" ``method``, the prediction is refined by instance optimisation
    (:class:`~rdmm_pipelines.learning.refine.RefineConfig` of ``refine_scales`` and
    ``refine_iterations``) on ``threads`` threads."""
    from rdmm_pipelines.learning import register_with_network

    if method not in NETWORK_METHODS:
        raise ValueError(f"unknown network method {method!r}; choose one of {', '.join(NETWORK_METHODS)}")
    settings = _refine_settings(refine, method, refine_scales, refine_iterations)
    with thread_limits(threads):
        dev = task_device(device)
        result = register_with_network(os.fspath(fixed), os.fspath(moving), os.fspath(weights),
                                       model=NETWORK_METHODS[method], resample=resample, device=dev,
                                       refine=settings)
        return save_registration(result, subject_id, method, dev, out_dir)


def _run_network_registration(fixed, moving, weights, subject_id, method, resample, device, threads, retry=0,
                              refine=False, refine_scales=1, refine_iterations=30):
    return guarded_registration(
        lambda: network_register_pair(fixed, moving, weights, subject_id=subject_id, method=method,
                                      resample=resample, device=device, threads=threads, refine=refine,
                                      refine_scales=refine_scales, refine_iterations=refine_iterations),
        subject_id, method, "NetworkRegistration")


@define
class NetworkRegistration(Task["NetworkRegistration.Outputs"]):
    """Register a moving image to a fixed image with a trained network (one forward pass),
    optionally refined by instance optimisation.

    A network takes no masks and no similarity choice: it has no input for them (the cohort's
    mask columns are not passed to it), since its forward pass does not measure a similarity
    (its refinement measures the network's own similarity, on the whole image).

    Args:
        fixed: target image (NIfTI); every output lies on its grid.
        moving: source image (NIfTI), taken onto the fixed grid through the headers.
        weights: a checkpoint from ``rdmm train`` / :class:`TrainNetwork` (checked when the task is built).
        subject_id: pair identifier used in output file names.
        method: "vsvf-net", "lddmm-net" or "rdmm-net", or "vsvf-net+io", "lddmm-net+io",
            "rdmm-net+io" (refined, whatever ``refine`` says); a checkpoint of another model is refused.
        resample: accept images whose size differs from the network's input size.
        device: "auto", "cpu", "cuda" or "cuda:N", resolved when the task runs.
        threads: CPU threads for torch while the task runs; 0 = all CPUs available to it.
        retry: attempt number (another value gives another cache hash, so a failure runs again).
        refine: refine the prediction by instance optimisation: the default L-BFGS, with its
            convergence test, on the network's own objective, started from the prediction
            (always done for a "+io" method; registration.json records it under ``inputs.refine``).
        refine_scales: refine on this many of the default schedule's finest scales (1: full resolution only).
        refine_iterations: the most L-BFGS iterations per refined scale.
    """

    requires_gpu = True

    fixed: NiftiImage = arg(validator=check_nifti)
    moving: NiftiImage = arg(validator=check_nifti)
    weights: File = arg(validator=_check_weights)
    subject_id: str = arg(validator=check_subject_id)
    method: str = arg(default="rdmm-net", allowed_values=list(NETWORK_METHODS))
    resample: bool = False
    device: str = arg(default="auto", validator=check_device)
    threads: int = arg(default=0, validator=check_threads)
    retry: int = arg(default=0, validator=check_retry)
    refine: bool = False
    refine_scales: int = arg(default=1, validator=_check_refine_value)
    refine_iterations: int = arg(default=30, validator=_check_refine_value)

    class Outputs(RdmmRegistration.Outputs):
        """The outputs of :class:`~.register.RdmmRegistration` (warped, displacement, composite,
        jacobian, record, result_dir, sigma maps for RDMM, device_used, seconds, status, message,
        subject_id, method)."""

    function = staticmethod(_run_network_registration)


def train_network(manifest, *, model: str = "rdmm", preset: str = "synthetic-optimized",
                  config_json=None, epochs: int = 20, batch_size: int = 1, learning_rate: float = 1e-3,
                  val_fraction: float = 0.2, seed: int = 0, resample: bool = False, device: str = "auto",
                  threads: int = 0, out_dir: os.PathLike | str | None = None) -> dict[str, ty.Any]:
    """Train a network on a manifest's pairs into ``out_dir`` (default ``./training``); returns the
    best checkpoint, the record, the curves and the last validation Dice."""
    import json

    import nibabel as nib
    from rdmm_pipelines.workflows.manifest import read_manifest

    from rdmm_pipelines.learning import NetworkConfig, TrainingConfig, train
    from rdmm_pipelines.learning.setup import load_pairs, network_from_preset

    specs = read_manifest(os.fspath(manifest))
    rows = [{"id": p.id, "fixed": p.fixed, "moving": p.moving, "fixed_labels": p.fixed_labels,
             "moving_labels": p.moving_labels} for p in specs]
    if config_json is not None:
        cfg = NetworkConfig.from_dict(json.loads(Path(os.fspath(config_json)).read_text()))
    else:
        shape = tuple(int(n) for n in nib.load(str(rows[0]["fixed"])).shape[:3] if n > 1)
        cfg = network_from_preset(model, shape, preset)
    out = Path(out_dir) if out_dir is not None else Path.cwd() / "training"
    with thread_limits(threads):
        run = train(cfg, TrainingConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                        validation_fraction=val_fraction, seed=seed),
                    load_pairs(rows, cfg.image_shape, resample=resample), out, device=task_device(device),
                    progress=False)
    last = run.history[-1] if run.history else {}
    return {"checkpoint": run.checkpoint, "record": out / "training.json", "curves": out / "curves.png",
            "val_dice": float(last.get("val_dice", math.nan))}


@define
class TrainNetwork(Task["TrainNetwork.Outputs"]):
    """Train a registration network (unsupervised) on the pairs of a manifest.

    Args:
        manifest: CSV/TSV manifest (id, fixed, moving[, fixed_labels, moving_labels]); all images
            of the network's input size (the first fixed image's, unless ``config_json`` says) or
            ``resample``.
        model: "vsvf", "lddmm" or "rdmm".
        preset: registration preset giving the kernel, similarity and regulariser.
        config_json: a NetworkConfig as JSON instead of model/preset.
        epochs: passes over the training pairs.
        batch_size: pairs per optimiser step.
        learning_rate: Adam's step size.
        val_fraction: share of the pairs held out for validation.
        seed: seeds the initialisation and the order of the pairs.
        resample: resize images of another size to the network's input size.
        device: "auto", "cpu", "cuda" or "cuda:N", resolved when the task runs.
        threads: CPU threads for torch while the task runs; 0 = all CPUs available to it.
    """

    requires_gpu = True

    manifest: File
    model: str = arg(default="rdmm", allowed_values=list(MODELS))
    preset: str = "synthetic-optimized"
    config_json: Json | None = None
    epochs: int = 20
    batch_size: int = 1
    learning_rate: float = 1e-3
    val_fraction: float = 0.2
    seed: int = 0
    resample: bool = False
    device: str = arg(default="auto", validator=check_device)
    threads: int = arg(default=0, validator=check_threads)

    class Outputs(Outputs):
        """
        Args:
            checkpoint: the best checkpoint (lowest validation loss), for NetworkRegistration.
            record: training.json (configurations, versions, device, seed, history).
            curves: curves.png (loss and validation Dice per epoch).
            val_dice: the last epoch's mean validation Dice (NaN without validation labels).
        """

        checkpoint: File
        record: Json
        curves: File
        val_dice: float

    function = staticmethod(train_network)
