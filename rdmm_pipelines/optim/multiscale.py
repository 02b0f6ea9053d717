"""Multi-scale L-BFGS estimation of the initial momentum (and RDMM pre-weights).

Scales are processed coarse to fine (DESIGN.md 1.4). At each scale the images are resampled to
``round(s * n)`` voxels per axis over the same extent; the momentum and map live at
``map_low_res_factor`` of that (except at the coarsest scale), and the map is upsampled for a
full-resolution similarity. Parameters are carried to the next scale by linear resampling,
values unchanged (the kernels are normalised, so a momentum density keeps its meaning).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import torch
from torch import Tensor

from ..config import RegistrationConfig
from ..core.cells import folded_cell_mask
from ..core.interpolation import resize_field, sample
from ..integrators import ShootingError, ShotInfo, integrate
from ..memory import CheckpointPlanner, saved_storages
from ..metric import inner_product
from ..models.build import build_model
from ..models.shooting import RDMM, ShootingModel
from ..similarity import make_similarity
from .initial import InitialConditions
from .lbfgs import minimize
from .precondition import metric_preconditioner
from .penalties import omt_penalty, penalty_weights, range_penalty
from .preweights import (
    constant_preweights,
    logits_from_preweights,
    preweights_from_logits,
    resize_preweights,
)

__all__ = ["optimize", "OptimizationResult", "IterationRecord", "scale_shapes"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IterationRecord:
    """Energies after one L-BFGS iteration (the named breakdown of the objective).

    ``stage`` (a class attribute, "deformable", not a field: records are saved with
    ``dataclasses.asdict``) tells progress displays which stage of a registration it belongs to
    (:mod:`rdmm_pipelines.progress`)."""

    stage: ClassVar[str] = "deformable"
    scale: float
    iteration: int
    total: float
    similarity: float
    regularity: float
    omt: float
    range: float
    seconds: float


@dataclass
class OptimizationResult:
    """Estimated initial conditions and the shot map, all on the map grid of the finest scale.

    m0: (1, d, *S_map); h0: (1, N, *S_map) or None (vSVF/LDDMM); phi: (1, d, *S_map) map at t = 1;
    spacing: domain spacing of the map grid; history: one record per iteration;
    evaluations: objective + gradient evaluations over all scales; step_difference: max
    |phi_n - phi_2n| in map voxels (the time-discretisation check), None if not applicable;
    shot_steps, shot_cfl: time steps of the final shot and its largest Courant number;
    scales: per scale, its image and map shapes, iterations, evaluations, seconds, why it stopped,
        whether its time steps were checkpointed, what its first evaluation kept for backward and what
        the previous scale predicted it would (MiB).
    """

    m0: Tensor
    h0: Tensor | None
    phi: Tensor
    spacing: tuple[float, ...]
    model: ShootingModel
    history: list[IterationRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    evaluations: int = 0
    step_difference: float | None = None
    shot_steps: int | None = None
    shot_cfl: float | None = None
    scales: list[dict] = field(default_factory=list)


class _IterationTracker:
    """Turns L-BFGS's function evaluations into one record per iteration (its accepted, lowest,
    energy), reports progress, and keeps the best finite parameters."""

    def __init__(self, scale, first_T, t_start, params, history, progress, total_iterations) -> None:
        self.scale, self.first_T, self.t_start = scale, first_T, t_start
        self.params, self.history, self.progress, self.total = params, history, progress, total_iterations
        self.current = 0
        self.best: dict[str, float] | None = None
        self.best_params = [p.detach().clone() for p in params]
        self.best_total = math.inf
        self.best_folds = 0  # folded cells of the best point (optimizer.reject_folds)
        self.iterations = 0
        self.non_finite = False
        self.rejected_folds = 0  # trial points rejected for folding more cells than the best

    def observe(self, n_iter: int, energies: dict[str, Tensor], folds: int = 0) -> None:
        if n_iter != self.current:
            self._emit()
            self.current = n_iter
        values = {k: float(v.detach()) for k, v in energies.items()}
        if not math.isfinite(values["total"]):
            self.non_finite = True
            return
        if self.best is None or values["total"] <= self.best["total"]:
            self.best = values
        if values["total"] < self.best_total:
            self.best_total = values["total"]
            self.best_folds = folds
            self.best_params = [p.detach().clone() for p in self.params]

    def _emit(self) -> None:
        if self.current == 0 or self.best is None:  # the evaluation before the first iteration
            self.best = None
            return
        rec = IterationRecord(scale=self.scale, iteration=self.first_T + self.iterations,
                              seconds=time.perf_counter() - self.t_start, **self.best)
        self.history.append(rec)
        self.iterations += 1
        if self.progress is not None:
            self.progress(rec, self.total)
        self.best = None

    def finish(self) -> None:
        self._emit()
        with torch.no_grad():  # the line search may end on a worse or non-finite point
            for p, good in zip(self.params, self.best_params):
                p.copy_(good)


def _mib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def _shape_at(shape: Sequence[int], factor: float, minimum: int) -> tuple[int, ...]:
    return tuple(n if factor == 1.0 else max(min(minimum, n), int(round(factor * n))) for n in shape)


def _spacing_for(shape: Sequence[int], base_shape: Sequence[int], base_spacing: Sequence[float]) -> tuple[float, ...]:
    return tuple(h * (n0 - 1) / max(n - 1, 1) for h, n, n0 in zip(base_spacing, shape, base_shape))


def scale_shapes(shape: Sequence[int], cfg: RegistrationConfig) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(image shape, map shape) per scale, coarse to fine."""
    o = cfg.optimizer
    out = []
    for k, s in enumerate(o.scales):
        img = _shape_at(shape, s, o.min_map_size)
        low = 1.0 if (k == 0 and len(o.scales) > 1) or o.map_low_res_factor is None else o.map_low_res_factor
        out.append((img, _shape_at(img, low, o.min_map_size)))
    return out


