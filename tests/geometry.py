"""Shared test geometry: rotations and oblique, anisotropic voxel-to-world affines."""

import math

import numpy as np


def rotation(axis, degrees: float) -> np.ndarray:
    """3x3 rotation by ``degrees`` about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    t = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


def make_affine(rot: np.ndarray, spacing, origin) -> np.ndarray:
    """4x4 voxel-to-world affine with direction ``rot``, voxel ``spacing`` and ``origin``."""
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = origin
    return a
