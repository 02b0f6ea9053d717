"""The typed result of a registration: apply it, measure it, save it."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .affine import AffineTransform
from .config import RegistrationConfig
from .core.interpolation import resize_field, sample
from .evaluation import fold_statistics, folded_cells, jacobian_determinant_physical
from .metric import sigma_map
from .models.shooting import RDMM, ShootingModel
from .optim.multiscale import IterationRecord
from .provenance import write_json_atomic
from .spatial import (
    Grid,
    Image,
    domain_map_to_moving_voxels,
    save_image,
    save_itk_displacement_field,
)
from .transforms import DenseTransform, save_result_composite

__all__ = ["RegistrationResult", "OUTPUT_FILES", "QC_FILES", "holds_result", "clear_result", "stale_temporaries"]

log = logging.getLogger(__name__)

#: what :meth:`RegistrationResult.save` writes (RDMM adds the pre-weights and sigma maps)
OUTPUT_FILES = {
    "warped": "warped.nii.gz",
    "displacement": "displacement_itk.nii.gz",
    "composite": "transform_composite.h5",
    "jacobian": "jacobian_det.nii.gz",
    "affine": "affine_itk.txt",
    "momentum": "momentum.nii.gz",
    "preweights": "preweights.nii.gz",
    "sigma_t0": "sigma_t0.nii.gz",
    "sigma_t1": "sigma_t1.nii.gz",
    "record": "registration.json",
}


#: the QC report ``rdmm register`` writes beside a result (before its record)
QC_FILES = ("qc.png", "qc_flicker.svg", "qc.html")


def _result_names() -> tuple[str, ...]:
    return (*OUTPUT_FILES.values(), *QC_FILES)


def holds_result(out_dir: str | Path) -> list[str]:
    """The names of a registration result's files (OUTPUT_FILES and the QC report) present in
    ``out_dir``, record first; empty when there are none."""
    out = Path(out_dir)
    return [n for n in _result_names() if (out / n).exists()] if out.is_dir() else []


def stale_temporaries(out_dir: str | Path) -> list[Path]:
    """Temporary files an interrupted save left in ``out_dir`` (``.<output name>.*`` from
    :func:`~rdmm_pipelines.atomic.atomic_output`)."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    return sorted(p for n in _result_names() for p in out.glob(f".{n}.*") if p.is_file())


