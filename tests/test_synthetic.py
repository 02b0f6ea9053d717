"""Tests for rdmm_pipelines.synthetic: 2D paper-style pairs and the 3D lung-like phantom."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

from rdmm_pipelines.synthetic import SyntheticPair, make_pair_2d, make_pairs_2d, make_phantom_3d
from rdmm_pipelines.synthetic.shapes import dilate, ellipse_mask, erode, normalized_grid, triangle_mask

SHAPES_3D = [(48, 48, 48), (24, 24, 24), (32, 40, 24)]


@functools.lru_cache(maxsize=None)
def pair2d(seed: int, size: int) -> SyntheticPair:
    return make_pair_2d(seed, size)


@functools.lru_cache(maxsize=None)
def phantom(seed: int, shape: tuple[int, int, int]) -> SyntheticPair:
    return make_phantom_3d(seed, shape)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


FIELDS = ("source", "target", "source_labels", "target_labels", "source_regions", "target_regions")


def assert_identical(p: SyntheticPair, q: SyntheticPair) -> None:
    for f in FIELDS:
        assert torch.equal(getattr(p, f), getattr(q, f)), f
    assert p.spacing == q.spacing and p.name == q.name


def differs(p: SyntheticPair, q: SyntheticPair) -> bool:
    return not torch.equal(p.source, q.source) and not torch.equal(p.target, q.target)


def all_cases():
    return [("2d", 3, 200), ("2d", 4, 64), ("2d", 5, 48)] + [("3d", 1, s) for s in SHAPES_3D]


def get(kind: str, seed: int, size) -> SyntheticPair:
    return pair2d(seed, size) if kind == "2d" else phantom(seed, size)


# ----------------------------------------------------------------- structure, dtypes, ranges


@pytest.mark.parametrize("kind,seed,size", all_cases())
def test_shapes_dtypes_ranges(kind, seed, size):
    p = get(kind, seed, size)
    spatial = (size, size) if kind == "2d" else size
    for img in (p.source, p.target):
        assert img.shape == (1, *spatial) and img.dtype == torch.float32
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    for f in FIELDS[2:]:
        t = getattr(p, f)
        assert t.shape == spatial and t.dtype == torch.int64, f
    for reg in (p.source_regions, p.target_regions):
        assert set(np.unique(reg.numpy()).tolist()) == {0, 1}
    assert len(p.spacing) == len(spatial) and all(s > 0 for s in p.spacing)
    assert p.name.startswith("synth2d_s" if kind == "2d" else "phantom3d_s")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "other"  # frozen


@pytest.mark.parametrize("kind,seed,size", all_cases())
def test_labels_and_intensities_consistent(kind, seed, size):
    p = get(kind, seed, size)
    src_l, tgt_l = p.source_labels.numpy(), p.target_labels.numpy()
    src_i, tgt_i = p.source[0].numpy(), p.target[0].numpy()
    labels = sorted(set(np.unique(src_l)))
    assert labels == sorted(set(np.unique(tgt_l)))
    assert labels == list(range(len(labels)))  # 0..K, no gaps
    lut = {}
    for k in labels:
        vs, vt = np.unique(src_i[src_l == k]), np.unique(tgt_i[tgt_l == k])
        assert len(vs) == 1 and len(vt) == 1 and vs[0] == vt[0], k  # constant, same in s and t
        lut[k] = float(vs[0])
    assert lut[0] == 0.0
    values = [lut[k] for k in labels[1:]]
    assert len(set(values)) == len(values)  # distinct per object
    if kind == "2d":
        assert all(0.2 < v <= 1.0 for v in values)


def test_2d_object_layout():
    for seed, size in [(3, 200), (4, 64), (5, 48), (6, 200)]:
        p = pair2d(seed, size)
        for lab_t, reg_t in ((p.source_labels, p.source_regions), (p.target_labels, p.target_regions)):
            lab, reg = lab_t.numpy(), reg_t.numpy().astype(bool)
            n = int(lab.max())
            assert 4 <= n <= 8  # foreground + 2 inside + 1..5 outside
            assert np.array_equal(reg, np.isin(lab, [1, 2, 3]))  # region = foreground incl. inner
            for k in (2, 3):  # inner objects: inside the foreground, not touching its border
                m = lab == k
                assert m.any() and not np.any(dilate(m, 1) & ~reg)
            for k in range(4, n + 1):  # outer objects: outside the foreground, with a gap
                m = lab == k
                assert m.any() and not np.any(dilate(m, 1) & reg)
            border = np.ones_like(reg)
            border[1:-1, 1:-1] = False
            assert not np.any(lab[border])  # everything stays inside +-0.9


@pytest.mark.parametrize("shape", SHAPES_3D)
def test_3d_regions_and_motion(shape):
    p = phantom(1, shape)
    s_l, t_l = p.source_labels.numpy(), p.target_labels.numpy()
    for lab, reg in ((s_l, p.source_regions.numpy()), (t_l, p.target_regions.numpy())):
        assert np.array_equal(reg == 1, (lab == 1) | (lab >= 3))  # lung incl. inner structures
        assert (lab == 2).any() and (lab == 1).any() and lab.max() in (3, 4)
        for k in range(3, int(lab.max()) + 1):  # inner structures surrounded by lung
            assert not np.any(dilate(lab == k, 1) & ~(reg == 1))
        assert not np.any(dilate(reg == 1, 1) & (lab == 0))  # lung surrounded by body
    body_move = np.linalg.norm(centroid(s_l > 0) - centroid(t_l > 0))
    s_r, t_r = p.source_regions.numpy(), p.target_regions.numpy()
    lung_move = np.linalg.norm(centroid(s_r == 1) - centroid(t_r == 1))
    assert body_move <= 1.1
    assert lung_move >= 1.5 and lung_move > 1.5 * body_move
    lung_dice = dice(s_l == 1, t_l == 1)
    assert 0.2 < lung_dice < 0.95
    assert dice(s_l > 0, t_l > 0) > 0.9  # the body barely moves


# ----------------------------------------------------------------- determinism and seeds


def test_determinism_and_seeds_2d():
    assert_identical(make_pair_2d(3, 200), pair2d(3, 200))
    assert_identical(make_pair_2d(4, 64), pair2d(4, 64))
    pairs = [pair2d(s, 64) for s in range(4)]
    assert all(differs(pairs[i], pairs[j]) for i in range(4) for j in range(i + 1, 4))
    assert pair2d(3, 200).name == "synth2d_s0003"


def test_make_pairs_2d_streams():
    pairs = make_pairs_2d(4, seed=7, size=48)
    assert len(pairs) == 4 and len({p.name for p in pairs}) == 4
    assert all(differs(pairs[i], pairs[j]) for i in range(4) for j in range(i + 1, 4))
    again = make_pairs_2d(2, seed=7, size=48)  # pair i depends on (seed, i) only
    assert_identical(again[0], pairs[0])
    assert_identical(again[1], pairs[1])
    assert differs(make_pairs_2d(1, seed=8, size=48)[0], pairs[0])
    assert make_pairs_2d(0, seed=1, size=48) == []


def test_determinism_and_seeds_3d():
    assert_identical(make_phantom_3d(1, (24, 24, 24)), phantom(1, (24, 24, 24)))
    assert differs(make_phantom_3d(2, (24, 24, 24)), phantom(1, (24, 24, 24)))
    p = phantom(1, (48, 48, 48))
    assert p.name == "phantom3d_s0001" and p.spacing == (1.5, 1.5, 1.5)


# ----------------------------------------------------------------- registration difficulty


@pytest.mark.parametrize("size", [200, 64])
def test_2d_unregistered_dice(size):
    for seed in range(3, 7):
        p = pair2d(seed, size)
        s_l, t_l = p.source_labels.numpy(), p.target_labels.numpy()
        scores = [dice(s_l == k, t_l == k) for k in range(1, int(s_l.max()) + 1)]
        assert 0.2 < float(np.mean(scores)) < 0.95, (seed, scores)
        assert min(scores) < 0.95  # something to register
        assert dice(p.source_regions.numpy() == 1, p.target_regions.numpy() == 1) < 0.99


# ----------------------------------------------------------------- primitives and arguments


def test_primitives():
    grid = normalized_grid((200, 200))
    pix = (2.0 / 200) ** 2
    area = ellipse_mask(grid, (0.1, -0.1), (0.5, 0.3), 0.4).sum() * pix
    assert area == pytest.approx(np.pi * 0.5 * 0.3, rel=0.02)
    area = triangle_mask(grid, (0.0, 0.0), (0.4, 0.3), -0.7).sum() * pix
    assert area == pytest.approx(2 * 0.4 * 0.3, rel=0.03)
    m = np.zeros((9, 9), dtype=bool)
    m[4, 4] = True
    assert dilate(m, 2).sum() == 25 and np.array_equal(erode(dilate(m, 2), 2), m)


@pytest.mark.parametrize(
    "call",
    [
        lambda: make_pair_2d(0, size=31),
        lambda: make_pair_2d(-1),
        lambda: make_pair_2d(0, size=64.5),
        lambda: make_pairs_2d(-2, seed=0, size=64),
        lambda: make_pairs_2d(2, seed=0, size=16),
        lambda: make_phantom_3d(0, (32, 32)),
        lambda: make_phantom_3d(0, (32, 32, 32, 32)),
        lambda: make_phantom_3d(0, (8, 32, 32)),
        lambda: make_phantom_3d(0, (32.5, 32, 32)),
        lambda: make_phantom_3d(-3),
    ],
)
def test_bad_arguments(call):
    with pytest.raises(ValueError):
        call()
