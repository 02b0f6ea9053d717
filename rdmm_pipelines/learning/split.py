"""Subject-wise training / validation splits: no subject's images on both sides.

A registration pair involves one subject (a longitudinal pair) or two (a cross-subject pair).
:func:`split_by_subject` draws the validation *subjects* (a seeded shuffle of the sorted subject
ids) and assigns each item to the set holding all of its subjects; an item whose subjects fall in
both sets is dropped (and counted), as is any item that involves an excluded (held-out) subject.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["SubjectSplit", "split_by_subject"]

T = TypeVar("T")


@dataclass(frozen=True)
class SubjectSplit(Generic[T]):
    """The result of :func:`split_by_subject`.

    train, validation: the items of each set, in their input order; train_subjects,
    validation_subjects: sorted subject ids of each set; dropped: items whose subjects span both
    sets; excluded: items that involve an excluded subject.
    """

    train: list[T]
    validation: list[T]
    train_subjects: tuple[str, ...]
    validation_subjects: tuple[str, ...]
    dropped: int = 0
    excluded: int = 0


def _subjects(item: T, subject_of: Callable[[T], str | Iterable[str]]) -> frozenset[str]:
    s = subject_of(item)
    return frozenset((s,)) if isinstance(s, str) else frozenset(s)


def split_by_subject(
    items: Sequence[T],
    subject_of: Callable[[T], str | Iterable[str]],
    validation_fraction: float,
    seed: int,
    exclude: Collection[str] = (),
) -> SubjectSplit[T]:
    """Split ``items`` so that no subject is in both the training and the validation set.

    Args:
        items: anything (pairs, scans, file rows).
        subject_of: the subject id of an item, or an iterable of ids (a pair's two subjects).
        validation_fraction: share of the (non-excluded) subjects drawn for validation:
            ``round(fraction * n)``, at least 1 when the fraction is > 0; 0 gives no validation set.
        seed: the draw is a ``random.Random(seed)`` shuffle of the sorted ids (deterministic).
        exclude: subject ids (e.g. a held-out test set) whose items go to neither set.

    Returns:
        A :class:`SubjectSplit`.

    Raises:
        ValueError: a fraction outside [0, 1), an item without a subject, or an empty training set
            (or an empty validation set when the fraction is > 0), naming the counts.
    """
    if not (isinstance(validation_fraction, (int, float)) and 0 <= validation_fraction < 1):
        raise ValueError(f"validation_fraction must be in [0, 1); got {validation_fraction!r}")
    excluded_ids = set(exclude)
    subject_sets = [_subjects(item, subject_of) for item in items]
    if any(not s for s in subject_sets):
        raise ValueError("an item has no subject (subject_of returned nothing)")
    ids = sorted(set().union(*subject_sets) - excluded_ids) if subject_sets else []
    n_val = 0 if validation_fraction == 0 or not ids else max(1, round(validation_fraction * len(ids)))
    if n_val >= len(ids) and n_val > 0:
        raise ValueError(f"{len(ids)} subject(s) cannot be split into training and {n_val} validation subject(s)")
    order = list(ids)
    random.Random(seed).shuffle(order)
    val_ids = set(order[:n_val])
    train, val = [], []
    dropped = excluded = 0
    for item, subjects in zip(items, subject_sets):
        if subjects & excluded_ids:
            excluded += 1
        elif subjects <= val_ids:
            val.append(item)
        elif not subjects & val_ids:
            train.append(item)
        else:
            dropped += 1
    what = (f"{len(items)} items of {len(ids)} subjects ({excluded} excluded, {dropped} spanning both sets, "
            f"{n_val} validation subjects)")
    if not train:
        raise ValueError(f"no training item left: {what}")
    if n_val and not val:
        raise ValueError(f"no validation item left: {what}; every validation subject's items involve a "
                         "training subject (raise the fraction or give single-subject items)")
    return SubjectSplit(train=train, validation=val, train_subjects=tuple(sorted(set(ids) - val_ids)),
                        validation_subjects=tuple(sorted(val_ids)), dropped=dropped, excluded=excluded)