def clear_result(out_dir: str | Path) -> list[Path]:
    """Remove a registration result from ``out_dir``: its record first (so that an interruption
    never leaves a record beside a mix of old and new files), then every other file a result
    writes, and temporaries of interrupted saves. Other files are kept. Returns what was removed."""
    out = Path(out_dir)
    removed = []
    for name in (OUTPUT_FILES["record"], *[n for n in _result_names() if n != OUTPUT_FILES["record"]]):
        p = out / name
        if p.is_file():
            p.unlink()
            removed.append(p)
    for p in stale_temporaries(out):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """A registration of ``moving`` (source, I0) to ``fixed`` (target, I1).

    The contract: ``result.apply(moving)`` ~ ``fixed``. The transform is the pull-back map
    phi^-1(1) on the fixed grid: for each fixed voxel, the moving-space point it takes its value
    from (ITK's convention for a fixed-to-moving transform).

    Attributes:
        fixed, moving: the inputs as given (original intensities and grids).
        config: the resolved configuration.
        phi: (1, d, *S_fixed) map in fixed-domain coordinates (see ``spatial.Grid.domain_spacing``).
        map_grid: the grid of the momentum and pre-weights (the fixed grid, possibly coarser).
        map_phi: (1, d, *S_map) the map on that grid.
        m0: (1, d, *S_map) initial momentum (domain units).
        h0: (1, N, *S_map) initial pre-weights (RDMM) or None.
        model: the shooting model on the map grid (its metric carries the sigmas in domain units).
        affine: the affine pre-registration (fixed world -> moving world), composed after phi:
            the full transform is x -> A(phi^-1(x)). None means the identity.
        history: energies per L-BFGS iteration. evaluations: objective + gradient evaluations.
        step_difference: max |phi_n - phi_2n| in map voxels (the time-discretisation check).
        shot_steps, shot_cfl: time steps of the final shot (they follow the flow) and its largest
            Courant number dt max sum_k |v_k| / h_k.
        scales: per scale of the optimiser, its shapes, iterations, evaluations, seconds, why it stopped,
            whether its time steps were checkpointed, what its first evaluation kept for backward and
            what the previous scale predicted it would (MiB), and (``optimizer.reject_folds``) the
            line-search trials rejected for folding and the folded cells of the point kept.
        deterministic: run on one thread with torch's deterministic algorithms (bit-identical reruns).
        timings: seconds per stage. device: the device used. warnings: problems met on the way.
    """

    fixed: Image
    moving: Image
    config: RegistrationConfig
    phi: Tensor
    map_grid: Grid
    map_phi: Tensor
    m0: Tensor
    h0: Tensor | None
    model: ShootingModel
    affine: AffineTransform | None = None
    history: list[IterationRecord] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    inputs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    evaluations: int = 0
    step_difference: float | None = None
    shot_steps: int | None = None
    shot_cfl: float | None = None
    scales: list[dict[str, Any]] = field(default_factory=list)
    deterministic: bool = False

    # ------------------------------------------------------------------ applying
    def moving_voxels(self, grid: Grid | None = None) -> Tensor:
        """(1, d, *S_fixed) voxel indices into ``grid`` (default: the moving grid) per fixed voxel:
        the affine composed with the deformation, M @ [phi; 1]."""
        target = grid or self.moving.grid
        if self.affine is None:
            return domain_map_to_moving_voxels(self.phi, self.fixed.grid, target)
        M = torch.as_tensor(self.affine.domain_matrix(self.fixed.grid, target), dtype=torch.float64)
        d = self.fixed.ndim
        out = torch.einsum("kl,bl...->bk...", M[:d, :d], self.phi.double()) + M[:d, d].view(1, d, *([1] * d))
        return out.to(self.phi.dtype)

    def transform(self) -> DenseTransform:
        """The full fixed-to-moving transform as a :class:`~rdmm_pipelines.transforms.DenseTransform`
        (apply it, invert it, map points, save it)."""
        return DenseTransform.from_result(self)

    def apply(self, image: Image, interpolation: str | None = None) -> Image:
        """Warp an image living in moving space (any grid) onto the fixed grid.

        Args:
            image: (C, *S) image or label map in the moving image's world space.
            interpolation: "linear" or "nearest"; default linear for intensities, nearest for labels.

        Returns:
            (C, *S_fixed) image on the fixed grid, same dtype; zero outside the image.
        """
        return self.transform().apply(image, interpolation)

    def warped(self) -> Image:
        """The moving image warped onto the fixed grid (original intensities)."""
        return self.apply(self.moving)

    # ------------------------------------------------------------------ measuring
    def jacobian_determinant(self) -> Image:
        """det of the Jacobian of the fixed-to-moving transform in physical units, (1, *S_fixed).

        The full determinant (not the product of the diagonal), see
        :func:`rdmm_pipelines.evaluation.jacobian_determinant_physical`.
        """
        det = jacobian_determinant_physical(self.moving_voxels().double(), self.fixed.grid, self.moving.grid)
        return Image(det.float(), self.fixed.grid)

    def fold_statistics(self) -> dict[str, float]:
        """Folds as in the paper, |sum of det J where det J < 0|, with the count and percentage of such
        voxels and the range of det J, and the count and percentage of folded grid cells (the exact
        per-cell corner test, which central differences can miss)
        (:func:`rdmm_pipelines.evaluation.fold_statistics`, :func:`~rdmm_pipelines.evaluation.folded_cells`)."""
        cells = folded_cells(self.moving_voxels().double(), self.fixed.grid, self.moving.grid)
        return fold_statistics(self.jacobian_determinant().data, cells=cells)

    def sigma_maps(self) -> tuple[Image, Image] | None:
        """RDMM's local scale sigma(x) = sqrt(sum_i w_i^2 sigma_i^2) in mm at t = 0 and t = 1.

        Both on the fixed grid (upsampled from the map grid). None for vSVF and LDDMM.
        """
        if not isinstance(self.model, RDMM) or self.h0 is None:
            return None
        h = self.model.spacing
        w0 = self.model.metric.weights(self.h0, h)
        w1 = self.model.metric.weights(sample(self.h0, self.map_phi, h), h)
        mm = self.fixed.grid.domain_scale
        shape = self.fixed.grid.shape
        s0 = resize_field(sigma_map(w0, self.model.metric.sigmas), shape)[0] * mm
        s1 = resize_field(sigma_map(w1, self.model.metric.sigmas), shape)[0] * mm
        return Image(s0.float(), self.fixed.grid), Image(s1.float(), self.fixed.grid)

    def energies(self) -> dict[str, float]:
        """The final named breakdown of the objective (last iteration)."""
        if not self.history:
            return {}
        last = dataclasses.asdict(self.history[-1])
        return {k: last[k] for k in ("total", "similarity", "regularity", "omt", "range")}

    # ------------------------------------------------------------------ saving
    def save(self, out_dir: str | Path, extra: dict[str, Any] | None = None,
             overwrite: bool = False) -> dict[str, Path]:
        """Write every output into ``out_dir`` (each file atomically; the JSON record last).

        Files: warped image, ITK displacement field (LPS, vector NIfTI, applies with ANTs),
        Jacobian determinant, initial momentum and, for RDMM, pre-weights and sigma(x) at t = 0
        and t = 1 (mm), then ``registration.json`` with the configuration, versions, device,
        seed, timings, energies and fold statistics. A directory with a ``registration.json``
        holds a complete result.

        An existing result is never silently replaced: if ``out_dir`` holds any of a result's
        files (:data:`OUTPUT_FILES`), this raises FileExistsError unless ``overwrite``, which
        first removes the whole previous result (:func:`clear_result`, record first), so that
        nothing stale is left beside the new one.

        Returns:
            name -> path of what was written.
        """
        from .provenance import versions

        out = Path(out_dir)
        present = [n for n in OUTPUT_FILES.values() if (out / n).exists()]
        if present and not overwrite:
            raise FileExistsError(f"{out} already holds a registration result ({', '.join(present[:3])}"
                                  f"{', ...' if len(present) > 3 else ''}); save elsewhere or pass overwrite=True")
        if overwrite:
            clear_result(out)
        out.mkdir(parents=True, exist_ok=True)
        record_path = out / OUTPUT_FILES["record"]
        paths: dict[str, Path] = {}
        paths["warped"] = save_image(self.warped(), out / OUTPUT_FILES["warped"])
        paths["composite"] = save_result_composite(out / OUTPUT_FILES["composite"], self)
        paths["displacement"] = save_itk_displacement_field(
            out / OUTPUT_FILES["displacement"], self.fixed.grid, self.moving_voxels(), self.moving.grid)
        paths["jacobian"] = save_image(self.jacobian_determinant(), out / OUTPUT_FILES["jacobian"])
        if self.affine is not None:
            paths["affine"] = self.affine.to_itk_txt(out / OUTPUT_FILES["affine"])
        paths["momentum"] = save_image(Image(self.m0[0].float().cpu(), self.map_grid), out / OUTPUT_FILES["momentum"])
        sig = self.sigma_maps()
        if self.h0 is not None and sig is not None:
            paths["preweights"] = save_image(Image(self.h0[0].float().cpu(), self.map_grid), out / OUTPUT_FILES["preweights"])
            paths["sigma_t0"] = save_image(sig[0].to("cpu"), out / OUTPUT_FILES["sigma_t0"])
            paths["sigma_t1"] = save_image(sig[1].to("cpu"), out / OUTPUT_FILES["sigma_t1"])
        record = {
            "rdmm_pipelines_record": 1,
            "config": self.config.to_dict(),
            "versions": versions(),
            "device": self.device,
            "seed": self.config.seed,
            "deterministic": self.deterministic,
            "inputs": self.inputs,
            "timings_seconds": self.timings,
            "energies": self.energies(),
            "affine_fixed_to_moving_ras": None if self.affine is None else self.affine.to_list(),
            "folds": self.fold_statistics(),
            "iterations": len(self.history),
            "evaluations": self.evaluations,
            "scales": self.scales,
            "kernel_sigmas_mm": [float(x) * self.fixed.grid.domain_scale for x in self.model.metric.sigmas],
            "time_discretisation": {
                "method": self.config.integrator.method, "steps": self.config.integrator.steps,
                "map_update": self.config.integrator.map_update, "max_cfl": self.config.integrator.max_cfl,
                "steps_taken": self.shot_steps, "largest_courant_number": self.shot_cfl,
                "doubled_steps_max_difference_map_voxels": self.step_difference,
            },
            "history": [dataclasses.asdict(r) for r in self.history],
            "warnings": self.warnings,
            "conventions": {
                "displacement": "ITK/ANTs: u(p) = T(p) - p in LPS mm on the fixed grid; T maps fixed to moving points",
                "momentum": "domain units (the fixed image's longest side = 1), channel k = array axis k",
                "sigma": "mm",
            },
            "outputs": {k: p.name for k, p in paths.items()},
        }
        if extra:
            record.update(extra)
        if not all(math.isfinite(v) for v in record["energies"].values()):
            record["warnings"] = [*self.warnings, "final energies are not finite"]
        paths["record"] = write_json_atomic(record_path, record)
        return paths

    def to(self, device: str | torch.device) -> "RegistrationResult":
        """A copy whose tensors live on ``device``."""
        return dataclasses.replace(
            self, phi=self.phi.to(device), map_phi=self.map_phi.to(device), m0=self.m0.to(device),
            h0=None if self.h0 is None else self.h0.to(device))