def optimize(
    source: Tensor,
    target: Tensor,
    spacing: Sequence[float],
    cfg: RegistrationConfig,
    h0_fixed: Tensor | None = None,
    sigma_scale: float = 1.0,
    progress: Callable[[IterationRecord, int], None] | None = None,
    target_mask: Tensor | None = None,
    source_mask: Tensor | None = None,
    initial: InitialConditions | None = None,
) -> OptimizationResult:
    """Estimate m0 (and h0) minimising the shooting objective over the scales of ``cfg``.

    Args:
        source: (1, C, *S) moving image resampled onto the target grid (t = 0 content).
        target: (1, C, *S) fixed image.
        spacing: domain spacing of the target grid.
        h0_fixed: (1, N, *S) pre-defined pre-weights (RDMM "predefined"), else None.
        sigma_scale: converts kernel units to domain units (see ``build_model``).
        progress: called after every iteration with the record and the total iteration count.
        target_mask: (1, 1, *S) in [0, 1]: the fixed mask on the target grid, or None.
        source_mask: (1, 1, *S) in [0, 1]: the moving mask resampled like ``source``, or None;
            it is warped with the source. The similarity is weighted by
            ``target_mask * (source_mask o phi^-1)`` (:mod:`rdmm_pipelines.similarity`).
        initial: start from this m0 (and h0) instead of zero momentum and the kernel's constant
            pre-weights, resampled onto the first scale's map grid, with the penalty schedule at
            ``initial.iteration`` (:class:`~rdmm_pipelines.optim.initial.InitialConditions`).

    Returns:
        An :class:`OptimizationResult`.
    """
    shape = tuple(target.shape[2:])
    d = len(shape)
    plan = scale_shapes(shape, cfg)
    total_iterations = sum(cfg.optimizer.iterations)
    optimise_h = cfg.model == "rdmm" and cfg.regional.source == "optimized"
    m0 = z = None
    T = 0
    prev_folds: int | None = None  # folded cells the previous scale ended with (reject_folds)
    if initial is not None:  # resampled onto the first scale's map grid below, as between scales
        m0 = initial.m0.detach().to(dtype=target.dtype, device=target.device).clone()  # never the caller's tensor
        if optimise_h and initial.h0 is not None:
            h_start = initial.h0.to(dtype=target.dtype, device=target.device)
            z = logits_from_preweights(h_start / h_start.norm(dim=1, keepdim=True).clamp_min(1e-12)) / cfg.regional.logit_scale
        T = initial.iteration
    history: list[IterationRecord] = []
    notes: list[str] = []
    gamma: float | None = None  # L-BFGS's inverse-Hessian scale, carried from scale to scale
    gamma_params = 1
    evaluations = 0
    per_scale: list[dict] = []
    t_start = time.perf_counter()
    ic = cfg.integrator
    fixed_steps = ic.method in ("euler", "midpoint", "rk4")  # adaptive solvers are never checkpointed
    planner = CheckpointPlanner(ic.checkpointed if fixed_steps else False, ic.steps, ic.max_cfl or None,
                                target.device)
    finest_h = max(_spacing_for(plan[-1][1], shape, spacing))
    narrowest = min(cfg.kernel.sigmas) * sigma_scale
    if narrowest < 1.5 * finest_h:
        msg = (f"the narrowest Gaussian (sigma {narrowest:.4g}) spans only {narrowest / finest_h:.2g} voxels of the "
               "map grid: velocities that fine are not resolved and the map may fold; use larger sigmas, "
               "sigmas in mm (kernel.units), or a finer map (optimizer.map_low_res_factor)")
        log.warning(msg)
        notes.append(msg)
    for (img_shape, map_shape), s, iters in zip(plan, cfg.optimizer.scales, cfg.optimizer.iterations):
        img_h = _spacing_for(img_shape, shape, spacing)
        map_h = _spacing_for(map_shape, shape, spacing)
        src, tgt = resize_field(source, img_shape), resize_field(target, img_shape)
        tgt_w = None if target_mask is None else resize_field(target_mask, img_shape)
        if source_mask is not None:  # warped in the same sampling as the source (one more channel)
            src = torch.cat([src, resize_field(source_mask, img_shape)], dim=1)
        if iters and any(m is not None and not bool((m > 0).any()) for m in (tgt_w, src[:, -1:] if source_mask is not None else None)):
            msg = (f"scale {s}: the masks leave no voxel at this scale's image size {img_shape} (a mask smaller "
                   "than a few of its voxels): the scale was skipped")
            log.warning(msg)
            notes.append(msg)
            per_scale.append({"scale": s, "image_shape": list(img_shape), "map_shape": list(map_shape),
                              "iterations": 0, "max_iterations": iters, "evaluations": 0, "seconds": 0.0,
                              "stopped": "no voxel inside the masks at this scale", "checkpointed": False,
                              "backward_memory_mib": None, "predicted_backward_memory_mib": None,
                              "rejected_folding_trials": 0, "folded_cells": None, "start_momentum_scaled": 1.0})
            iters = 0
        checkpointed, memory_note = planner.decide(map_shape, img_shape, map_h)
        predicted_mib = _mib(planner.prediction)
        if memory_note is not None:
            log.info(memory_note)
            notes.append(memory_note)
        shoot_opts = dict(ic.options(), checkpointed=checkpointed)
        kept: dict[str, int] = {}  # what this scale's first evaluation kept for backward (not when checkpointed)
        sim = make_similarity(cfg.similarity.name, img_shape, sigma=cfg.similarity.sigma, window=cfg.similarity.window,
                              bins=cfg.similarity.bins)
        model = build_model(cfg, map_h, sigma_scale)
        m0 = (torch.zeros((1, d) + map_shape, dtype=target.dtype, device=target.device) if m0 is None
              else resize_field(m0.detach(), map_shape)).requires_grad_()
        params = [m0]
        h_init = constant_preweights(cfg.kernel.normalized_weights, map_shape, target.dtype, target.device)
        if optimise_h:
            z = (logits_from_preweights(h_init) / cfg.regional.logit_scale if z is None
                 else resize_field(z.detach(), map_shape)).requires_grad_()
            params.append(z)
        h_fix = resize_preweights(h0_fixed, map_shape) if h0_fixed is not None else None

        def preweights() -> Tensor | None:
            if cfg.model != "rdmm":
                return None
            return preweights_from_logits(z * cfg.regional.logit_scale) if optimise_h else h_fix

        def schedule(T_now: int) -> tuple[float, float]:
            """(lambda_Range, lambda_OMT) at iteration T_now."""
            return penalty_weights(T_now, cfg.regional.decay_k, cfg.regional.c_range, cfg.regional.c_omt,
                                   cfg.regional.decay_floor)

        def penalties(h0: Tensor) -> tuple[Tensor, Tensor]:
            """The unweighted OMT and Range penalties of the pre-weights h0."""
            w0 = model.metric.weights(h0, map_h)
            return (omt_penalty(w0, model.metric.sigmas, cfg.regional.omt_power, map_h).sum(),
                    range_penalty(w0, h_init, map_h).sum())

        def objective(T_now: int, shot: ShotInfo | None = None) -> dict[str, Tensor]:
            """The energies ("state1": the shot state too, and its steps in ``shot``, when given)."""
            h0 = preweights()
            state0 = model.initial_state(m0, h0) if isinstance(model, RDMM) else model.initial_state(m0)
            regularity = cfg.regularity_weight * 0.5 * inner_product(m0, model.initial_velocity(state0), map_h).sum()
            state1 = integrate(model, state0, **shoot_opts, info=shot)
            phi_img = resize_field(state1.phi, img_shape)
            if cfg.optimizer.reject_folds:  # before anything else is computed: a rejected trial stops here
                folds = _count_folds(phi_img, img_h)
                if folds > limit["folds"]:
                    raise _Folded(folds)
            warped = sample(src, phi_img, img_h)
            weight = tgt_w
            if source_mask is not None:
                warped, moved_mask = warped[:, :-1], warped[:, -1:]
                moved_mask = moved_mask.detach()  # selects voxels, as ANTs' masks do; not a term to optimise
                weight = moved_mask if weight is None else weight * moved_mask
            similarity = sim(warped, tgt, weight).sum()
            omt = rng = torch.zeros((), dtype=target.dtype, device=target.device)
            if optimise_h:
                lam_range, lam_omt = schedule(T_now)
                raw_omt, raw_range = penalties(h0)
                omt, rng = lam_omt * raw_omt, lam_range * raw_range
            total = similarity + regularity + omt + rng
            out = {"total": total, "similarity": similarity, "regularity": regularity, "omt": omt, "range": rng}
            if cfg.optimizer.reject_folds:
                limit["seen"] = folds
            return out if shot is None else {**out, "state1": state1}

        if iters == 0:
            continue
        tracker = _IterationTracker(s, T, t_start, params, history, progress, total_iterations)
        n_params = sum(p.numel() for p in params)
        if gamma is not None:  # the Hessian of a grid integral scales with the cell volume
            gamma *= n_params / gamma_params

        limit = {"folds": math.inf, "seen": 0}  # reject_folds: the most folded cells a trial may have
        start = {"scaled": 1.0}  # reject_folds: the fraction of the carried momentum this scale starts from

        def start_folds_more() -> bool:
            """The coarser scale's momentum, shot on this finer map, is another discrete flow and can
            fold cells the coarser grid did not have (measured on the start's evaluation)."""
            return (cfg.optimizer.reject_folds and prev_folds is not None and limit["seen"] > prev_folds
                    and start["scaled"] > 0.5 ** START_HALVINGS)

        def evaluate(k: int, _s=s, _iters=iters) -> Tensor:
            # k = 0 for the first evaluation, j during iteration j's line search; the
            # schedule's T follows the iteration.
            where = f"scale {_s} ({map_shape} map), iteration {k} of {_iters}"
            limit["folds"] = math.inf if k == 0 else tracker.best_folds
            try:
                if k == 0 and fixed_steps and not checkpointed:  # what this scale keeps for backward:
                    shot = ShotInfo()                                 # the planner's measure for the next
                    e = objective(tracker.first_T, shot)
                    shooting = saved_storages([x for x in e.pop("state1") if x.grad_fn is not None])
                    rest = sum(b for key, b in saved_storages([e["total"]]).items() if key not in shooting)
                    planner.observe(sum(shooting.values()), rest, shot.steps, shot.max_cfl, map_shape, img_shape,
                                    map_h)
                    kept["bytes"] = sum(shooting.values()) + rest
                else:
                    e = objective(tracker.first_T + max(k - 1, 0))
                if k == 0 and start_folds_more():  # start from the carried momentum halved (L-BFGS
                    with torch.no_grad():             # reads the start after this evaluation)
                        m0.mul_(0.5)
                    start["scaled"] *= 0.5
                    return evaluate(0)
                e["total"].backward()
                finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
                if not finite:
                    raise ShootingError("the gradient is not finite")
            except (ShootingError, _Folded) as err:
                if k == 0:  # the starting point of a scale: nothing to fall back on
                    raise ShootingError(f"{where}: {err}") from None
                log.debug("%s: trial point rejected (%s)", where, err)
                tracker.rejected_folds += isinstance(err, _Folded)
                for p in params:
                    p.grad = None
                return torch.tensor(math.inf, dtype=target.dtype)  # the line search steps back
            tracker.observe(k, e, limit["seen"])
            return e["total"]

        def penalty_shift(k: int) -> float:
            """Change of the objective at the current point when the schedule moves from
            iteration k - 1's T to iteration k's (only the penalties' weights change)."""
            t_new, t_old = tracker.first_T + max(k - 1, 0), tracker.first_T + max(k - 2, 0)
            if not optimise_h or t_new == t_old:
                return 0.0
            (r1, o1), (r0, o0) = schedule(t_new), schedule(t_old)
            with torch.no_grad():
                omt, rng = (float(x) for x in penalties(preweights()))
            return (r1 - r0) * rng + (o1 - o0) * omt

        o = cfg.optimizer
        t_scale = time.perf_counter()
        precond = (metric_preconditioner(map_shape, map_h, model.metric.sigmas, cfg.kernel.normalized_weights,
                                         o.preconditioner_floor, target.dtype, target.device)
                   if o.preconditioner_floor > 0 else None)
        run = minimize(evaluate, params, max_iter=iters, history=o.history, max_evals=iters * o.max_evals,
                       gamma=gamma, shift=penalty_shift, window=o.window, relative_decrease=o.tolerance,
                       relative_gradient=o.gradient_tolerance, precondition=precond)
        per_scale.append({"scale": s, "image_shape": list(img_shape), "map_shape": list(map_shape),
                          "iterations": run.iterations, "max_iterations": iters, "evaluations": run.evaluations,
                          "seconds": time.perf_counter() - t_scale, "stopped": run.reason,
                          "checkpointed": checkpointed, "backward_memory_mib": _mib(kept.get("bytes")),
                          "predicted_backward_memory_mib": predicted_mib,
                          "rejected_folding_trials": tracker.rejected_folds, "folded_cells": tracker.best_folds
                          if cfg.optimizer.reject_folds else None, "start_momentum_scaled": start["scaled"]})
        if start["scaled"] < 1.0:
            log.info("scale %s: the momentum carried from the coarser scale folded cells of this scale's grid; "
                     "it started at %g of it", s, start["scaled"])
        gamma, gamma_params = run.gamma, n_params
        evaluations += run.evaluations
        tracker.finish()
        if tracker.non_finite:
            msg = f"scale {s}: the objective became non-finite; kept the best finite parameters"
            log.warning(msg)
            notes.append(msg)
        T = tracker.first_T + tracker.iterations
        prev_folds = tracker.best_folds
        log.info("scale %s (image %s, map %s): energy %.6g after %d of %d iterations (%s)", s, img_shape,
                 map_shape, history[-1].total if history else float("nan"), run.iterations, iters, run.reason)

    with torch.no_grad():
        h0 = preweights()
        state0 = model.initial_state(m0, h0) if isinstance(model, RDMM) else model.initial_state(m0)
        shot = ShotInfo()
        try:
            state1 = integrate(model, state0, **ic.options(), info=shot)
        except ShootingError as err:
            raise ShootingError(f"final shot at the finest scale ({map_shape} map): {err}") from None
        step_check = (_doubled_step_difference(model, state0, state1.phi, cfg, map_h)
                      if ic.step_check else None)
    if step_check is not None and not step_check <= STEP_CHECK_WARNING:
        msg = (f"shooting with twice the {ic.method} steps moves the map by up to {step_check:.2g} map voxels: "
               "the time discretisation matters (the steps, and with map_update 'composition' the interpolation "
               "of the map at every step); compare integrator.map_update 'characteristics', a lower "
               "integrator.max_cfl, or a finer map (optimizer.map_low_res_factor)")
        log.warning(msg)
        notes.append(msg)
    return OptimizationResult(m0=m0.detach(), h0=None if h0 is None else h0.detach(), phi=state1.phi.detach(),
                              spacing=map_h, model=model, history=history, warnings=notes,
                              evaluations=evaluations, step_difference=step_check,
                              shot_steps=shot.steps or None, shot_cfl=shot.max_cfl or None, scales=per_scale)


