"""The shooting numerics that registration relies on (issue: trustworthy numerics).

* the map advanced by composition stays a diffeomorphism where central-difference advection folds;
* time steps follow the flow (Courant number), and a state that cannot be integrated is an error,
  never a NaN map;
* the border taper keeps the kinetic energy with momentum on the border (LDDMM and RDMM);
* the map traced along the characteristics converges in time (second order); the map composed at
  every step stays a diffeomorphism.
"""

import math

import pytest
import torch

from rdmm_pipelines.config import IntegratorConfig, RegistrationConfig
from rdmm_pipelines.core.differences import jacobian_determinant
from rdmm_pipelines.core.taper import border_taper, taper_profile
from rdmm_pipelines.integrators import ShootingError, ShotInfo, integrate
from rdmm_pipelines.metric import MultiGaussianMetric, RegionalMetric
from rdmm_pipelines.models import LDDMM, RDMM, VSVF

D = torch.float64


def grid(n):
    x = torch.linspace(0, 1, n, dtype=D)
    return torch.meshgrid(x, x, indexing="ij")


def colliding_momentum(n, amp):
    """Two blobs pushed into each other: the flow compresses the band between them."""
    X, Y = grid(n)
    b1 = torch.exp(-((X - 0.35) ** 2 + (Y - 0.5) ** 2) / (2 * 0.06**2))
    b2 = torch.exp(-((X - 0.65) ** 2 + (Y - 0.5) ** 2) / (2 * 0.06**2))
    return torch.stack([amp * (b1 - b2), torch.zeros_like(b1)])[None]


def test_composition_does_not_fold_where_advection_does():
    n = 48
    h = (1 / (n - 1),) * 2
    model = LDDMM(MultiGaussianMetric((0.04, 0.08), (0.5, 0.5), border=4), h)
    s0 = model.initial_state(colliding_momentum(n, 0.55))
    dets = {}
    for update in ("advection", "composition"):
        phi = integrate(model, s0, steps=10, max_cfl=1.0, map_update=update).phi
        dets[update] = jacobian_determinant(phi, h)
    assert int((dets["advection"] < 0).sum()) > 20  # the old scheme folds here
    assert float(dets["composition"].min()) > 0.1


