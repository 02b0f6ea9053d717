"""pydra tasks and nipype interfaces for rdmm_pipelines, installed as ``rdmm_pipelines.interfaces``.

This layer wraps the library (``rdmm_pipelines``) for workflow engines; the library never imports
it. One pydra task per stage (pydra 1.0 python tasks, files typed with fileformats, so inputs are
validated when a task is built and hashed by content):

==========================  ===============================================  ==============
task                        stage                                            module
==========================  ===============================================  ==============
``NormalizeIntensity``      percentiles to [0, 1]                            ``.normalize``
``AffineRegistration``      affine pre-registration -> ITK .txt + warped     ``.affine``
``RdmmRegistration``        vSVF / LDDMM / RDMM registration (GPU-capable)   ``.register``
``ApplyTransform``          warp an image or labels with a displacement      ``.apply``
``Evaluate``                Dice, folds, TRE -> JSON record + CSV row        ``.evaluate``
``VisualReport``            QC figure (PNG) + HTML page                      ``.report``
``TrainNetwork``            train a registration network on a manifest       ``.learnt``
``NetworkRegistration``     registration by a trained network (GPU-capable)  ``.learnt``
``AntsSyN``,                baselines with RdmmRegistration's output shape   ``.baseline_tasks``
``SimpleITKDemons``,
``NiftyRegF3D``
==========================  ===============================================  ==============

nipype 1.x interfaces ``RdmmRegister``, ``RdmmApply`` and ``RdmmEvaluate`` are in ``.nipype``.
Conventions shared by all tasks (device "auto" resolved when the task runs, ``threads``,
per-subject output names, ``status``/``message`` instead of exceptions for a failing pair) are
described in :mod:`.common`; every pydra call goes through :mod:`._pydra`.

Each task class has a ``requires_gpu`` attribute for schedulers. Example::

    from rdmm_pipelines.interfaces import RdmmRegistration, run

    task = RdmmRegistration(fixed="f.nii.gz", moving="m.nii.gz", subject_id="sub-01", model="rdmm",
                            regularizer="optimized")
    outputs = run(task, cache_root="cache", worker="cf", n_procs=2)
    outputs.status, outputs.warped, outputs.device_used

Importing this package is cheap: the tasks (and pydra, nipype) are imported on first use.
"""

from __future__ import annotations

import importlib
import typing as ty

#: public name -> submodule that defines it
_EXPORTS = {
    "NormalizeIntensity": "normalize",
    "AffineRegistration": "affine",
    "RdmmRegistration": "register",
    "TrainNetwork": "learnt",
    "NetworkRegistration": "learnt",
    "ApplyTransform": "apply",
    "Evaluate": "evaluate",
    "VisualReport": "report",
    "AntsSyN": "baseline_tasks",
    "SimpleITKDemons": "baseline_tasks",
    "NiftyRegF3D": "baseline_tasks",
    "RdmmRegister": "nipype",
    "RdmmApply": "nipype",
    "RdmmEvaluate": "nipype",
    "run": "_pydra",
    "TaskError": "_pydra",
}

#: the pydra task classes, by name (for schedulers reading ``requires_gpu``)
TASKS = tuple(name for name, module in _EXPORTS.items() if module not in ("nipype", "_pydra"))

__all__ = [*_EXPORTS, "TASKS"]


def __getattr__(name: str) -> ty.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
