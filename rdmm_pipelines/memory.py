"""Memory of an objective evaluation: what autograd keeps for the backward pass, what is free, and
what the next, finer scale will need.

An evaluation of the shooting objective keeps, for its backward pass, every Runge-Kutta stage of
every time step on the map grid, plus the similarity's tensors on the image grid. At the finest
scale of a 1 mm brain that is 14 GB for LDDMM and about twice that for RDMM (docs/benchmarks.md),
more than many machines have. The optimiser measures what the first evaluation of each scale kept
(:func:`saved_storages`), predicts the next scale's need from the grids' sizes and the time
steps (:func:`predicted_bytes`), and checkpoints the time steps there (recomputed in the backward
pass: about 2.5x less memory for 1.4-1.5x the time) when the prediction does not fit in the memory
that is free (:func:`available_bytes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["CheckpointPlanner", "saved_storages", "available_bytes", "predicted_bytes", "FREE_FRACTION"]

#: a scale is checkpointed when what its evaluations keep for backward is predicted above this
#: fraction of the free memory: the backward pass's own buffers come on top (LDDMM, brain preset:
#: peak RSS above the process's peak without the finest scale 2.0x the kept bytes at 2 mm, 828 MB
#: for 407; 1.9x at 1 mm, 11.1 GB for 5.9), so the kept bytes must fit in 40 % of what is free
FREE_FRACTION = 0.4


def saved_storages(roots: Sequence[Tensor]) -> dict[tuple[int, str], int]:
    """The storages autograd keeps for the backward pass of ``roots``: {(address, device): bytes}.

    Walks the graph from the roots' ``grad_fn`` and reads what each node saved (its ``_saved_*``
    attributes, and ``saved_tensors`` of custom functions); a storage shared by several tensors or
    nodes is counted once, at its full size. Call it after the forward pass and before backward.
    Not for checkpointed graphs (their nodes hold nothing until recomputed). Reading the graph
    changes nothing: a meter built on ``saved_tensors_hooks`` instead raised the peak memory of a
    2 mm brain registration by 27 % (1267 -> 1610 MB).
    """
    seen: set[int] = set()
    out: dict[tuple[int, str], int] = {}
    stack = [t.grad_fn for t in roots if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        values = [getattr(node, name) for name in dir(node) if name.startswith("_saved_")]
        if hasattr(node, "saved_tensors"):
            try:
                values.append(node.saved_tensors)
            except RuntimeError:  # freed already
                pass
        for value in values:
            for t in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(t, Tensor):
                    storage = t.untyped_storage()
                    out[(storage.data_ptr(), str(t.device))] = storage.nbytes()
        stack.extend(fn for fn, _ in node.next_functions)
    return out


def available_bytes(device: torch.device | str = "cpu") -> int | None:
    """Memory free for new tensors on ``device``: on CUDA the driver's free memory plus what
    torch's allocator holds unused; on CPU the kernel's MemAvailable (Linux), or less where the
    process's control group (a container, a SLURM job) allows less; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    free = _meminfo_available()
    limit = _cgroup_headroom()
    if free is None or limit is None:
        return free if limit is None else limit
    return min(free, limit)


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2) means no limit


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """limit - usage of this process's memory control group (v2: memory.max - memory.current;
    v1: memory.limit_in_bytes - memory.usage_in_bytes), or None without a limit."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # v2 unified hierarchy
            base = root / rel.lstrip("/")
            limit, usage = _read_int(base / "memory.max"), _read_int(base / "memory.current")
        elif "memory" in controllers.split(","):
            base = root / "memory" / rel.lstrip("/")
            limit, usage = _read_int(base / "memory.limit_in_bytes"), _read_int(base / "memory.usage_in_bytes")
        else:
            continue
        if limit is not None and usage is not None and limit < 2**60:  # v1 reports "no limit" as ~2^63
            return max(limit - usage, 0)
    return None


def predicted_bytes(shooting: int, similarity: int, steps: int, courant: float, map_ratio: float, image_ratio: float,
                    refinement: float, min_steps: int, max_cfl: float | None) -> int:
    """What one evaluation of the next scale keeps, from what this scale's first one kept.

    Args:
        shooting: bytes kept by the shooting (map grid) on this scale, over ``steps`` time steps.
        similarity: bytes kept after the shooting (the map upsampled, the image warped, the
            similarity: image grid).
        steps, courant: this scale's time steps and largest Courant number.
        map_ratio, image_ratio: voxels of the next scale's map and image grids over this one's.
        refinement: the largest ratio of this map grid's spacing to the next one's (a velocity of
            so many voxels here is ``refinement`` times as many there).
        min_steps, max_cfl: the integrator's minimum steps and Courant limit (None: fixed steps).

    Returns:
        shooting * map_ratio * (next steps / steps) + similarity * image_ratio, with the next
        steps ``max(min_steps, ceil(courant * steps * refinement / max_cfl))`` (the same speed in
        voxels of the finer grid), or ``min_steps`` without a Courant limit.
    """
    if max_cfl is None:
        next_steps = min_steps
    else:
        next_steps = max(min_steps, math.ceil(courant * steps * refinement / max_cfl - 1e-9))
    return int(shooting * map_ratio * next_steps / max(steps, 1) + similarity * image_ratio)


class CheckpointPlanner:
    """Decides per scale whether to checkpoint the time steps (``integrator.checkpointed``).

    ``setting`` True or False applies to every scale. With "auto", the first scale runs
    unchecked; the first evaluation of every scale is measured (:meth:`observe`), and the next
    scale is checkpointed when :func:`predicted_bytes` of it exceeds :data:`FREE_FRACTION` of
    :func:`available_bytes`. Once a scale is checkpointed the finer ones are too (a checkpointed
    evaluation keeps less, so it would predict too little).
    """

    def __init__(self, setting: bool | str, min_steps: int, max_cfl: float | None, device: torch.device) -> None:
        self.setting, self.min_steps, self.max_cfl, self.device = setting, min_steps, max_cfl, device
        self._last: dict | None = None
        self._on = setting is True
        self.prediction: int | None = None

    def decide(self, map_shape: tuple[int, ...], image_shape: tuple[int, ...],
               map_spacing: tuple[float, ...]) -> tuple[bool, str | None]:
        """(checkpoint this scale, a note for the record or None), before the scale starts;
        :attr:`prediction` holds the predicted bytes (None before any measurement)."""
        self.prediction = None
        if self._last is not None:
            last = self._last
            self.prediction = predicted_bytes(
                last["shooting"], last["similarity"], last["steps"], last["courant"],
                math.prod(map_shape) / math.prod(last["map_shape"]),
                math.prod(image_shape) / math.prod(last["image_shape"]),
                max(a / b for a, b in zip(last["map_spacing"], map_spacing)), self.min_steps, self.max_cfl)
        if self.setting != "auto" or self._on or self.prediction is None:
            return self._on, None
        free = available_bytes(self.device)
        if free is None or self.prediction <= FREE_FRACTION * free:
            return False, None
        self._on = True
        return True, (f"time steps checkpointed from the {'x'.join(map(str, map_shape))} map on: an evaluation "
                      f"would keep about {self.prediction / 2**30:.1f} GiB for its backward pass, with "
                      f"{free / 2**30:.1f} GiB free (recomputed instead: about 1.4-1.5x the time)")

    def observe(self, shooting: int, similarity: int, steps: int, courant: float, map_shape: tuple[int, ...],
                image_shape: tuple[int, ...], map_spacing: tuple[float, ...]) -> None:
        """What the first evaluation of a scale kept: bytes of the shooting and of the rest."""
        self._last = {"shooting": shooting, "similarity": similarity, "steps": steps, "courant": courant,
                      "map_shape": map_shape, "image_shape": image_shape, "map_spacing": map_spacing}
