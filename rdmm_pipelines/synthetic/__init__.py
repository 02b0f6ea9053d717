"""Synthetic registration data (pure numpy + torch, seeded with ``numpy.random.default_rng``).

* :func:`make_pair_2d` / :func:`make_pairs_2d`: 2D pairs like the RDMM paper's synthetic
  experiment (a big ellipse/rectangle holding two small objects, more small objects outside it).
* :func:`make_phantom_3d`: a 3D lung-like phantom (a lung that moves and deforms inside a body
  that barely moves).

Both return a :class:`SyntheticPair` with images, label maps and the region map used by a
pre-defined RDMM regulariser.
"""

from .pairs2d import make_pair_2d, make_pairs_2d
from .phantom3d import make_phantom_3d
from .shapes import SyntheticPair

__all__ = ["SyntheticPair", "make_pair_2d", "make_pairs_2d", "make_phantom_3d"]
