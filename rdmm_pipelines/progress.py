"""A registration's progress as weighted work, an honest remaining time, and a rough time estimate.

A registration runs *stages* one after the other: the affine levels (``affine.scales``, most
iterations ``affine.iterations``) and the deformable scales (``optimizer.scales`` /
``optimizer.iterations``). Their iterations cost very different times: at the defaults the
finest deformable scale of a 3D image costs 7-30 times more per iteration than the coarsest
(its map has 8 times the voxels, its image 64 times), so counting iterations says "60 %" when
a tenth of the work is done. Here every stage has a *cost per iteration* (:class:`Stage`, from
:func:`plan_stages`): the seconds one iteration takes on one CPU thread, from the stage's grid
sizes and the model, calibrated on measured runs (below). Then

* **fraction done** = work done / work planned, work = iterations x cost; a stage that stops
  early (converged) gives up the rest of its budget: the plan shrinks and the fraction jumps up,
  it never goes back;
* **remaining time** = the remaining work times the *measured* seconds per unit of work (of the
  current stage's last iterations once it has run three, else of the stages of its kind, affine
  or deformable); before anything is measured, the calibrated estimate itself. The plan ends
  with the final shot and the time-step check (a "final" stage, done when ``register`` ends),
  so that the last scale's end does not read 100 %;
* **the estimate before a run** (:func:`estimate_seconds`) = the planned work of the full
  budget times a thread factor, so that ``register`` can say, before a long run, how long it will
  roughly take and what shortens it (:class:`TimeEstimate`).

:class:`RegistrationProgress` does the bookkeeping: pass one as ``register(progress=...)`` and it
calls its ``on_update`` with a :class:`ProgressState` after every iteration of every stage
(the affine stage included). A plain function ``progress(record, total)`` keeps working as
before: it is called after every deformable iteration with the
:class:`~rdmm_pipelines.optim.multiscale.IterationRecord` and the deformable iteration budget.

The calibration (one thread of the 2-core development CPU, torch 2.13, the default
configuration, ``docs/benchmarks.md``): seconds per deformable iteration, measured per scale on
a 160x384 knee slice and a 80x96x112 brain (2 mm), and the totals of a 256x256 head CT and a
160x192x224 brain (1 mm, 2 threads), are fitted within 20 % by ``a_d + b_d W^1.5`` with
``W = d x map voxels x steps / 5 x RK stages / 4 + 0.38 x image voxels`` (an exponent above 1,
plausibly because finer maps take more time steps at the Courant limit and large fields leave
the caches; the two were not separated); vSVF costs 0.4 and RDMM 0.8 per Gaussian in 2D, 0.5 in
3D (4 and 2.5 at the default 5) times LDDMM; n threads take 0.4 + 0.6 / n of one thread's time
(measured: 0.70 for 2 on the 1 mm brain). The 3D overhead a_3 was refitted on 2026-12-07 to the
2 mm brain's per-scale times at the 3D defaults (0.10, 0.12 and 1.2-1.5 s per LDDMM iteration).
The whole-run totals measured: LDDMM 7.8 s on a knee slice, RDMM 30 s, vSVF 2.1 s; at the 3D
defaults LDDMM 16.5 s on the 2 mm brain and 231 s on the 1 mm brain (2 threads), RDMM 39.6 s,
vSVF 7.7 s and 106 s (``tests/test_progress.py`` checks the estimate within a factor of 2 of
each). Other machines,
pairs that need many more time steps, and a busy machine differ: the estimate is a rough guide,
not a promise. On a GPU ``register`` announces nothing (the calibration is a CPU's); the
remaining time there is measured all the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .config import RegistrationConfig

__all__ = [
    "LONG_RUN_SECONDS",
    "ProgressState",
    "RegistrationProgress",
    "Stage",
    "TimeEstimate",
    "estimate_seconds",
    "format_duration",
    "plan_stages",
    "thread_factor",
]

#: a registration estimated to take longer than this (seconds) is announced before it starts
LONG_RUN_SECONDS = 120.0

# ---------------------------------------------------------------- the calibration (see the module docstring)
#: seconds per deformable iteration: overhead a_d (per-operation dispatch on small grids) and b_d W^power
_DEFORMABLE_OVERHEAD = {2: 0.033, 3: 0.08}
_DEFORMABLE_SCALE = {2: 5.8e-9, 3: 2.3e-9}
_DEFORMABLE_POWER = 1.5
#: weight of an image voxel (similarity, warping) against a map voxel x component (shooting)
_IMAGE_WEIGHT = 0.38
#: cost of a model's iteration relative to LDDMM's (RDMM: per Gaussian of its kernel, 2D and 3D)
_VSVF_FACTOR = 0.4
_RDMM_FACTOR_PER_GAUSSIAN = {2: 0.8, 3: 0.5}
#: right-hand-side evaluations per time step (adaptive solvers: counted as RK4 with their minimum steps)
_RK_STAGES = {"euler": 1, "midpoint": 2, "rk4": 4}
#: seconds per affine iteration: overhead and per voxel of the level's fixed grid
_AFFINE_OVERHEAD = {2: 0.003, 3: 0.015}
_AFFINE_PER_VOXEL = {2: 2.0e-8, 3: 1.4e-7}
#: the part of a registration's time that more threads divide (Amdahl); measured 2 threads:
#: 0.70x on the 1 mm brain
_PARALLEL_FRACTION = 0.6

#: the final shot at the finest scale (forward only) and the time-step check (twice the steps,
#: :data:`~rdmm_pipelines.optim.multiscale.STEP_CHECK_WARNING`), in finest-scale iterations
_FINAL_SHOT = 0.4
_STEP_CHECK = 1.6
#: seconds of measurements of one kind of stage before their rate predicts the other kind's
#: (below it the first iterations' fixed costs dominate; the calibration is used instead)
_CROSS_KIND_SECONDS = 5.0

#: iterations of the current stage whose times give its rate
_WINDOW = 10

STAGE_KINDS = ("affine", "deformable", "final")


@dataclass(frozen=True)
class Stage:
    """One stage of a registration's plan.

    Attributes:
        kind: "affine" (a level of the affine pre-registration), "deformable" (a scale of the
            shooting model's optimisation) or "final" (the final shot at the finest scale and the
            time-step check: one "iteration", done when the registration finishes).
        scale: the scale factor of the level or scale (1.0: full resolution).
        iterations: the most iterations it runs (its budget).
        cost: estimated seconds per iteration on one CPU thread (the work weight).
    """

    kind: str
    scale: float
    iterations: int
    cost: float

    @property
    def label(self) -> str:
        """"affine 0.25", "scale 0.5": how progress displays name the stage."""
        if self.kind == "final":
            return "final shot"
        return f"affine {self.scale:g}" if self.kind == "affine" else f"scale {self.scale:g}"

    @property
    def work(self) -> float:
        """Planned work: iterations x cost."""
        return self.iterations * self.cost


def _model_factor(cfg: RegistrationConfig, ndim: int) -> float:
    if cfg.model == "vsvf":
        return _VSVF_FACTOR
    if cfg.model == "rdmm":
        return _RDMM_FACTOR_PER_GAUSSIAN[3 if ndim >= 3 else 2] * len(cfg.kernel.sigmas)
    return 1.0


def _deformable_cost(image_voxels: int, map_voxels: int, ndim: int, cfg: RegistrationConfig) -> float:
    ic = cfg.integrator
    per_step = _RK_STAGES.get(ic.method, 4) / 4.0
    w = ndim * map_voxels * (ic.steps / 5.0) * per_step + _IMAGE_WEIGHT * image_voxels
    d = 3 if ndim >= 3 else 2
    return _model_factor(cfg, ndim) * (_DEFORMABLE_OVERHEAD[d] + _DEFORMABLE_SCALE[d] * w**_DEFORMABLE_POWER)


def _affine_cost(voxels: int, ndim: int) -> float:
    d = 3 if ndim >= 3 else 2
    return _AFFINE_OVERHEAD[d] + _AFFINE_PER_VOXEL[d] * voxels


def plan_stages(shape: Sequence[int], cfg: RegistrationConfig, affine: bool | None = None) -> tuple[Stage, ...]:
    """The stages a registration of a fixed image of ``shape`` runs, in order, with their costs.

    Args:
        shape: the fixed image's grid shape (2 or 3 axes).
        cfg: the registration's configuration.
        affine: whether the affine stage runs (default ``cfg.affine.enabled``; False when an
            affine is given).

    Returns:
        The affine levels, the deformable scales (levels and scales with no iterations left out),
        then the final shot.
    """
    from .affine.pyramid import _coarse_shape, level_factors
    from .optim.multiscale import scale_shapes

    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must have 2 or 3 positive axes; got {shape}")
    d = len(shape)
    cfg = cfg.replace(optimizer=cfg.optimizer.resolved(d))
    stages: list[Stage] = []
    if cfg.affine.enabled if affine is None else affine:
        for factor, iters in zip(level_factors(cfg.affine, shape), cfg.affine.iterations):
            if factor > 0:
                level = _coarse_shape(shape, float(factor), cfg.affine.min_size)
                stages.append(Stage("affine", float(factor), int(iters), _affine_cost(math.prod(level), d)))
    finest = 0.0
    for (img, mp), s, iters in zip(scale_shapes(shape, cfg), cfg.optimizer.scales, cfg.optimizer.iterations):
        finest = _deformable_cost(math.prod(img), math.prod(mp), d, cfg)
        if iters > 0:
            stages.append(Stage("deformable", float(s), int(iters), finest))
    check = cfg.integrator.step_check and cfg.integrator.method in _RK_STAGES
    stages.append(Stage("final", 1.0, 1, finest * (_FINAL_SHOT + (_STEP_CHECK if check else 0.0))))
    return tuple(stages)


def thread_factor(threads: int) -> float:
    """Time on ``threads`` CPU threads relative to one (Amdahl's law with a parallel part of
    :data:`_PARALLEL_FRACTION`; measured 0.70 for 2 threads on a 1 mm brain)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer; got {threads!r}")
    return 1.0 - _PARALLEL_FRACTION + _PARALLEL_FRACTION / threads