def test_vsvf_map_updates_converge_or_stay_diffeomorphic():
    n = 40
    h = (1 / (n - 1),) * 2
    model = VSVF(MultiGaussianMetric((0.06, 0.12), (0.5, 0.5), border=3), h)
    s0 = model.initial_state(colliding_momentum(n, 0.5))
    ref = integrate(model, s0, steps=256, map_update="characteristics").phi
    errs = [float((integrate(model, s0, steps=k, map_update="characteristics").phi - ref).abs().max()) / h[0]
            for k in (8, 16, 32)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[1] / errs[2] > 3.0  # second order in time (4 in the limit)
    assert float(jacobian_determinant(ref, h).min()) > 0
    # composing the map at every step interpolates it every step: its error does not vanish with
    # the step count (the diffusion grows), but it stays a diffeomorphism and close to the flow
    composed = [integrate(model, s0, steps=k).phi for k in (8, 64)]
    for phi in composed:
        assert float(jacobian_determinant(phi, h).min()) > 0
        assert float((phi - ref).abs().max()) / h[0] < 1.0


def test_steps_follow_the_courant_number():
    n = 48
    h = (1 / (n - 1),) * 2
    model = LDDMM(MultiGaussianMetric((0.04, 0.08), (0.5, 0.5), border=4), h)
    s0 = model.initial_state(colliding_momentum(n, 0.7))
    fixed, adaptive = ShotInfo(), ShotInfo()
    integrate(model, s0, steps=5, info=fixed)
    integrate(model, s0, steps=5, max_cfl=1.0, info=adaptive)
    assert fixed.steps == 5 and fixed.max_cfl > 2.0
    assert adaptive.steps > 5 and adaptive.max_cfl <= 1.0 + 0.1  # the speed is re-measured per step
    with pytest.raises(ShootingError, match="max_steps"):
        integrate(model, s0, steps=5, max_cfl=1.0, max_steps=8)


def test_a_step_too_long_for_the_flow_fails_loudly_never_nan():
    n = 48
    h = (1 / (n - 1),) * 2
    model = LDDMM(MultiGaussianMetric((0.04, 0.08), (0.5, 0.5)), h)
    s0 = model.initial_state(colliding_momentum(n, 60.0))  # ~10x the stable Courant number in 4 steps
    with pytest.raises(ShootingError, match="non-finite"):
        integrate(model, s0, steps=4)
    # the same state with steps from the flow: finite, or a clear error about the step count
    try:
        phi = integrate(model, s0, steps=4, max_cfl=1.0, max_steps=2000).phi
        assert bool(torch.isfinite(phi).all())
    except ShootingError as err:
        assert "time steps" in str(err)


def test_registration_config_bounds_the_steps():
    cfg = IntegratorConfig()
    assert cfg.map_update == "composition" and cfg.max_cfl > 0
    assert cfg.options()["max_cfl"] == cfg.max_cfl
    assert IntegratorConfig(max_cfl=0).options()["max_cfl"] is None
    with pytest.raises(ValueError, match="max_steps"):
        IntegratorConfig(steps=10, max_steps=5)
    with pytest.raises(ValueError, match="map_update"):
        IntegratorConfig(map_update="upwind")
    assert RegistrationConfig().kernel.border > 0


def border_momentum(n, ring_amp=0.5):
    X, Y = grid(n)
    b = torch.exp(-((X - 0.5) ** 2 + (Y - 0.5) ** 2) / (2 * 0.1**2))
    ring = torch.zeros(n, n, dtype=D)
    ring[:2], ring[-2:], ring[:, :2], ring[:, -2:] = 1, 1, 1, 1
    g = torch.Generator().manual_seed(0)
    return torch.stack([0.5 * b, 0.2 * b])[None] + ring_amp * ring * torch.randn(1, 2, n, n, generator=g, dtype=D)


def smooth_region_preweights(n):
    X, Y = grid(n)
    inside = torch.sigmoid((0.2**2 - (X - 0.5) ** 2 - (Y - 0.45) ** 2) / 0.04)
    return torch.stack([(0.2 * inside).sqrt(), (0.5 * inside + 0.5 * (1 - inside)).sqrt(),
                        (0.3 * inside + 0.5 * (1 - inside)).sqrt()])[None]


@pytest.mark.parametrize("which", ["lddmm", "rdmm"])
def test_energy_is_kept_with_momentum_on_the_border(which):
    # RDMM's drift has a spatial floor (h(t) is interpolated): 1.7e-3 at 64^2, 6.5e-4 at 128^2
    n, ring = (64, 0.5) if which == "lddmm" else (128, 2.0)
    h = (1 / (n - 1),) * 2
    m0, h0 = border_momentum(n, ring), smooth_region_preweights(n)
    ratios = {}
    for border in (0.0, 4.0):
        if which == "lddmm":
            model = LDDMM(MultiGaussianMetric((0.05, 0.1, 0.15), (0.2, 0.5, 0.3), border=border), h)
            s0 = model.initial_state(m0)
        else:
            model = RDMM(RegionalMetric((0.05, 0.1, 0.15), 0.03, border=border), h)
            s0 = model.initial_state(m0, h0)
        try:
            s1 = integrate(model, s0, steps=10, max_cfl=1.0, max_steps=2000)
            ratios[border] = float(model.energy(s1) / model.energy(s0))
        except ShootingError:  # the energy grew until the velocity could not be followed
            ratios[border] = math.inf
    assert abs(ratios[4.0] - 1) < 1e-3
    assert abs(ratios[0.0] - 1) > 0.1  # one-sided border differences create energy: the test can fail


def test_taper_profile_and_symmetry():
    assert taper_profile(2, 4) == [1.0, 1.0]
    p = taper_profile(21, 4)
    assert p[0] == p[-1] == 0.0 and p[4:17] == [1.0] * 13 and p == p[::-1]
    t = border_taper((9, 12), 3.0, D)
    assert t.shape == (1, 1, 9, 12) and float(t.max()) == 1.0
    # T K T is symmetric: <a, K' b> = <K' a, b>
    metric = MultiGaussianMetric((0.1, 0.2), (0.5, 0.5), border=3)
    h = (0.1, 0.1)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 1, 2, 12, 12, generator=g, dtype=D)
    lhs = (a * metric.velocity(b, h)).sum()
    rhs = (metric.velocity(a, h) * b).sum()
    assert math.isclose(float(lhs), float(rhs), rel_tol=1e-10)
    assert float(metric.velocity(a, h)[..., 0, :].abs().max()) == 0.0  # no motion on the border


def test_optimised_rdmm_regulariser_moves():
    """The optimised pre-weights adapt: sigma(x) at t = 0 spreads across the image (measured on
    this pair: 5th-95th percentile 0.172-0.189, 9 % of the preset's sigma range); with the
    unscaled logits (logit_scale 1) it stays at its start (0.4 %)."""
    from rdmm_pipelines import register
    from rdmm_pipelines.demo import _image, _sigma_percentiles, method_config
    from rdmm_pipelines.synthetic import make_pairs_2d

    pair = make_pairs_2d(1, seed=2018, size=64)[0]
    spreads = {}
    for scale in (1.0, 100.0):
        cfg = method_config("rdmm-optimized", [10, 10, 20], size=64)
        cfg = cfg.replace(regional=cfg.regional.replace(logit_scale=scale))
        res = register(_image(pair.target, pair.spacing), _image(pair.source, pair.spacing), config=cfg, device="cpu")
        p5, p95 = _sigma_percentiles(res)
        spreads[scale] = (p95 - p5) / (max(cfg.kernel.sigmas) - min(cfg.kernel.sigmas))
        assert res.fold_statistics()["folded_cells"] == 0
    assert spreads[100.0] > 0.05
    assert spreads[1.0] < 0.01
