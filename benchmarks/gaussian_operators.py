"""Time the two implementations of the Gaussian operators side by side: banded axis matrices
against the padded FFT (``rdmm_pipelines.core.gaussian``), on the map grids the registrations use.

    python benchmarks/gaussian_operators.py                 # 1 thread, default grids
    python benchmarks/gaussian_operators.py --shapes 80x192 40x48x56 --threads 2

For each grid: one Gaussian of 2 and 16 voxels (what RDMM applies per Gaussian) and the default
five-Gaussian mixture (what vSVF/LDDMM apply), on a d-channel field; best of ``--repeat`` timings
of ``--number`` applications, and the largest difference between the two results.
"""

from __future__ import annotations

import argparse
import time

import torch

from rdmm_pipelines.core import gaussian as G


def _best_microseconds(fn, number: int, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best * 1e6


def _single(x: torch.Tensor, spacing: tuple[float, ...], sigma: float, matrices: bool) -> torch.Tensor:
    d = len(spacing)
    key = G._key(x, spacing, (sigma,))
    if matrices:
        return G._convolve_matrices(x, G._axis_matrices(key[0], key[1], sigma, key[3], key[4]), d)
    transfers, size = G._axis_transfers(*key)
    return G._convolve_separable(x, transfers, size, d)


def _mixture(x: torch.Tensor, spacing: tuple[float, ...], sigmas: tuple[float, ...], matrices: bool) -> torch.Tensor:
    d = len(spacing)
    shape, sp, sg, dtype, device = G._key(x, spacing, sigmas)
    w = 1.0 / len(sigmas)
    if matrices:
        terms = tuple((w, G._axis_matrices(shape, sp, s, dtype, device)) for s in sg)
        return G._mixture_by_matrices(x, terms, d)
    T, size = G._mixture_transfer(shape, sp, sg, dtype, device, (w,) * len(sigmas))
    return G._convolve(x, T, size, d)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["40x96", "80x192", "128x256", "20x24x28", "40x48x56", "80x96x112"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--number", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); microseconds per application, best of {args.repeat}")
    print("| grid | operator | FFT | matrices | matrices / FFT | max difference |")
    print("|---|---|---|---|---|---|")
    for text in args.shapes:
        shape = tuple(int(n) for n in text.split("x"))
        d = len(shape)
        h = 1.0 / (max(shape) - 1)
        spacing = (h,) * d
        x = torch.randn((1, d) + shape, generator=torch.Generator().manual_seed(0))
        cases = [(f"one Gaussian, sigma {v} voxels", lambda m, v=v: _single(x, spacing, v * h, m)) for v in (2, 16)]
        sigmas = tuple(max(2 * h, f) for f in (0.01, 0.02, 0.04, 0.08, 0.16))
        cases.append(("mixture of the 5 default Gaussians", lambda m: _mixture(x, spacing, sigmas, m)))
        for name, fn in cases:
            t_fft = _best_microseconds(lambda: fn(False), args.number, args.repeat)
            t_mat = _best_microseconds(lambda: fn(True), args.number, args.repeat)
            diff = float((fn(False) - fn(True)).abs().max())
            print(f"| {text} | {name} | {t_fft:.0f} | {t_mat:.0f} | {t_mat / t_fft:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
