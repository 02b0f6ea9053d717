"""World-space affine transforms and their ITK / ANTs file formats.

Convention (one place owns it): an :class:`AffineTransform` is a 4x4 matrix ``A`` acting on world
RAS millimetres that maps a point of the FIXED image to the corresponding point of the MOVING
image,

    p_moving = A @ [p_fixed, 1]

i.e. the pull-back used to resample the moving image onto the fixed grid (ITK's "fixed -> moving"
direction, the transform that ``antsApplyTransforms`` and ``ants.apply_transforms(fixed, moving,
[file])`` expect). A 2D transform (``ndim == 2``) has the identity as its third row and column: it
acts on the world (x, y) of an axial plane (z constant) and leaves z alone.

ITK stores the same map in its physical space, LPS millimetres (RAS with x and y negated):
``T(p) = M (p - c) + t + c`` with ``Parameters = [M row-major, t]`` and ``FixedParameters = c``
(the centre of rotation). With ``F = diag(-1, -1, 1, 1)`` the LPS matrix is ``F A F``. For a 2D
image ITK's physical space is the LPS (x, y) of an axial plane, so a 2D transform is the upper-left
2x2 block (and x, y translation) of ``F A F``. ANTs writes the same parameters in a MATLAB file
(``AffineTransform_float_3_3``, ``fixed``). ``tests/test_affine.py`` proves all of this with
antspyx.

Voxel maps: :meth:`AffineTransform.voxel_matrix` gives fixed voxel indices -> moving voxel indices,
``inv(A_moving) @ A @ A_fixed``; :meth:`AffineTransform.domain_matrix` the same from fixed
registration-domain coordinates ``x_k = i_k * h_k``; :meth:`AffineTransform.moving_voxels` the
resulting (1, d, *fixed.shape) map, ready for :func:`rdmm_pipelines.core.interpolation.sample_voxel`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..atomic import write_text_atomic
from ..spatial.grid import Grid

__all__ = ["AffineTransform", "ras_to_lps"]

_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)
_HEADER = "#Insight Transform File V1.0"
# transform types whose parameters are [matrix row-major, translation] with a centre
_MATRIX_TYPES = (
    "AffineTransform",
    "MatrixOffsetTransformBase",
)
_TYPE_RE = re.compile(r"^(?P<kind>\w+?)_(?P<prec>double|float)_(?P<d>[23])_(?P<d2>[23])$")
# tolerance (voxels of the moving grid) for a 2D map to stay in the moving image's plane
_COPLANAR_TOL = 1e-3


def ras_to_lps(matrix: np.ndarray) -> np.ndarray:
    """Conjugate a 4x4 world matrix by diag(-1, -1, 1, 1) (RAS <-> LPS; the map is symmetric)."""
    m = np.asarray(matrix, dtype=np.float64)
    return _FLIP @ m @ _FLIP


def _check_matrix(matrix: object, ndim: int) -> np.ndarray:
    m = np.array(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"an affine transform needs a 4x4 matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"affine transform has non-finite entries:\n{m}")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-12):
        raise ValueError(f"affine transform's last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
    if ndim == 2:
        scale = max(1.0, float(np.abs(m).max()))
        if not (
            np.allclose(m[2], [0.0, 0.0, 1.0, 0.0], atol=1e-9 * scale)
            and np.allclose(m[:, 2], [0.0, 0.0, 1.0, 0.0], atol=1e-9 * scale)
        ):
            raise ValueError(
                "a 2D affine transform must have the identity as its third row and column "
                f"(it acts on world x, y only), got\n{m}"
            )
        m[2] = m[:, 2] = [0.0, 0.0, 1.0, 0.0]
    if abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise ValueError(f"affine transform is singular:\n{m}")
    m[3] = [0.0, 0.0, 0.0, 1.0]
    m.setflags(write=False)
    return m


@dataclass(frozen=True, eq=False)
class AffineTransform:
    """A world-space affine map from FIXED to MOVING points (RAS mm; see the module docstring).

    Attributes:
        matrix: (4, 4) float64, read-only: ``p_moving = matrix @ [p_fixed, 1]``.
        ndim: 3, or 2 for a transform between 2D (axial) images; then ``matrix``'s third row and
            column are the identity. Decides the ITK transform type written by
            :meth:`to_itk_txt` (``AffineTransform_double_2_2`` or ``_3_3``).

    Transforms compare with :meth:`allclose` (``==`` is identity, arrays have no truth value).
    """

    matrix: np.ndarray
    ndim: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "matrix", _check_matrix(self.matrix, self.ndim))

    # ------------------------------------------------------------------ construction
    @classmethod
    def identity(cls, ndim: int = 3) -> "AffineTransform":
        """The identity map."""
        return cls(np.eye(4), ndim)

    @classmethod
    def from_translation(cls, offset: Sequence[float], ndim: int = 3) -> "AffineTransform":
        """``p_moving = p_fixed + offset`` (world RAS mm; 2 or 3 values, z must be 0 in 2D)."""
        t = np.zeros(3)
        off = np.asarray(offset, dtype=np.float64).ravel()
        if off.size not in (2, 3):
            raise ValueError(f"translation needs 2 or 3 values, got {off.size}")
        t[: off.size] = off
        m = np.eye(4)
        m[:3, 3] = t
        return cls(m, ndim)

    # ------------------------------------------------------------------ algebra
    @property
    def linear(self) -> np.ndarray:
        """(3, 3) linear part (RAS)."""
        return self.matrix[:3, :3].copy()

    @property
    def translation(self) -> np.ndarray:
        """(3,) translation (RAS mm): the image of the world origin."""
        return self.matrix[:3, 3].copy()

    def inverse(self) -> "AffineTransform":
        """The moving -> fixed map ``inv(matrix)``."""
        return AffineTransform(np.linalg.inv(self.matrix), self.ndim)

    def compose(self, other: "AffineTransform") -> "AffineTransform":
        """``self o other``: apply ``other`` first, then ``self`` (matrix ``self @ other``).

        If ``other`` maps fixed -> intermediate and ``self`` intermediate -> moving, the result
        maps fixed -> moving.
        """
        if not isinstance(other, AffineTransform):
            raise TypeError(f"can only compose with an AffineTransform, got {type(other).__name__}")
        if other.ndim != self.ndim:
            raise ValueError(f"cannot compose a {self.ndim}D with a {other.ndim}D transform")
        return AffineTransform(self.matrix @ other.matrix, self.ndim)

    def __matmul__(self, other: "AffineTransform") -> "AffineTransform":
        return self.compose(other)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map world RAS points (..., 3) (fixed) to world RAS points (..., 3) (moving)."""
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1] != 3:
            raise ValueError(f"world points must have 3 components, got shape {p.shape}")
        return p @ self.matrix[:3, :3].T + self.matrix[:3, 3]

    def allclose(self, other: "AffineTransform", rtol: float = 1e-9, atol: float = 1e-9) -> bool:
        """Same dimension and matrices equal to tolerance."""
        return self.ndim == other.ndim and bool(
            np.allclose(self.matrix, other.matrix, rtol=rtol, atol=atol)
        )

    # ------------------------------------------------------------------ voxel maps
    def voxel_matrix(self, fixed_grid: Grid, moving_grid: Grid) -> np.ndarray:
        """(d+1, d+1) map from fixed voxel indices to moving voxel indices.

        ``inv(A_moving) @ A @ A_fixed``; for 2D grids rows/columns [0, 1, 3] of it, after checking
        that the mapped fixed grid stays in the moving image's plane (ValueError otherwise).
        """
        d = fixed_grid.ndim
        if moving_grid.ndim != d:
            raise ValueError(f"fixed grid is {d}D but moving grid is {moving_grid.ndim}D")
        if self.ndim != d:
            raise ValueError(f"a {self.ndim}D transform cannot map {d}D grids")
        m = np.linalg.inv(moving_grid.affine_matrix) @ self.matrix @ fixed_grid.affine_matrix
        if d == 3:
            return m
        keep = [0, 1, 3]
        corners = np.array(
            [[i, j, 1.0] for i in (0, fixed_grid.shape[0] - 1) for j in (0, fixed_grid.shape[1] - 1)]
        )
        off = np.abs(corners @ m[2, keep]).max()
        if off > _COPLANAR_TOL:
            raise ValueError(
                f"the 2D transform moves the fixed grid up to {off:.4g} voxels off the moving "
                "image's plane: 2D affine transforms act on world (x, y) and need both 2D grids "
                "in one axial plane (z constant)"
            )
        return m[np.ix_(keep, keep)]

    def domain_matrix(self, fixed_grid: Grid, moving_grid: Grid) -> np.ndarray:
        """(d+1, d+1) map from fixed registration-domain coordinates to moving voxel indices.

        Domain coordinates are ``x_k = i_k * h_k`` with ``h = fixed_grid.domain_spacing``, so this
        is ``voxel_matrix @ diag(1/h, 1)``: a map phi in domain units becomes moving voxel indices
        ``M @ [phi; 1]``.
        """
        m = self.voxel_matrix(fixed_grid, moving_grid)
        d = fixed_grid.ndim
        scale = np.ones(d + 1)
        scale[:d] = 1.0 / np.asarray(fixed_grid.domain_spacing, dtype=np.float64)
        return m * scale[None, :]

    def moving_voxels(
        self,
        fixed_grid: Grid,
        moving_grid: Grid,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """(1, d, *fixed_grid.shape) moving voxel indices of every fixed voxel.

        ``sample_voxel(moving.batch(), moving_voxels)`` is the moving image resampled onto the
        fixed grid through this transform. Computed in float64, returned in ``dtype``.
        """
        m = torch.as_tensor(self.voxel_matrix(fixed_grid, moving_grid), dtype=torch.float64)
        d = fixed_grid.ndim
        idx = fixed_grid.voxel_indices(torch.float64)
        out = torch.einsum("kl,bl...->bk...", m[:d, :d], idx) + m[:d, d].view(1, d, *([1] * d))
        return out.to(dtype=dtype, device=device)

    # ------------------------------------------------------------------ ITK parameters
    def itk_parameters(
        self, center: Sequence[float] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """ITK ``(Parameters, FixedParameters)`` in LPS for a centre ``center`` (LPS, default 0).

        Parameters = [M row-major (d*d), t (d)] with ``T(p) = M (p - c) + t + c``.
        """
        d = self.ndim
        lps = ras_to_lps(self.matrix)
        mat = lps[:d, :d]
        offset = lps[:d, 3]
        c = np.zeros(d) if center is None else np.asarray(center, dtype=np.float64).ravel()
        if c.shape != (d,):
            raise ValueError(f"centre must have {d} values, got {c.size}")
        t = offset - c + mat @ c
        return np.concatenate([mat.ravel(), t]), c

    @classmethod
    def from_itk_parameters(
        cls, parameters: Sequence[float], fixed_parameters: Sequence[float], ndim: int
    ) -> "AffineTransform":
        """Build from ITK matrix/offset parameters (LPS; see :meth:`itk_parameters`)."""
        d = int(ndim)
        if d not in (2, 3):
            raise ValueError(f"ITK affine transforms here are 2D or 3D, got dimension {ndim!r}")
        p = np.asarray(parameters, dtype=np.float64).ravel()
        c = np.asarray(fixed_parameters, dtype=np.float64).ravel()
        if p.size != d * d + d:
            raise ValueError(f"a {d}D ITK affine transform has {d * d + d} parameters, got {p.size}")
        if c.size == 0:
            c = np.zeros(d)
        if c.size != d:
            raise ValueError(f"a {d}D ITK affine transform has {d} fixed parameters, got {c.size}")
        mat = p[: d * d].reshape(d, d)
        t = p[d * d :]
        lps = np.eye(4)
        lps[:d, :d] = mat
        lps[:d, 3] = t + c - mat @ c
        return cls(ras_to_lps(lps), d)

    # ------------------------------------------------------------------ files
    def to_itk_txt(self, path: str | os.PathLike, center: Sequence[float] | None = None) -> Path:
        """Write an ITK text transform (``#Insight Transform File V1.0``).

        One ``AffineTransform_double_{d}_{d}`` in LPS (``ants.apply_transforms(fixed, moving,
        [path])`` then resamples the moving image as we do). ``center``: ITK's centre of rotation
        in LPS mm (default the origin; it does not change the map).

        Returns:
            The written path.
        """
        p = Path(path)
        params, fixed = self.itk_parameters(center)
        d = self.ndim
        text = (
            f"{_HEADER}\n#Transform 0\nTransform: AffineTransform_double_{d}_{d}\n"
            f"Parameters: {' '.join(_fmt(v) for v in params)}\n"
            f"FixedParameters: {' '.join(_fmt(v) for v in fixed)}\n"
        )
        return write_text_atomic(p, text)

    @classmethod
    def from_itk_txt(cls, path: str | os.PathLike) -> "AffineTransform":
        """Read an ITK text file holding one affine (``AffineTransform_{double,float}_{2,3}_{2,3}``
        or ``MatrixOffsetTransformBase_...``)."""
        p = Path(path)
        try:
            lines = [ln.strip() for ln in p.read_text().splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{p}: cannot read an ITK text transform ({exc})") from exc
        if not lines or not lines[0].startswith("#Insight Transform File"):
            raise ValueError(f"{p}: not an ITK text transform (no '#Insight Transform File' header)")
        kinds, params, fixed = [], [], []
        for ln in lines:
            key, _, value = ln.partition(":")
            if key == "Transform":
                kinds.append(value.strip())
            elif key == "Parameters":
                params.append(value)
            elif key == "FixedParameters":
                fixed.append(value)
        if len(kinds) != 1 or len(params) != 1:
            raise ValueError(
                f"{p}: expected exactly one affine transform, found {len(kinds)} transform(s) "
                f"({', '.join(kinds) or 'none'}); composite transforms are not supported"
            )
        d = _parse_type(kinds[0], p)
        try:
            pv = [float(v) for v in params[0].split()]
            fv = [float(v) for v in fixed[0].split()] if fixed else []
        except ValueError as exc:
            raise ValueError(f"{p}: malformed transform parameters ({exc})") from exc
        try:
            return cls.from_itk_parameters(pv, fv, d)
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from None

    @classmethod
    def from_ants_mat(cls, path: str | os.PathLike) -> "AffineTransform":
        """Read an ANTs/ITK MATLAB transform (``*GenericAffine.mat``): one array named
        ``AffineTransform_{float,double}_{d}_{d}`` (parameters) and one named ``fixed`` (centre),
        both in LPS."""
        from scipy.io import loadmat  # lazy: scipy is only needed for this format

        p = Path(path)
        try:
            data = loadmat(str(p))
        except Exception as exc:  # scipy raises several types for non-MATLAB files
            raise ValueError(f"{p}: cannot read a MATLAB transform file ({exc})") from exc
        keys = [k for k in data if not k.startswith("__") and k != "fixed"]
        if len(keys) != 1:
            raise ValueError(f"{p}: expected one transform array besides 'fixed', found {keys}")
        d = _parse_type(keys[0], p)
        fixed = data.get("fixed", np.zeros(d))
        try:
            return cls.from_itk_parameters(np.ravel(data[keys[0]]), np.ravel(fixed), d)
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from None

    def to_ants_mat(self, path: str | os.PathLike, center: Sequence[float] | None = None) -> Path:
        """Write the ANTs MATLAB format (``AffineTransform_double_{d}_{d}`` and ``fixed``)."""
        from scipy.io import savemat

        p = Path(path)
        params, fixed = self.itk_parameters(center)
        d = self.ndim
        p.parent.mkdir(parents=True, exist_ok=True)
        savemat(
            str(p),
            {f"AffineTransform_double_{d}_{d}": params[:, None], "fixed": fixed[:, None]},
            format="4",
        )
        return p

    @classmethod
    def read(cls, path: str | os.PathLike) -> "AffineTransform":
        """Read ``.mat`` (ANTs) or any other suffix as ITK text."""
        p = Path(path)
        if p.suffix.lower() == ".mat":
            return cls.from_ants_mat(p)
        return cls.from_itk_txt(p)

    def to_list(self) -> list[list[float]]:
        """The matrix as nested lists (for JSON)."""
        return self.matrix.tolist()

    def __repr__(self) -> str:
        rows = "; ".join(" ".join(f"{v:.6g}" for v in row) for row in self.matrix[:3])
        return f"AffineTransform(ndim={self.ndim}, [{rows}])"


def _fmt(v: float) -> str:
    return repr(float(v))


def _parse_type(name: str, path: Path) -> int:
    m = _TYPE_RE.match(name)
    if not m or m.group("kind") not in _MATRIX_TYPES or m.group("d") != m.group("d2"):
        raise ValueError(
            f"{path}: unsupported transform type {name!r}; expected "
            "AffineTransform_{double,float}_{2,3}_{2,3} or MatrixOffsetTransformBase_..."
        )
    return int(m.group("d"))
