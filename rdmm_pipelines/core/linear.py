"""Linear operators under autograd: the backward of y = A x is the transpose A^T applied to the
incoming gradient, given by hand rather than recorded op by op.

Used for the finite differences (A = D, A^T written out) and the zero-extended Gaussian
convolutions (symmetric: A^T = A). Autograd then stores nothing for them, runs the same fast
path backwards, and the double backward works (the backward is itself such an operator).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["apply_linear"]

Operator = Callable[[Tensor], Tensor]


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, op: Operator, transpose: Operator) -> Tensor:  # type: ignore[override]
        ctx.op, ctx.transpose = op, transpose
        return op(x)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        return _Linear.apply(g, ctx.transpose, ctx.op), None, None


def apply_linear(x: Tensor, op: Operator, transpose: Operator | None = None) -> Tensor:
    """A x with backward A^T g.

    Args:
        x: any tensor ``op`` accepts.
        op: the linear map A (must not depend on anything that needs a gradient but ``x``).
        transpose: A^T, with <A x, g> = <x, A^T g>; None for a symmetric operator (A^T = A).

    Returns:
        op(x), differentiable (to any order) through the transposes.
    """
    return _Linear.apply(x, op, op if transpose is None else transpose)