#: the smallest corner determinant a cell must keep, as a fraction of its volume, to count as
#: unfolded in the optimiser (reject_folds): room for float32 rounding, so that a map the optimiser
#: passes is not folded when written in voxel units through other headers
FOLD_MARGIN = 1e-3
#: reject_folds: at most this many halvings of the momentum carried to a finer scale
START_HALVINGS = 5


def _count_folds(phi: Tensor, spacing: Sequence[float]) -> int:
    """Folded cells of the map ``phi`` (1, d, *S) on a grid of ``spacing``, with :data:`FOLD_MARGIN`."""
    return int(folded_cell_mask(phi.detach(), margin=FOLD_MARGIN * math.prod(spacing)).sum())


class _Folded(Exception):
    """A trial point whose map folds more cells than the best point so far (optimizer.reject_folds)."""

    def __init__(self, folds: int) -> None:
        super().__init__(f"its map folds {folds} cells, more than the best point so far")


#: map voxels; above this the time-step check warns. Half a map voxel (one image voxel with the
#: map at half resolution): at the defaults the real case set measured 0.0003-0.41 (9 of 60 runs
#: above 0.1; docs/benchmarks.md); 2 Euler steps measure 0.6 on the test pair.
STEP_CHECK_WARNING = 0.5


def _doubled_step_difference(model: ShootingModel, state0, phi: Tensor, cfg: RegistrationConfig,
                             spacing: Sequence[float]) -> float | None:
    """A posteriori check of the time discretisation: max over the map grid of |phi_n - phi_2n|
    in map voxels (Euclidean), the final initial conditions shot with the registration's steps and
    again with twice the minimum steps and half the Courant limit (about one objective
    evaluation). With map_update "composition" both shots follow the characteristics, so that
    the check sees the time error, not the interpolation of the map at every step. For a scheme
    of order p this is about (1 - 2^-p) times the n-step map's time error. None for adaptive
    solvers, or when the finer shot cannot be integrated."""
    ic = cfg.integrator
    if ic.method not in ("euler", "midpoint", "rk4"):
        return None
    coarse_opts, opts = ic.options(), ic.options(steps=2 * ic.steps)
    opts["max_steps"] *= 2
    if opts["max_cfl"] is not None:
        opts["max_cfl"] /= 2
    try:
        if ic.map_update == "composition":
            # the time error alone: both shots along the characteristics, where the map is not
            # interpolated at every step (that spatial error is measured in docs/numerics.md)
            coarse_opts["map_update"] = opts["map_update"] = "characteristics"
            phi = integrate(model, state0, **coarse_opts).phi
        fine = integrate(model, state0, **opts).phi
    except ShootingError as err:
        log.warning("time-step check skipped: %s", err)
        return None
    h = torch.tensor(spacing, dtype=phi.dtype, device=phi.device).view(1, -1, *([1] * len(spacing)))
    return float(((phi - fine) / h).norm(dim=1).max())
