"""Presets: plain functions returning configurations that reproduce the paper's settings.

Each takes the model name ("vsvf", "lddmm" or "rdmm") and returns a :class:`RegistrationConfig`.
vSVF and LDDMM use the same sigmas with fixed weights w^2 = the preset's h0^2 (DESIGN.md 1.5).
Resolve names through :data:`PRESETS` / :func:`get_preset`.
"""

from __future__ import annotations

from typing import Callable

from .config import (
    AffineConfig,
    IntegratorConfig,
    KernelConfig,
    OptimizerConfig,
    RegionalConfig,
    RegistrationConfig,
)

__all__ = ["PRESETS", "get_preset", "default", "synthetic_predefined", "synthetic_optimized",
           "lung_predefined", "knee_optimized", "brain", "multimodal", "quick", "default_region_weights", "describe",
           "markdown_table"]


#: the brain preset's iterations per scale, coarse to fine, and its L-BFGS preconditioner floor
#: (measured: docs/benchmarks.md, "The brain preset")
BRAIN_ITERATIONS = (30, 30, 5)
BRAIN_PRECONDITIONER_FLOOR = 1e-3

#: histogram bins of the multi-modal preset's mutual information (measured: docs/benchmarks.md)
MULTIMODAL_BINS = 64

#: the paper presets run every iteration with 10 RK4 steps at least (the settings of docs/benchmarks.md)
PAPER_INTEGRATOR = IntegratorConfig(steps=10)


def default(model: str = "rdmm") -> RegistrationConfig:
    """General-purpose defaults, chosen on real anatomy (docs/benchmarks.md): sigma 1-16 % of the
    longest side (at least 2 map voxels), 5 RK4 steps at least, at most 30 iterations per scale
    with the convergence test (3D: L-BFGS preconditioned by the metric and 30/30/5, the brain
    preset's settings); optimised pre-weights for RDMM."""
    return RegistrationConfig(model=model)


def synthetic_predefined(model: str = "rdmm") -> RegistrationConfig:
    """Paper, 2D synthetic, pre-defined regulariser: sigma = {.03,.06,.09,.3}, h0^2 = {.2,.5,.3,0}
    in the foreground region and {0,0,0,1} outside, 60 iterations per scale. The region map is
    smoothed by 0.02 and G_sigma = 0.05, as in the authors' settings file (with G_sigma = 0.02 on
    the raw map, 4x more voxels folded on our benchmark pair)."""
    return RegistrationConfig(
        model=model,
        affine=AffineConfig(enabled=False),  # the paper's synthetic pairs are registered without one
        kernel=KernelConfig(sigmas=(0.03, 0.06, 0.09, 0.3), weights=(0.2, 0.5, 0.3, 0.0)),
        regional=RegionalConfig(source="predefined", region_weights=((0.0, 0.0, 0.0, 1.0), (0.2, 0.5, 0.3, 0.0)),
                                smoothing_sigma=0.05, region_smoothing_sigma=0.02),
        optimizer=OptimizerConfig(iterations=(60, 60, 60), window=0),
        integrator=PAPER_INTEGRATOR,
    )


def synthetic_optimized(model: str = "rdmm") -> RegistrationConfig:
    """Paper, 2D synthetic, optimised regulariser: sigma = {.02,.04,.06,.08}, initial h0^2 =
    {.1,.3,.3,.3}, C_Range = 10, C_OMT = 0.05, K = 10, G_sigma = 0.05, iterations {100,100,400}."""
    return RegistrationConfig(
        model=model,
        affine=AffineConfig(enabled=False),  # the paper's synthetic pairs are registered without one
        kernel=KernelConfig(sigmas=(0.02, 0.04, 0.06, 0.08), weights=(0.1, 0.3, 0.3, 0.3)),
        regional=RegionalConfig(source="optimized", smoothing_sigma=0.05, c_range=10.0, c_omt=0.05, decay_k=10.0),
        optimizer=OptimizerConfig(iterations=(100, 100, 400), window=0),
        integrator=PAPER_INTEGRATOR,
    )


def lung_predefined(model: str = "rdmm") -> RegistrationConfig:
    """Paper, lung CT, pre-defined: sigma = {.04,.06,.08,.2}, h0^2 = {.1,.4,.5,0} in the lung
    (region label 1), {0,0,0,1} outside, G_sigma = 0.05, 60 iterations per scale."""
    return RegistrationConfig(
        model=model,
        kernel=KernelConfig(sigmas=(0.04, 0.06, 0.08, 0.2), weights=(0.1, 0.4, 0.5, 0.0)),
        regional=RegionalConfig(source="predefined", region_weights=((0.0, 0.0, 0.0, 1.0), (0.1, 0.4, 0.5, 0.0)),
                                smoothing_sigma=0.05),
        optimizer=OptimizerConfig(iterations=(60, 60, 60), window=0),
        integrator=PAPER_INTEGRATOR,
    )


def knee_optimized(model: str = "rdmm") -> RegistrationConfig:
    """Paper, knee MRI (OAI), optimised: sigma = {.05,.1,.15,.2,.25}, h0^2 = {1..5}/15,
    C_Range = 1, C_OMT = 0.25, K = 6, G_sigma = 0.06, 60 iterations per scale."""
    return RegistrationConfig(
        model=model,
        kernel=KernelConfig(sigmas=(0.05, 0.1, 0.15, 0.2, 0.25), weights=(0.067, 0.133, 0.2, 0.267, 0.333)),
        regional=RegionalConfig(source="optimized", smoothing_sigma=0.06, c_range=1.0, c_omt=0.25, decay_k=6.0),
        optimizer=OptimizerConfig(iterations=(60, 60, 60), window=0),
        integrator=PAPER_INTEGRATOR,
    )


