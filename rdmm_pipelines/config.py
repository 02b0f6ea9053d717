"""Registration configuration: frozen dataclasses that reject unknown keys.

Every registration writes its resolved configuration (``RegistrationConfig.to_dict()``) next to its
outputs, so a run can be reproduced with ``RegistrationConfig.from_dict(json.load(...))``.
Units: sigmas are in *domain units* (the target image's longest side has length 1) unless
``KernelConfig.units == "mm"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .config_base import ConfigError, _choice, _Config, _positive

__all__ = [
    "NETWORK_METHODS",
    "REFINED_METHODS",
    "KernelConfig",
    "RegionalConfig",
    "IntegratorConfig",
    "SimilarityConfig",
    "OptimizerConfig",
    "RegistrationConfig",
    "AffineConfig",
    "ConfigError",
    "MODELS",
]

MODELS = ("vsvf", "lddmm", "rdmm")
#: trained networks, named as methods ("rdmm-net") -> the shooting model each drives
NETWORK_METHODS = {f"{m}-net": m for m in MODELS}
#: a network's prediction refined by instance optimisation ("rdmm-net+io") -> its network's method
REFINED_METHODS = {f"{name}+io": name for name in NETWORK_METHODS}
_SIMILARITIES = ("ncc", "lncc", "mk-lncc", "ssd", "mi")
_AFFINE_INITS = ("center_of_mass", "geometric_center", "identity")
_DOFS = ("rigid", "similarity", "affine")


@dataclass(frozen=True)
class KernelConfig(_Config):
    """The multi-Gaussian kernel.

    Attributes:
        sigmas: standard deviations sigma_0 < ... < sigma_{N-1}.
        weights: omega_i = w_i^2 >= 0 summing to 1: the constant weights of vSVF and LDDMM, and
            for RDMM the initial (optimised) pre-weights h0^2 and the Range penalty's target.
        units: "domain" (longest side of the target = 1) or "mm".
        border: width in map voxels of the border taper (the metric is T K T with T = 0 on the
            image border, rising to 1 over this many voxels): the boundary closure that keeps the
            kinetic energy conserved with momentum on the border (docs/numerics.md); 0 disables it.
        min_voxels: the narrowest Gaussian spans at least this many voxels of the finest map
            grid: where ``sigmas[0]`` is narrower, every sigma (and the RDMM smoothing sigmas) is
            multiplied by the same factor, so a coarse image gets a kernel it resolves. The sigmas
            used, in mm, are in registration.json. 0 disables the stretch.

    The defaults (sigma = 1, 2, 4, 8, 16 % of the longest side, equal weights, at least 2 map
    voxels) are chosen on real anatomy: docs/benchmarks.md, "Defaults on real anatomy". The
    paper's knee kernel (5-25 %) is the preset ``knee-optimized``.
    """

    sigmas: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16)
    weights: tuple[float, ...] = (0.2, 0.2, 0.2, 0.2, 0.2)
    units: str = "domain"
    border: float = 4.0
    min_voxels: float = 2.0

    def __post_init__(self) -> None:
        _choice("kernel.units", self.units, ("domain", "mm"))
        _positive("kernel.border", self.border, allow_zero=True)
        _positive("kernel.min_voxels", self.min_voxels, allow_zero=True)
        if not self.sigmas or any(not isinstance(s, (int, float)) or s <= 0 for s in self.sigmas):
            raise ConfigError(f"kernel.sigmas must be positive numbers; got {self.sigmas!r}")
        if list(self.sigmas) != sorted(self.sigmas) or len(set(self.sigmas)) != len(self.sigmas):
            raise ConfigError(f"kernel.sigmas must be strictly increasing; got {self.sigmas!r}")
        if len(self.weights) != len(self.sigmas):
            raise ConfigError(f"kernel.weights has {len(self.weights)} entries for {len(self.sigmas)} sigmas")
        if min(self.weights) < 0 or abs(sum(self.weights) - 1) > 1e-2:
            raise ConfigError(f"kernel.weights must be >= 0 and sum to 1; got {self.weights!r} (sum {sum(self.weights):.4g})")

    @property
    def normalized_weights(self) -> tuple[float, ...]:
        s = sum(self.weights)
        return tuple(w / s for w in self.weights)


@dataclass(frozen=True)
class RegionalConfig(_Config):
    """RDMM's regulariser (ignored by vSVF and LDDMM).

    Attributes:
        source: "predefined" (pre-weights from a region label map, fixed) or "optimized" (jointly
            with the momentum, starting from ``kernel.weights``).
        region_weights: for "predefined": h0^2 per region label, row r for label r (row 0 =
            background). Each row has one entry per Gaussian and sums to 1.
        smoothing_sigma: sigma of G, the pre-weight smoother w = G h (kernel units).
        c_range, c_omt: penalty constants; lambda_T = K / (K + exp(T / K)),
            lambda_Range = c_range * lambda_T, lambda_OMT = c_omt * (1 - lambda_T).
        decay_k: K of the schedule; T is the iteration counted over all scales.
        omt_power: the exponent s of the OMT penalty.
        weight_gradient: "advected" (paper) or "initial" (the authors' code; comparison only).
        region_smoothing_sigma: for "predefined": the pre-weights read from the region map are
            smoothed by a Gaussian of this sigma (kernel units) and renormalised before use, so that
            grad h stays bounded at region borders (0 disables; the authors' code uses 0.02).
        decay_floor: lambda_T never falls below this. 0 (the paper's schedule) by default: the
            authors' code floors it at 0.1, which holds the optimised pre-weights at their start
            (measured: sigma(x) 5th-95th percentile 0.0555-0.0600 against 0.046-0.077 without the
            floor on the synthetic pair; docs/numerics.md).
        logit_scale: "optimized": the optimiser's variable for the pre-weight logits z is z / s
            with s = logit_scale, so L-BFGS (one step scale for all parameters) moves z s^2 times
            further than unscaled; z's gradient is ~1/70 of m0's, so with s = 1 the pre-weights do
            not move (sigma(x) constant to 4 digits; docs/numerics.md).
    """

    source: str = "optimized"
    region_weights: tuple[tuple[float, ...], ...] = ()
    smoothing_sigma: float = 0.05
    c_range: float = 10.0
    c_omt: float = 0.05
    decay_k: float = 10.0
    omt_power: float = 1.0
    weight_gradient: str = "advected"
    region_smoothing_sigma: float = 0.02
    decay_floor: float = 0.0
    logit_scale: float = 100.0

    def __post_init__(self) -> None:
        _choice("regional.source", self.source, ("predefined", "optimized"))
        _positive("regional.decay_floor", self.decay_floor, allow_zero=True)
        _positive("regional.logit_scale", self.logit_scale)
        _choice("regional.weight_gradient", self.weight_gradient, ("advected", "initial"))
        _positive("regional.smoothing_sigma", self.smoothing_sigma)
        for name in ("c_range", "c_omt", "omt_power"):
            _positive(f"regional.{name}", getattr(self, name), allow_zero=True)
        _positive("regional.decay_k", self.decay_k)
        _positive("regional.region_smoothing_sigma", self.region_smoothing_sigma, allow_zero=True)
        for r, row in enumerate(self.region_weights):
            if min(row) < 0 or abs(sum(row) - 1) > 1e-2:
                raise ConfigError(f"regional.region_weights[{r}] must be >= 0 and sum to 1; got {row!r}")


@dataclass(frozen=True)
class IntegratorConfig(_Config):
    """How the shooting ODE is integrated from t = 0 to 1 (see ``integrators.SOLVERS``).

    ``steps``: the minimum number of fixed steps; with ``max_cfl`` > 0 a step is shortened so that
    dt max_x sum_k |v_k| / h_k (map voxels) stays at or below ``max_cfl`` (RK4 on central
    differences is stable up to 2.83); ``max_cfl = 0`` means exactly ``steps`` steps. More than
    ``max_steps`` steps, or a non-finite state, is an error. ``map_update``: "composition" (the map
    composed with each step's departure points: stays diffeomorphic step by step), "characteristics"
    (the final map traced back through the steps' velocities: more accurate, no interpolation of the
    map, but a compression finer than the grid shows as folded cells) or "advection" (central
    differences; folds where the flow compresses; for comparison). Adaptive methods (dopri5, ...)
    advect the map and ignore these four.

    ``checkpointed`` (fixed-step methods): true recomputes each time step in the backward pass
    instead of keeping its stages (about 2.5x less memory for 1.4-1.5x the time); "auto" (the
    default) does so at a scale when what the previous scale's evaluations kept, scaled to this
    one, would exceed 40 % of the free memory (the backward pass's buffers come on top;
    :mod:`rdmm_pipelines.memory`; registration.json records each scale's choice); false never.

    ``step_check`` (fixed-step methods): after the optimisation, shoot the result again with twice
    the steps and record max |phi_n - phi_2n| in map voxels (warning above 0.5); it costs about one
    objective evaluation at the finest scale (3-8 % of a quick registration).
    """

    method: str = "rk4"
    steps: int = 5
    rtol: float = 1e-5
    atol: float = 1e-5
    adjoint: bool = False
    checkpointed: bool | str = "auto"
    step_check: bool = True
    map_update: str = "composition"
    max_cfl: float = 1.0
    max_steps: int = 400

    def __post_init__(self) -> None:
        _choice("integrator.method", self.method, ("euler", "midpoint", "rk4", "dopri5", "bosh3", "adaptive_heun"))
        _choice("integrator.map_update", self.map_update, ("composition", "characteristics", "advection"))
        _positive("integrator.max_cfl", self.max_cfl, allow_zero=True)
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"integrator.steps must be a positive integer; got {self.steps!r}")
        if not isinstance(self.max_steps, int) or self.max_steps < self.steps:
            raise ConfigError(f"integrator.max_steps must be an integer >= integrator.steps; got {self.max_steps!r}")
        if not isinstance(self.step_check, bool):
            raise ConfigError(f"integrator.step_check must be true or false; got {self.step_check!r}")
        if not (isinstance(self.checkpointed, bool) or self.checkpointed == "auto"):
            raise ConfigError(f"integrator.checkpointed must be true, false or \"auto\"; got {self.checkpointed!r}")
        if self.adjoint and self.method in ("euler", "midpoint", "rk4"):
            raise ConfigError("integrator.adjoint needs an adaptive method (dopri5, bosh3, adaptive_heun)")

    def options(self, steps: int | None = None) -> dict[str, Any]:
        """Keyword arguments of ``integrators.integrate`` (``steps`` overrides the minimum; "auto"
        checkpointing is not: the optimiser decides it per scale)."""
        return {"method": self.method, "steps": self.steps if steps is None else steps, "rtol": self.rtol,
                "atol": self.atol, "adjoint": self.adjoint, "checkpointed": self.checkpointed is True,
                "map_update": self.map_update, "max_cfl": self.max_cfl or None,
                "max_steps": max(self.max_steps, 2 * (self.steps if steps is None else steps))}


@dataclass(frozen=True)
class SimilarityConfig(_Config):
    """Image similarity: "ssd", "ncc", "lncc", "mk-lncc" or "mi", divided by sigma^2.

    ``window``: the LNCC window in voxels ("lncc" only; None: the default for the image size).
    ``bins``: histogram bins of "mi" (Mattes mutual information,
    :mod:`rdmm_pipelines.mutual_information`: for multi-modal pairs), an integer >= 4.
    """

    name: str = "mk-lncc"
    sigma: float = 1.0
    window: int | None = None
    bins: int = 32

    def __post_init__(self) -> None:
        _choice("similarity.name", self.name, _SIMILARITIES)
        _positive("similarity.sigma", self.sigma)
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 4:
            raise ConfigError(f"similarity.bins must be an integer >= 4; got {self.bins!r}")


#: the optimiser's "auto" values: iterations per scale, the finest scale's in 3D, the 3D preconditioner floor
AUTO_ITERATIONS, AUTO_FINEST_3D, AUTO_FLOOR_3D = 30, 5, 1e-3


@dataclass(frozen=True)
class OptimizerConfig(_Config):
    """Multi-scale L-BFGS.

    Attributes:
        scales: image scale factors, coarse to fine, ending at 1.0.
        iterations: the most L-BFGS iterations per scale; "auto" (the default) is 30 at every
            scale, except 5 at the finest of a 3D image (:meth:`resolved`).
        window, tolerance, gradient_tolerance: a scale stops early once converged: after
            ``window`` iterations, when the objective fell by less than ``tolerance`` |E| over the
            last ``window`` iterations, or when the largest gradient component is below
            ``gradient_tolerance`` times its value at the scale's start. ``window = 0`` runs every
            iteration. registration.json records each scale's iterations, evaluations and reason.
        map_low_res_factor: momentum and map resolution relative to the image at every scale but
            the coarsest (None: same as the image).
        history: L-BFGS memory. max_evals: function evaluations per iteration (line search).
        min_map_size: no axis of a map or image is resampled below this many voxels.
        preconditioner_floor: eps of L-BFGS's metric preconditioner: the initial inverse Hessian
            is gamma (1 + eps) (K + eps)^-1 on the momentum (K the kernel's mixture, periodic;
            :mod:`rdmm_pipelines.optim.precondition`), so the steps approach the metric's own
            gradient; 0 is plain L-BFGS (H0 = gamma I, the paper's optimiser); "auto" (the
            default) is 0 for 2D images and 1e-3 for 3D ones (docs/benchmarks.md, "The 3D defaults, and huge pages").
        reject_folds: a trial point of the line search whose map (on the image grid of the scale,
            the grid the result is written on at the finest) has more folded cells than the best
            point of the scale so far is rejected like a failed shot (the search steps back).
            The continuous flow is a diffeomorphism; the sampled map can still fold where the
            optimiser drives a compression finer than a cell (docs/numerics.md), and this keeps it
            from getting there. A scale that starts folded keeps at most its starting count.
    """

    scales: tuple[float, ...] = (0.25, 0.5, 1.0)
    iterations: tuple[int, ...] | str = "auto"
    map_low_res_factor: float | None = 0.5
    history: int = 5
    max_evals: int = 5
    min_map_size: int = 8
    window: int = 5
    tolerance: float = 1e-3
    gradient_tolerance: float = 1e-3
    preconditioner_floor: float | str = "auto"
    reject_folds: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.reject_folds, bool):
            raise ConfigError(f"optimizer.reject_folds must be true or false; got {self.reject_folds!r}")
        if isinstance(self.preconditioner_floor, bool) or isinstance(self.preconditioner_floor, str) and self.preconditioner_floor != "auto":
            raise ConfigError(f"optimizer.preconditioner_floor must be a number or \"auto\"; got {self.preconditioner_floor!r}")
        if self.preconditioner_floor != "auto":
            _positive("optimizer.preconditioner_floor", self.preconditioner_floor, allow_zero=True)
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0:
            raise ConfigError(f"optimizer.window must be a non-negative integer (0: no early stop); got {self.window!r}")
        _positive("optimizer.tolerance", self.tolerance, allow_zero=True)
        _positive("optimizer.gradient_tolerance", self.gradient_tolerance, allow_zero=True)
        if not self.scales or list(self.scales) != sorted(self.scales) or self.scales[-1] != 1.0 or min(self.scales) <= 0:
            raise ConfigError(f"optimizer.scales must increase and end at 1.0; got {self.scales!r}")
        if self.iterations != "auto" and (isinstance(self.iterations, str) or len(self.iterations) != len(self.scales)
                                          or any(not isinstance(i, int) or i < 0 for i in self.iterations)):
            raise ConfigError(f"optimizer.iterations needs one non-negative integer per scale, or \"auto\"; got {self.iterations!r}")
        if self.map_low_res_factor is not None and not 0 < self.map_low_res_factor <= 1:
            raise ConfigError(f"optimizer.map_low_res_factor must be in (0, 1] or null; got {self.map_low_res_factor!r}")
        if self.history < 1 or self.max_evals < 1 or self.min_map_size < 4:
            raise ConfigError("optimizer.history and max_evals must be >= 1 and min_map_size >= 4")

    def resolved(self, ndim: int) -> "OptimizerConfig":
        """This configuration with its "auto" values set for ``ndim``-dimensional images: at most
        30 iterations per scale, and on 3D images L-BFGS preconditioned (floor 1e-3) with 5 at
        the finest scale (measured on 3D brains: docs/benchmarks.md, "The 3D defaults, and huge pages")."""
        three_d = ndim >= 3 and len(self.scales) > 1
        iters = (AUTO_ITERATIONS,) * (len(self.scales) - 1) + ((AUTO_FINEST_3D if three_d else AUTO_ITERATIONS),)
        return self.replace(iterations=iters if self.iterations == "auto" else self.iterations,
                            preconditioner_floor=(AUTO_FLOOR_3D if ndim >= 3 else 0.0) if self.preconditioner_floor == "auto"
                            else self.preconditioner_floor)


@dataclass(frozen=True)
class AffineConfig(_Config):
    """Affine pre-registration settings.

    Attributes:
        enabled: run the affine stage (``affine_register`` returns the identity when False).
        scales: image scale factors, strictly increasing, each in (0, 1] (coarse to fine).
        iterations: maximum L-BFGS iterations per scale (0 skips the scale).
        similarity: "ncc" (global normalised cross-correlation over the overlap), "ssd" (mean
            squared difference over the overlap), "mi" (Mattes mutual information over the
            overlap, 32 bins: for multi-modal pairs, :mod:`rdmm_pipelines.mutual_information`),
            "lncc" or "mk-lncc" (local measures of :mod:`rdmm_pipelines.similarity`; prefer them
            only for textured images).
        learning_rate: L-BFGS step scale; 1.0 lets the strong-Wolfe line search pick full
            quasi-Newton steps (parameters are unit-less, see the module docstring).
        init: "center_of_mass" (translation aligning the intensity centroids in world space),
            "geometric_center" (aligning the grid box centres) or "identity".
        dof: "affine" (12 parameters in 3D, 6 in 2D), "similarity" (rotation, isotropic scaling,
            translation) or "rigid" (rotation, translation).
        min_size: no axis of a coarse image is smaller than this many voxels (or its full size).
        max_voxels: no scale's fixed grid has more than about this many voxels (0: no limit); see
            :func:`rdmm_pipelines.affine.pyramid.level_factors`. 2^18 (64^3) leaves 2D images whole
            and takes a 3D brain's affine from 3.1 to 1.0 s at 2 mm, 35 to 6.7 s at 1 mm
            (docs/benchmarks.md).
        percentiles: intensity percentiles (%) mapped to 0 and 1 (then clamped) in both images,
            the paper's (0.1, 99.9) by default. (0, 100) scales without clamping: better for
            sparse images whose fields of view differ a lot, where the 99.9th percentile of each
            image falls on different structures (measured on synthetic blobs: 2-10 voxel errors
            with clamping, 0.2-0.6 without).
    """

    enabled: bool = True
    scales: tuple[float, ...] = (0.25, 0.5, 1.0)
    iterations: tuple[int, ...] = (100, 50, 25)
    similarity: str = "ncc"
    learning_rate: float = 1.0
    init: str = "center_of_mass"
    dof: str = "affine"
    min_size: int = 16
    percentiles: tuple[float, float] = (0.1, 99.9)
    max_voxels: int = 2 ** 18

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"affine.enabled must be true or false; got {self.enabled!r}")
        scales, iters = self.scales, self.iterations
        if isinstance(scales, (int, float)) and not isinstance(scales, bool):
            scales = (float(scales),)
            object.__setattr__(self, "scales", scales)
        if isinstance(iters, int) and not isinstance(iters, bool):
            iters = (iters,)
            object.__setattr__(self, "iterations", iters)
        if (
            not isinstance(scales, tuple)
            or not scales
            or any(isinstance(s, bool) or not isinstance(s, (int, float)) for s in scales)
            or any(not (0 < s <= 1) or not math.isfinite(s) for s in scales)
            or any(b <= a for a, b in zip(scales, scales[1:]))
        ):
            raise ConfigError(
                f"affine.scales must be strictly increasing numbers in (0, 1]; got {self.scales!r}"
            )
        if (
            not isinstance(iters, tuple)
            or len(iters) != len(scales)
            or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in iters)
        ):
            raise ConfigError(
                "affine.iterations needs one non-negative integer per scale "
                f"({len(scales)} scales); got {self.iterations!r}"
            )
        if self.similarity not in _SIMILARITIES:
            raise ConfigError(
                f"affine.similarity must be one of {', '.join(_SIMILARITIES)}; got {self.similarity!r}"
            )
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"affine.learning_rate must be a positive number; got {lr!r}")
        if self.init not in _AFFINE_INITS:
            raise ConfigError(f"affine.init must be one of {', '.join(_AFFINE_INITS)}; got {self.init!r}")
        if self.dof not in _DOFS:
            raise ConfigError(f"affine.dof must be one of {', '.join(_DOFS)}; got {self.dof!r}")
        if isinstance(self.min_size, bool) or not isinstance(self.min_size, int) or self.min_size < 4:
            raise ConfigError(f"affine.min_size must be an integer >= 4; got {self.min_size!r}")
        mv = self.max_voxels
        if isinstance(mv, bool) or not isinstance(mv, int) or mv < 0:
            raise ConfigError(f"affine.max_voxels must be a non-negative integer (0: no limit); got {mv!r}")
        p = self.percentiles
        if (
            not isinstance(p, tuple)
            or len(p) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in p)
            or not 0.0 <= p[0] < p[1] <= 100.0
        ):
            raise ConfigError(
                f"affine.percentiles must be two numbers 0 <= lower < upper <= 100; got {p!r}"
            )

    def num_parameters(self, ndim: int) -> int:
        """Number of estimated parameters for ``ndim``-D images."""
        rot = 1 if ndim == 2 else 3
        return {"affine": ndim * ndim + ndim, "similarity": rot + 1 + ndim, "rigid": rot + ndim}[self.dof]


@dataclass(frozen=True)
class RegistrationConfig(_Config):
    """Everything that defines a registration.

    Objective: E(m0, h0) = regularity_weight * 1/2 <m0, K(h0) m0> + Sim(I0 o phi^-1(1), I1)
    + lambda_OMT OMT(h0) + lambda_Range Range(h0) (the last two for RDMM with optimised pre-weights).

    Attributes:
        model: "vsvf", "lddmm" or "rdmm".
        affine: the affine pre-registration run before the non-parametric model (on by default;
            ``affine.enabled = False`` skips it, e.g. for pre-aligned data).
        normalize_intensity: map the 0.1/99.9 percentiles of each image to 0/1 and clamp.
        regularity_weight: weight of the kinetic energy 1/2 <m0, K m0>.
        seed: seeds torch before the optimisation (results are deterministic on CPU).
    """

    model: str = "rdmm"
    kernel: KernelConfig = field(default_factory=KernelConfig)
    regional: RegionalConfig = field(default_factory=RegionalConfig)
    integrator: IntegratorConfig = field(default_factory=IntegratorConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    affine: AffineConfig = field(default_factory=AffineConfig)
    regularity_weight: float = 20.0
    normalize_intensity: bool = True
    seed: int = 0

    def with_similarity(self, name: str) -> "RegistrationConfig":
        """This configuration with the deformable stage's similarity ``name`` (its other settings
        kept). Mutual information ("mi") is for images of different contrasts (a T2 to a T1): the
        affine stage, whose default NCC assumes the same contrast, then measures MI too; other
        names leave the affine stage as it is. Raises ConfigError for a name not accepted."""
        cfg = self.replace(similarity=self.similarity.replace(name=name))
        if name == "mi" and cfg.affine.similarity != "mi":
            cfg = cfg.replace(affine=cfg.affine.replace(similarity="mi"))
        return cfg

    def __post_init__(self) -> None:
        _choice("model", self.model, MODELS)
        _positive("regularity_weight", self.regularity_weight)
        if self.model == "rdmm" and self.regional.source == "predefined":
            for r, row in enumerate(self.regional.region_weights):
                if len(row) != len(self.kernel.sigmas):
                    raise ConfigError(
                        f"regional.region_weights[{r}] has {len(row)} entries for {len(self.kernel.sigmas)} Gaussians"
                    )
            if not self.regional.region_weights:
                raise ConfigError("a predefined RDMM regulariser needs regional.region_weights (one row per region label)")