def estimate_seconds(shape: Sequence[int], cfg: RegistrationConfig, threads: int = 1,
                     affine: bool | None = None) -> float:
    """A rough estimate of a registration's seconds on a CPU like the development machine's.

    The work of every stage's full budget (:func:`plan_stages`) times :func:`thread_factor`.
    Scales that converge early make a run shorter; pairs that need many time steps, a busy
    machine or a slower CPU make it longer. Pure: no image is read, nothing is run.

    Args:
        shape: the fixed image's grid shape.
        cfg: the registration's configuration.
        threads: CPU threads the registration uses.
        affine: whether the affine stage runs (default ``cfg.affine.enabled``).
    """
    return sum(s.work for s in plan_stages(shape, cfg, affine)) * thread_factor(threads)


def format_duration(seconds: float) -> str:
    """"42 s", "3 min 05 s", "1 h 12 min"."""
    if not math.isfinite(seconds):
        return "?"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


@dataclass(frozen=True)
class TimeEstimate:
    """What ``register`` says before a long run: the estimate and what would shorten it.

    Attributes:
        seconds: the estimate (:func:`estimate_seconds`).
        shape: the fixed image's grid shape.
        model: the shooting model.
        threads: the CPU threads it will use.
        cpus: the CPUs available to the process.
    """

    seconds: float
    shape: tuple[int, ...]
    model: str
    threads: int
    cpus: int

    def is_long(self, threshold: float = LONG_RUN_SECONDS) -> bool:
        """Whether the estimate is above ``threshold`` seconds."""
        return self.seconds > threshold

    def message(self, cli: bool = False) -> str:
        """One line: the estimate, that it is rough, and the options that shorten the run (their
        command-line names with ``cli``, else ``register``'s keywords and configuration fields)."""
        size = "x".join(str(n) for n in self.shape)
        threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        if cli:
            more = f"more --threads (this machine has {self.cpus} CPUs), " if self.threads < self.cpus else ""
            options = (f"--preset quick, fewer --iterations, a coarser --map-resolution, {more}"
                       "or a GPU (--device cuda)")
        else:
            more = f"more threads (threads=, {self.cpus} CPUs here), " if self.threads < self.cpus else ""
            options = ("preset='quick', fewer optimizer.iterations, a coarser map (optimizer.map_low_res_factor), "
                       f"{more}or a GPU (device='cuda')")
        return (f"this {self.model} registration of a {size} image may take about "
                f"{format_duration(self.seconds)} on this CPU ({threads}; a rough estimate from the image size, "
                f"it varies with the machine and the pair); shorter: {options}")


