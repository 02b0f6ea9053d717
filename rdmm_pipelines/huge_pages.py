"""Large CPU tensors on transparent huge pages (torch's ``THP_MEM_ALLOC_ENABLE``).

torch's CPU allocator takes each tensor from malloc; a large one comes from a fresh mapping that
is returned to the operating system when the tensor is freed. A registration's objective
evaluation keeps every time step of the shooting for its backward pass and frees it afterwards,
so the next evaluation faults that memory in again, one 4 KiB page at a time. With ``THP_MEM_ALLOC_ENABLE=1`` torch aligns every tensor of 2 MiB or more to 2 MiB
and advises the kernel to back it with huge pages (where transparent huge pages are ``always``
or ``madvise``); smaller tensors are unchanged, so 2D registrations are not affected. Measured
on the 1 mm brain (LDDMM, 2 threads): peak RSS 8.2 GB instead of 12.1 GB and 1.3 instead of 22.7
million page faults, in the same time (docs/benchmarks.md, "The 3D defaults, and huge pages").

torch reads the variable once, at its first CPU allocation. :func:`request_huge_pages` sets it
when the user has not (``THP_MEM_ALLOC_ENABLE=0`` keeps torch's default); ``rdmm_pipelines``
calls it on import, so it takes effect in every process that imports the package before torch
allocates a tensor (importing torch alone allocates none). This module imports nothing from torch.
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

