"""Image dissimilarity measures (to be minimised; 0 = perfect match).

Every measure is a parameter-free ``torch.nn.Module`` whose ``forward(warped, target)`` takes two
images of the same shape (B, C, *S), d = len(S) in {2, 3}, and returns a (B,) tensor >= 0:

* :class:`SSD`: ``mean_{c,x} (I_w - I_t)^2 / sigma^2``.
* :class:`NCC`: ``(1 - mean_c ncc_c^2) / sigma^2`` with the global normalised cross-correlation
  ``ncc_c^2 = cov_c^2 / (var_w,c var_t,c + eps)`` of each channel.
* :class:`LNCC`: the same on every box window, ``(1 - mean_{c,windows} lncc) / sigma^2``.
* :class:`MultiKernelLNCC`: a weighted sum of LNCCs; :meth:`MultiKernelLNCC.for_shape` gives the
  RDMM authors' resolution-dependent windows.

:func:`make_similarity` builds one by name (see :data:`SIMILARITIES`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SSD", "NCC", "LNCC", "MultiKernelLNCC", "SIMILARITIES", "default_lncc_window", "make_similarity"]

_EPS = 1e-10


def _check_pair(warped: Tensor, target: Tensor) -> None:
    if warped.shape != target.shape:
        raise ValueError(
            f"warped and target must have the same shape, got {tuple(warped.shape)} and {tuple(target.shape)}")
    if warped.dim() not in (4, 5):
        raise ValueError(f"images must be (B, C, *S) with 2 or 3 spatial dims, got shape {tuple(warped.shape)}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _per_axis(name: str, value: int | Sequence[int], d: int) -> tuple[int, ...]:
    vals = (int(value),) * d if isinstance(value, int) else tuple(int(v) for v in value)
    if len(vals) != d:
        raise ValueError(f"{name} must be an int or have one entry per spatial dim ({d}), got {value}")
    if any(v < 1 for v in vals):
        raise ValueError(f"{name} entries must be >= 1, got {value}")
    return vals


class SSD(nn.Module):
    """Mean squared difference: ``loss_b = mean_{c,x} (warped - target)^2 / sigma^2``.

    Args: warped, target (B, C, *S). Returns (B,). The mean (not sum) makes it resolution independent.
    """

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        _check_positive("sigma", sigma)
        self.sigma = float(sigma)

    def forward(self, warped: Tensor, target: Tensor) -> Tensor:
        _check_pair(warped, target)
        return (warped - target).pow(2).flatten(1).mean(1) / self.sigma**2


class NCC(nn.Module):
    """Global normalised cross-correlation: ``loss_b = (1 - mean_c ncc_c^2) / sigma^2``.

    With ``a = I_w - mean(I_w)``, ``b = I_t - mean(I_t)`` over the spatial domain of channel c,
    ``ncc_c^2 = mean(a b)^2 / (mean(a^2) mean(b^2) + eps)``; the (small, absolute) ``eps`` keeps
    constant images finite (they give ncc = 0, loss 1). Invariant to ``a I + b`` with a > 0
    (up to eps). Args: warped, target (B, C, *S). Returns (B,).
    """

    def __init__(self, sigma: float = 1.0, eps: float = _EPS) -> None:
        super().__init__()
        _check_positive("sigma", sigma)
        _check_positive("eps", eps)
        self.sigma, self.eps = float(sigma), float(eps)

    def forward(self, warped: Tensor, target: Tensor) -> Tensor:
        _check_pair(warped, target)
        a = warped.flatten(2)
        b = target.flatten(2)
        a = a - a.mean(2, keepdim=True)
        b = b - b.mean(2, keepdim=True)
        cov = (a * b).mean(2)
        ncc2 = cov * cov / (a.pow(2).mean(2) * b.pow(2).mean(2) + self.eps)  # (B, C)
        return (1.0 - ncc2.mean(1)).clamp_min(0.0) / self.sigma**2


def _box_mean(x: Tensor, window: tuple[int, ...], dilation: tuple[int, ...], stride: tuple[int, ...]) -> Tensor:
    """Mean over (dilated) box windows, valid positions only, as separable 1D convolutions.

    x: (B, G, *S) -> (B, G, *S') with ``S'_k = (S_k - dilation_k (window_k - 1) - 1) // stride_k + 1``.
    """
    d = x.dim() - 2
    conv = F.conv2d if d == 2 else F.conv3d
    groups = x.shape[1]
    for k in range(d):
        shape = [1] * d
        shape[k] = window[k]
        weight = x.new_full((groups, 1, *shape), 1.0 / window[k])
        st = [1] * d
        st[k] = stride[k]
        dil = [1] * d
        dil[k] = dilation[k]
        x = conv(x, weight, stride=tuple(st), dilation=tuple(dil), groups=groups)
    return x


class LNCC(nn.Module):
    """Local normalised cross-correlation: ``loss_b = (1 - mean_{c,windows} lncc) / sigma^2``.

    For every box window W (``window`` voxels per side, taken every ``dilation`` voxels, placed
    every ``stride`` voxels, only where it fits inside the image: no padding),
    ``lncc = cov_W^2 / (var_W(I_w) var_W(I_t) + eps)`` with the local moments
    ``cov_W = E_W[I_w I_t] - E_W[I_w] E_W[I_t]``, ``var_W(I) = max(E_W[I^2] - E_W[I]^2, 0)``
    computed with separable box means (after removing each image's global mean, for accuracy in
    float32). Along an axis where the dilated window
    ``dilation (window - 1) + 1`` exceeds the image length S, the window is clamped to
    ``(S - 1) // dilation + 1`` voxels. Windows where either image is constant give lncc = 0
    (loss contribution 1, zero gradient), never NaN; hence identical images with constant regions
    (e.g. background) score > 0, a constant offset that does not affect optimisation. With one window covering the whole image
    this equals :class:`NCC`.

    Args:
        window: voxels per side (int, or one per spatial dim).
        sigma: the loss is divided by sigma^2.
        dilation, stride: int or one per spatial dim.
        eps: added to the variance product.

    forward: warped, target (B, C, *S) -> (B,).
    """

    def __init__(self, window: int | tuple[int, ...], sigma: float = 1.0, dilation: int | tuple[int, ...] = 1,
                 stride: int | tuple[int, ...] = 1, eps: float = _EPS) -> None:
        super().__init__()
        _check_positive("sigma", sigma)
        _check_positive("eps", eps)
        for name, v in (("window", window), ("dilation", dilation), ("stride", stride)):
            _per_axis(name, v, 1 if isinstance(v, int) else len(v))
        self.window, self.dilation, self.stride = window, dilation, stride
        self.sigma, self.eps = float(sigma), float(eps)

    def effective_window(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Window per axis after clamping to the image (dilated extent <= axis length)."""
        d = len(spatial_shape)
        win = _per_axis("window", self.window, d)
        dil = _per_axis("dilation", self.dilation, d)
        return tuple(min(w, (s - 1) // r + 1) for w, r, s in zip(win, dil, spatial_shape))

    def local_ncc(self, warped: Tensor, target: Tensor) -> Tensor:
        """lncc per channel and window: (B, C, *S')."""
        _check_pair(warped, target)
        d = warped.dim() - 2
        win = self.effective_window(warped.shape[2:])
        dil = _per_axis("dilation", self.dilation, d)
        st = _per_axis("stride", self.stride, d)
        c = warped.shape[1]
        # LNCC is shift invariant: removing the global mean first reduces cancellation in E[I^2] - E[I]^2
        spatial = tuple(range(2, warped.dim()))
        warped = warped - warped.mean(spatial, keepdim=True)
        target = target - target.mean(spatial, keepdim=True)
        stacked = torch.cat([warped, target, warped * warped, target * target, warped * target], dim=1)
        mw, mt, mww, mtt, mwt = _box_mean(stacked, win, dil, st).split(c, dim=1)
        var_w = (mww - mw * mw).clamp_min(0.0)
        var_t = (mtt - mt * mt).clamp_min(0.0)
        cov = mwt - mw * mt
        return cov * cov / (var_w * var_t + self.eps)

    def forward(self, warped: Tensor, target: Tensor) -> Tensor:
        lncc = self.local_ncc(warped, target)
        return (1.0 - lncc.flatten(1).mean(1)).clamp_min(0.0) / self.sigma**2


class MultiKernelLNCC(nn.Module):
    """Weighted sum of LNCCs: ``loss_b = sum_i weights_i * LNCC(windows_i, dilations_i, strides_i)``.

    Each LNCC uses sigma = 1; the sum is divided by ``sigma^2``. ``strides`` defaults to 1.
    forward: warped, target (B, C, *S) -> (B,).
    """

    def __init__(self, windows: Sequence[int], weights: Sequence[float], dilations: Sequence[int],
                 sigma: float = 1.0, strides: Sequence[int] | None = None, eps: float = _EPS) -> None:
        super().__init__()
        _check_positive("sigma", sigma)
        strides = (1,) * len(windows) if strides is None else tuple(strides)
        if not len(windows) == len(weights) == len(dilations) == len(strides) or not windows:
            raise ValueError(
                f"windows, weights, dilations and strides must be non-empty and of equal length, got "
                f"{tuple(windows)}, {tuple(weights)}, {tuple(dilations)}, {strides}")
        if any(w < 0 for w in weights):
            raise ValueError(f"weights must be >= 0, got {tuple(weights)}")
        self.windows, self.weights = tuple(int(w) for w in windows), tuple(float(w) for w in weights)
        self.dilations, self.strides = tuple(int(r) for r in dilations), tuple(int(s) for s in strides)
        self.sigma = float(sigma)
        self.kernels = nn.ModuleList(
            LNCC(w, 1.0, dilation=r, stride=s, eps=eps) for w, r, s in zip(self.windows, self.dilations, self.strides))

    @classmethod
    def for_shape(cls, shape: Sequence[int], sigma: float = 1.0) -> "MultiKernelLNCC":
        """The RDMM authors' defaults for an image of spatial shape ``shape``.

        With m = min(shape): m >= 128: window ratios (1/16, 1/8, 1/4), weights (0.1, 0.3, 0.6),
        dilations 2; 64 <= m < 128: ratios (1/4, 1/2), weights (0.3, 0.7), dilations 2;
        m < 64: ratio 1/2, weight 1, dilation 1. ``window = max(int(m * ratio), 3)``,
        ``stride = max(int((window + 1) * 0.25), 1)``. E.g. 200^2 -> windows (12, 25, 50).
        """
        if not shape or any(int(s) < 1 for s in shape):
            raise ValueError(f"shape must be a non-empty spatial shape of positive sizes, got {tuple(shape)}")
        m = min(int(s) for s in shape)
        if m >= 128:
            ratios, weights, dilations = (1 / 16, 1 / 8, 1 / 4), (0.1, 0.3, 0.6), (2, 2, 2)
        elif m >= 64:
            ratios, weights, dilations = (1 / 4, 1 / 2), (0.3, 0.7), (2, 2)
        else:
            ratios, weights, dilations = (1 / 2,), (1.0,), (1,)
        windows = tuple(max(int(m * r), 3) for r in ratios)
        strides = tuple(max(int((w + 1) * 0.25), 1) for w in windows)
        return cls(windows, weights, dilations, sigma=sigma, strides=strides)

    def forward(self, warped: Tensor, target: Tensor) -> Tensor:
        _check_pair(warped, target)
        total = sum(w * k(warped, target) for w, k in zip(self.weights, self.kernels))
        return total / self.sigma**2


SIMILARITIES: dict[str, type] = {"ssd": SSD, "ncc": NCC, "lncc": LNCC, "mk-lncc": MultiKernelLNCC}


def default_lncc_window(shape: Sequence[int]) -> int:
    """Default LNCC window: ``max(9, min(shape) // 16)`` voxels (9 up to 159 voxels per side)."""
    return max(9, min(int(s) for s in shape) // 16)


def make_similarity(name: str, shape: Sequence[int], sigma: float = 1.0, window: int | None = None) -> nn.Module:
    """Build the measure ``name`` (a key of :data:`SIMILARITIES`) for images of spatial shape ``shape``.

    ``window`` is used by "lncc" only (default :func:`default_lncc_window`); "mk-lncc" uses
    :meth:`MultiKernelLNCC.for_shape`; "ssd" and "ncc" ignore ``shape`` and ``window``.
    """
    if name not in SIMILARITIES:
        raise ValueError(f"unknown similarity {name!r}; valid: {', '.join(sorted(SIMILARITIES))}")
    if name == "ssd":
        return SSD(sigma)
    if name == "ncc":
        return NCC(sigma)
    if name == "lncc":
        return LNCC(default_lncc_window(shape) if window is None else window, sigma)
    return MultiKernelLNCC.for_shape(shape, sigma)
