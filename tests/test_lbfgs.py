"""The L-BFGS minimiser: convergence on known problems, agreement with torch, the carried curvature."""

import math

import torch

from rdmm_pipelines.optim.lbfgs import minimize

D = torch.float64


def _counting(fn, x):
    calls = []

    def evaluate(k):
        calls.append(k)
        f = fn(x)
        f.backward()
        return f

    return evaluate, calls


def rosenbrock(x):
    return (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()


def test_reaches_the_rosenbrock_minimum():
    x = torch.full((10,), -1.0, dtype=D, requires_grad=True)
    evaluate, calls = _counting(rosenbrock, x)
    r = minimize(evaluate, [x], max_iter=500, history=10, max_evals=5000, grad_tolerance=1e-9)
    assert torch.allclose(x.detach(), torch.ones(10, dtype=D), atol=1e-6)
    assert r.evaluations == len(calls) < 200 and r.reason == "gradient below tolerance"
    assert calls[0] == 0 and calls[-1] == r.iterations  # k = the iteration being searched


def test_matches_torch_lbfgs_on_an_ill_scaled_quadratic():
    """Grid-integral-like scaling (curvatures 1e-6..1e-3): same minimum as torch's LBFGS."""
    gen = torch.Generator().manual_seed(0)
    a = torch.logspace(-6, -3, 500, dtype=D)
    b = torch.randn(500, generator=gen, dtype=D) * 1e-6

    def quad(x):
        return 0.5 * (a * x * x).sum() - (b * x).sum()

    x = torch.zeros(500, dtype=D, requires_grad=True)
    minimize(_counting(quad, x)[0], [x], max_iter=40, history=5)
    y = torch.zeros(500, dtype=D, requires_grad=True)
    opt = torch.optim.LBFGS([y], max_iter=40, history_size=5, line_search_fn="strong_wolfe",
                            tolerance_grad=0, tolerance_change=0)

    def closure():
        opt.zero_grad()
        f = quad(y)
        f.backward()
        return f

    opt.step(closure)
    best = float(-0.5 * (b * b / a).sum())
    mine, theirs = float(quad(x.detach())), float(quad(y.detach()))
    assert mine <= theirs + 1e-3 * abs(best)
    assert mine < 0.97 * best  # negative: most of the way down


def test_a_carried_curvature_saves_the_first_line_search():
    """Seeded with the inverse-Hessian scale of the same problem, the first step is a full
    quasi-Newton step: one evaluation per iteration, where the unseeded start must extrapolate."""
    a = torch.tensor([2e-5, 3e-5, 5e-5], dtype=D)

    def quad(x):
        return 0.5 * (a * (x - 1) ** 2).sum()

    x = torch.zeros(3, dtype=D, requires_grad=True)
    ev, cold = _counting(quad, x)
    first = minimize(ev, [x], max_iter=1)
    assert len(cold) >= 3  # the first step min(1, 1/|g|_1) along -g is far too short
    x2 = torch.zeros(3, dtype=D, requires_grad=True)
    ev2, warm = _counting(quad, x2)
    second = minimize(ev2, [x2], max_iter=1, gamma=1.0 / 3e-5)
    assert len(warm) == 2 and second.loss < first.loss
    assert first.gamma is not None and 1 / 5e-5 <= first.gamma <= 1 / 2e-5


def test_steps_back_from_non_finite_values_and_stops_cleanly():
    """An objective that is inf beyond a wall: the search backtracks inside; a start that is
    already non-finite is reported, not stepped from."""

    def walled(x):
        f = ((x - 3) ** 2).sum()
        return f if float(x.detach().max()) < 2.0 else f * math.inf

    x = torch.zeros(2, dtype=D, requires_grad=True)
    r = minimize(_counting(walled, x)[0], [x], max_iter=20, gamma=10.0)
    assert math.isfinite(r.loss) and float(x.detach().max()) < 2.0 and r.loss < 18.0
    y = torch.full((2,), 5.0, dtype=D, requires_grad=True)
    r = minimize(_counting(walled, y)[0], [y], max_iter=5)
    assert r.iterations == 0 and "non-finite" in r.reason and torch.equal(y.detach(), torch.full((2,), 5.0, dtype=D))


def test_several_parameter_tensors_move_together():
    m = torch.zeros(2, 3, dtype=D, requires_grad=True)
    z = torch.zeros(4, dtype=D, requires_grad=True)

    def evaluate(k):
        f = ((m - 2) ** 2).sum() + ((z + 1) ** 2).sum() + (m.sum() * z.sum()) * 0.01
        f.backward()
        return f

    r = minimize(evaluate, [m, z], max_iter=50, grad_tolerance=1e-10)
    assert r.reason == "gradient below tolerance"
    assert abs(float(m.detach().mean()) - 2) < 0.1 and abs(float(z.detach().mean()) + 1) < 0.1


def test_a_schedule_shift_keeps_the_line_search_honest():
    """An objective whose penalty weight changes every iteration (as RDMM's Range/OMT schedule
    does): without the shift the sufficient-decrease test compares two different functions and
    the search fails as soon as the schedule's change exceeds the decrease; with it, it goes on."""
    a = torch.tensor([1e-3, 2e-3], dtype=D)

    def weight(k):
        return 1e-3 * max(k - 1, 0)  # grows by 1e-3 per iteration

    def run(with_shift):
        x = torch.zeros(2, dtype=D, requires_grad=True)

        def evaluate(k):
            f = (a * (x - 1) ** 2).sum() + weight(k) * (x * x).sum()
            f.backward()
            return f

        def shift(k):
            return (weight(k) - weight(k - 1)) * float((x.detach() ** 2).sum())

        return minimize(evaluate, [x], max_iter=30, gamma=300.0, shift=shift if with_shift else None)

    honest, naive = run(True), run(False)
    assert honest.iterations >= 20  # measured 26 of 30 (the gradient is still the old schedule's)
    assert naive.iterations <= 3 and naive.reason == "line search found no decrease"  # measured 1
