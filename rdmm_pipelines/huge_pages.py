"""Large CPU tensors on transparent huge pages (torch's ``THP_MEM_ALLOC_ENABLE``).

torch's CPU allocator takes each tensor from malloc; a large one comes from a fresh mapping that
is returned to the operating system when the tensor is freed. A registration's objective
evaluation keeps every time step of the shooting for its backward pass and frees it afterwards,
so the next evaluation faults all of that memory in again, one 4 KiB page at a time. At 1 mm
(map 80x96x112, image 160x192x224, LDDMM, 13 steps) that is 3-5 million page faults per
evaluation, and in a virtual machine each costs microseconds. With ``THP_MEM_ALLOC_ENABLE=1``
torch aligns every tensor of 2 MiB or more to 2 MiB and advises the kernel to back it with huge
pages (where transparent huge pages are ``always`` or ``madvise``), 512x fewer faults; smaller
tensors are unchanged, so 2D registrations are not affected. Measured: docs/benchmarks.md,
"Huge pages and the 3D defaults".

torch reads the variable once, at its first CPU allocation. :func:`request_huge_pages` sets it
when the user has not (``THP_MEM_ALLOC_ENABLE=0`` keeps torch's default); ``rdmm_pipelines``
calls it on import, so it takes effect in every process that imports the package before it
allocates a tensor (the command line, pydra and SLURM workers). This module imports nothing
from torch.
"""

from __future__ import annotations

import os

__all__ = ["HUGE_PAGES_VARIABLE", "request_huge_pages"]

#: the environment variable torch's CPU allocator reads
HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def request_huge_pages() -> None:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` unless the environment already sets it (no effect on a
    process whose torch has already allocated a CPU tensor)."""
    os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")

