"""Shape checks shared by the layers above: one clear error for tensors that do not fit."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["broadcast_or_raise"]


def broadcast_or_raise(t: Tensor, shape: Sequence[int], what: str, target: str) -> Tensor:
    """``t`` broadcast to ``shape``, or ValueError "<what> shape (...) does not match <target> shape (...)".

    Args:
        t: any tensor (e.g. a mask).
        shape: the shape it must broadcast to.
        what, target: names for the message, e.g. "mask" and "determinant".
    """
    try:
        return torch.broadcast_to(t, tuple(shape))
    except RuntimeError as exc:
        raise ValueError(f"{what} shape {tuple(t.shape)} does not match {target} shape {tuple(shape)}") from exc