def brain(model: str = "rdmm") -> RegistrationConfig:
    """3D brain MRI, T1 to T1 or to a template, at 1 or 2 mm: the defaults' kernel, L-BFGS
    preconditioned by the metric (floor 1e-3) and at most 30/30/5 iterations (the finest scale
    costs most; preconditioned, the coarser scales get most of the way). These are the defaults
    for 3D images since 2026-12-07; the preset states them explicitly. On the two 2 mm template
    pairs LDDMM's NCC was above ANTs SyN's at 1.65-1.8x SyN's time, RDMM's at 3.7-4.2x; at 1 mm
    LDDMM at 3.8-4.6x with no folded cell, NCC above SyN's (docs/benchmarks.md, "The 3D
    defaults, and huge pages")."""
    cfg = default(model)
    return cfg.replace(optimizer=cfg.optimizer.replace(iterations=BRAIN_ITERATIONS,
                                                       preconditioner_floor=BRAIN_PRECONDITIONER_FLOOR))


def multimodal(model: str = "rdmm") -> RegistrationConfig:
    """Images of different contrasts (T2, FLAIR or CT to a T1 or a template): the defaults with
    mutual information in the deformable stage (64 bins) and the affine stage (its 32 bins). On real T1 anatomy with a
    non-monotone contrast remap and a known deformation it beat ANTs SyN with MI in 2D and 3D
    (docs/benchmarks.md, "Masks and mutual information")."""
    cfg = default(model).with_similarity("mi")
    return cfg.replace(similarity=cfg.similarity.replace(bins=MULTIMODAL_BINS))


def quick(model: str = "rdmm") -> RegistrationConfig:
    """Few iterations, for demos and smoke tests (not for results): at most 15/15/5 (the finest
    scale at the 3D defaults' 5, so that a quick 3D run is quicker than the defaults)."""
    cfg = default(model)
    return cfg.replace(optimizer=OptimizerConfig(iterations=(15, 15, 5)))


#: preset name -> function(model) -> RegistrationConfig
PRESETS: dict[str, Callable[[str], RegistrationConfig]] = {
    "default": default,
    "synthetic-predefined": synthetic_predefined,
    "synthetic-optimized": synthetic_optimized,
    "lung-predefined": lung_predefined,
    "knee-optimized": knee_optimized,
    "brain": brain,
    "multimodal": multimodal,
    "quick": quick,
}


def get_preset(name: str, model: str = "rdmm") -> RegistrationConfig:
    """The configuration of preset ``name`` for ``model``."""
    try:
        return PRESETS[name](model)
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}") from None


def describe(name: str) -> str:
    """The whole description of preset ``name`` (its docstring, joined into one paragraph)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return " ".join((PRESETS[name].__doc__ or "").split())


def _numbers(values) -> str:
    return " ".join(f"{v:g}" for v in values)


def markdown_table(model: str = "rdmm") -> str:
    """The presets as the README's Markdown table, made from their configurations for ``model``:
    sigmas, RDMM pre-weights, similarity, iterations per scale, time steps and the description."""
    rows = ["| preset | sigmas | pre-weights (RDMM) | similarity | iterations per scale | steps | description |",
            "|---|---|---|---|---|---|---|"]
    for name in PRESETS:
        cfg = PRESETS[name](model)
        k, reg = cfg.kernel, cfg.regional
        sig = _numbers(k.sigmas) + (" mm" if k.units == "mm" else "")
        if k.min_voxels > 0:
            sig += f", at least {k.min_voxels:g} map voxels"
        if reg.source == "predefined":
            weights = "pre-defined: " + "; ".join(f"region {r}: {_numbers(row)}" for r, row in enumerate(reg.region_weights))
        else:
            weights = (f"optimised from {_numbers(k.weights)}; C_Range {reg.c_range:g}, C_OMT {reg.c_omt:g}, "
                       f"K {reg.decay_k:g}")
        weights += f"; G {reg.smoothing_sigma:g}"
        o2, o3 = cfg.optimizer.resolved(2), cfg.optimizer.resolved(3)
        iters = "/".join(str(i) for i in o2.iterations)
        if o3.iterations != o2.iterations:
            iters += " (3D: " + "/".join(str(i) for i in o3.iterations) + ")"
        if cfg.optimizer.window:
            iters += " (stops at convergence)"
        if o2.preconditioner_floor > 0:
            iters += f"; preconditioned (floor {o2.preconditioner_floor:g})"
        elif o3.preconditioner_floor > 0:
            iters += f"; 3D: preconditioned (floor {o3.preconditioner_floor:g})"
        sim = cfg.similarity.name + (f" ({cfg.similarity.bins} bins)" if cfg.similarity.name == "mi" else "")
        sim += f"; affine {cfg.affine.similarity}"
        rows.append(f"| `{name}` | {sig} | {weights} | {sim} | {iters} | {cfg.integrator.steps} | {describe(name)} |")
    return "\n".join(rows) + "\n"


def default_region_weights(kernel: KernelConfig) -> tuple[tuple[float, ...], ...]:
    """Two regions when none are configured: background (label 0) all on the largest Gaussian,
    region 1 on the kernel weights of the other Gaussians (renormalised): small scales inside."""
    n = len(kernel.sigmas)
    inner = list(kernel.weights[:-1]) or [1.0]
    s = sum(inner) or 1.0
    region = tuple(w / s for w in inner) + ((0.0,) if n > 1 else ())
    return (tuple(0.0 for _ in range(n - 1)) + (1.0,), region)