@dataclass(frozen=True)
class ProgressState:
    """A registration's progress after an iteration, as :class:`RegistrationProgress` reports it.

    Attributes:
        stage: the stage running (the last one once finished).
        stage_index: its position in the plan (0-based); ``stages``: how many the plan has.
        stage_iteration: iterations done in this stage.
        fraction: weighted work done / work planned, in [0, 1] (1 when finished).
        elapsed: seconds since the registration started its stages.
        remaining: estimated seconds left (None when nothing can be said yet).
        record: the iteration's record (an affine or deformable one, with ``stage`` and ``scale``
            and its loss ``total``); None for the final state.
        finished: whether the registration is done.
    """

    stage: Stage
    stage_index: int
    stages: int
    stage_iteration: int
    fraction: float
    elapsed: float
    remaining: float | None
    record: Any = None
    finished: bool = False

    def describe(self) -> str:
        """One line, e.g. ``scale 0.5 (it 12/30): 34 %, 1 min 02 s elapsed, about 2 min 10 s left``."""
        left = "" if self.remaining is None else f", about {format_duration(self.remaining)} left"
        return (f"{self.stage.label} (it {self.stage_iteration}/{self.stage.iterations}): "
                f"{100 * self.fraction:.0f} %, {format_duration(self.elapsed)} elapsed{left}")


def _record_kind(record: Any) -> str:
    kind = getattr(record, "stage", None)
    if kind in STAGE_KINDS:
        return kind
    return "deformable" if hasattr(record, "similarity") else "affine"


class RegistrationProgress:
    """Weighted progress and remaining time of one registration; pass it as ``register(progress=...)``.

    ``register`` calls :meth:`start` with the plan once the inputs are checked, the object itself
    (``progress(record, total)``, the plain callback's signature) after every affine and
    deformable iteration, and :meth:`finish` at the end. Each call to the object passes a
    :class:`ProgressState` to ``on_update``. A record is matched to the next stage of the plan
    with its kind and scale; the stages it skips (a level that stopped before an iteration) and
    the stage it leaves (one that stopped early) are closed with the iterations they ran.

    Args:
        on_update: receives the state after every iteration (and once more, finished).
        on_long_run: receives the :class:`TimeEstimate` when ``register`` estimates a run longer
            than :data:`LONG_RUN_SECONDS` (before it starts); without it ``register`` logs the
            estimate as a warning.
        clock: the time source (seconds), for tests.
    """

    def __init__(self, on_update: Callable[[ProgressState], None] | None = None,
                 on_long_run: Callable[[TimeEstimate], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.on_update = on_update
        self.on_long_run = on_long_run
        self.clock = clock
        self.stages: tuple[Stage, ...] = ()
        self.estimate: float | None = None
        self.state: ProgressState | None = None
        self._done: list[int] = []
        self._closed: list[bool] = []
        self._first: list[float | None] = []
        self._recent: list[list[float]] = []
        self._last: list[float | None] = []
        self._current = -1
        self._t0 = 0.0
        self._t_last = 0.0

    # ------------------------------------------------------------ the protocol register() follows
    def start(self, stages: Sequence[Stage], estimate: float | None = None) -> None:
        """Begin with the plan (:func:`plan_stages`) and, optionally, the estimated seconds of the
        whole plan on this machine (the remaining time before anything is measured)."""
        self.stages = tuple(stages)
        self.estimate = estimate
        n = len(self.stages)
        self._done, self._closed = [0] * n, [False] * n
        self._first, self._last = [None] * n, [None] * n
        self._recent = [[] for _ in range(n)]
        self._current = -1
        self._t0 = self._t_last = self.clock()
        self.state = None

    def __call__(self, record: Any, total: int | None = None) -> None:
        """One iteration done (the plain ``progress(record, total)`` signature; ``total`` unused)."""
        now = self.clock()
        i = self._stage_of(record)
        if i is None:  # not in the plan (no start(), or an unplanned stage): count nothing
            return
        if i != self._current:
            for j in range(max(self._current, 0), i):
                self._closed[j] = True  # stopped early (or never ran): its budget is given up
            self._first[i] = now
            self._current = i
        self._done[i] += 1
        if self._done[i] > self.stages[i].iterations:  # more than its budget: grow the plan
            s = self.stages[i]
            self.stages = (*self.stages[:i], Stage(s.kind, s.scale, self._done[i], s.cost), *self.stages[i + 1:])
        self._last[i] = now
        self._recent[i] = [*self._recent[i][-_WINDOW:], now]
        self._t_last = now
        self._emit(record, finished=False)

    def finish(self) -> None:
        """The registration is done: every stage closed, fraction 1."""
        if not self.stages:
            return
        self._closed = [True] * len(self.stages)
        self._t_last = self.clock()
        if self.stages[-1].kind == "final":
            self._current = len(self.stages) - 1
            self._done[-1] = max(self._done[-1], 1)
        self._emit(self.state.record if self.state else None, finished=True)

    # ------------------------------------------------------------ the numbers
    @property
    def fraction(self) -> float:
        """Weighted work done / work planned (planned: the budget of the open stages, the
        iterations run of the closed ones)."""
        planned = sum(s.cost * (d if c else max(d, s.iterations))
                      for s, d, c in zip(self.stages, self._done, self._closed))
        done = sum(s.cost * d for s, d in zip(self.stages, self._done))
        if planned <= 0:
            return 1.0 if all(self._closed) and self.stages else 0.0
        return min(1.0, done / planned)

    def _rate(self, kind: str) -> float | None:
        """Seconds per unit of work for the stages of ``kind`` still to run, measured from each
        stage's first iteration on (the first carries the stage's set-up, and the first stage
        the process's warm-up): the current stage's over its last :data:`_WINDOW` iterations
        once it has run three, else what the stages of that kind measured, else (with at least
        :data:`_CROSS_KIND_SECONDS` measured) the other stages', else the calibrated
        estimate's, else whatever was measured. The final shot goes at the deformable rate."""
        kind = "deformable" if kind == "final" else kind
        cur = self._current
        if cur >= 0 and self.stages[cur].kind == kind and self._done[cur] >= 3:
            recent = self._recent[cur]  # its last iterations: the first ones search longer lines
            return (recent[-1] - recent[0]) / ((len(recent) - 1) * self.stages[cur].cost)
        spent = {k: 0.0 for k in STAGE_KINDS}
        work = {k: 0.0 for k in STAGE_KINDS}
        for k, s in enumerate(self.stages):
            if self._done[k] >= 2:
                spent[s.kind] += self._span(k)
                work[s.kind] += (self._done[k] - 1) * s.cost
        if work[kind] > 0:
            return spent[kind] / work[kind]
        measured, total = sum(spent.values()), sum(work.values())
        if total > 0 and measured >= _CROSS_KIND_SECONDS:
            return measured / total
        if self.estimate is not None:
            planned = sum(s.work for s in self.stages)
            if planned > 0:
                return self.estimate / planned
        if total > 0:
            return measured / total
        done = sum(s.cost * d for s, d in zip(self.stages, self._done))
        return (self._t_last - self._t0) / done if done > 0 else None

    def _span(self, k: int) -> float:
        """Seconds from stage ``k``'s first iteration to its last."""
        first, last = self._first[k], self._last[k]
        return 0.0 if first is None or last is None else max(last - first, 0.0)

    def remaining(self) -> float | None:
        """Estimated seconds left: the work left in every open stage times the measured rate of
        its kind (None before anything was measured, without an estimate)."""
        left = 0.0
        for kind in STAGE_KINDS:
            work = sum(s.cost * max(s.iterations - d, 0)
                       for s, d, c in zip(self.stages, self._done, self._closed) if s.kind == kind and not c)
            if work > 0:
                rate = self._rate(kind)
                if rate is None:
                    return None
                left += work * rate
        return left

    def _stage_of(self, record: Any) -> int | None:
        kind, scale = _record_kind(record), float(getattr(record, "scale", math.nan))
        start = max(self._current, 0)
        for k in range(start, len(self.stages)):
            s = self.stages[k]
            if s.kind != kind or not math.isclose(s.scale, scale):
                continue
            if k == self._current and k + 1 < len(self.stages) and self._done[k] >= s.iterations:
                nxt = self.stages[k + 1]  # a repeated scale: the budget of this one is spent
                if nxt.kind == kind and math.isclose(nxt.scale, scale):
                    continue
            return k
        return None

    def _emit(self, record: Any, finished: bool) -> None:
        i = self._current if self._current >= 0 else (len(self.stages) - 1 if finished else 0)
        self.state = ProgressState(
            stage=self.stages[i], stage_index=i, stages=len(self.stages), stage_iteration=self._done[i],
            fraction=1.0 if finished else self.fraction, elapsed=self._t_last - self._t0,
            remaining=0.0 if finished else self.remaining(), record=record, finished=finished)
        if self.on_update is not None:
            self.on_update(self.state)
