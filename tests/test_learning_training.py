"""Training on real anatomy: subject-wise splits, augmentation, schedules, pairs per epoch, and the
default-matched network configuration."""

from __future__ import annotations

import math

import pytest
import torch

from rdmm_pipelines.config import ConfigError, KernelConfig, RegionalConfig, RegistrationConfig
from rdmm_pipelines.learning import NetworkConfig, TrainingConfig, synthetic_network_pairs, train
from rdmm_pipelines.learning.augment import AugmentRanges, affine_augment, augment_pairs, intensity_augment
from rdmm_pipelines.learning.setup import default_network_config
from rdmm_pipelines.learning.split import split_by_subject
from rdmm_pipelines.learning.training import epoch_order, learning_rate_at
from rdmm_pipelines.registration import kernel_sigmas
from rdmm_pipelines.spatial import Grid

# ----------------------------------------------------------------------------------- split

SUBJECTS = [f"s{i:02d}" for i in range(10)]
#: longitudinal items (one subject) and cross-subject items (two)
ITEMS = [(a,) for a in SUBJECTS] + [(a, b) for a in SUBJECTS for b in SUBJECTS if a != b]


def test_split_keeps_every_subject_on_one_side_and_drops_cross_set_items():
    split = split_by_subject(ITEMS, lambda it: it, 0.3, seed=4, exclude={"s00"})
    val, tr = set(split.validation_subjects), set(split.train_subjects)
    assert len(val) == 3 and not val & tr and "s00" not in val | tr and val | tr == set(SUBJECTS) - {"s00"}
    assert all(set(it) <= tr for it in split.train) and all(set(it) <= val for it in split.validation)
    n_train, n_val = len(tr), len(val)
    assert len(split.train) == n_train + n_train * (n_train - 1)
    assert len(split.validation) == n_val + n_val * (n_val - 1)
    assert split.dropped == 2 * n_train * n_val and split.excluded == 1 + 2 * 9
    assert split == split_by_subject(ITEMS, lambda it: it, 0.3, seed=4, exclude={"s00"})
    assert split.validation_subjects != split_by_subject(ITEMS, lambda it: it, 0.3, seed=5).validation_subjects
    single = split_by_subject(SUBJECTS, lambda s: s, 0.2, seed=0)  # a plain string is one subject
    assert len(single.validation) == 2 and single.dropped == 0


def test_split_errors_are_clear():
    with pytest.raises(ValueError, match="no validation item"):  # every item spans two subjects
        split_by_subject([("a", "b"), ("b", "c"), ("c", "a")], lambda it: it, 0.3, seed=0)
    with pytest.raises(ValueError, match="no training item"):
        split_by_subject([("a",)], lambda it: it, 0.0, seed=0, exclude={"a"})
    with pytest.raises(ValueError, match="cannot be split"):
        split_by_subject([("a",), ("b",)], lambda it: it, 0.9, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        split_by_subject(ITEMS, lambda it: it, 1.0, seed=0)
    assert split_by_subject(ITEMS, lambda it: it, 0.0, seed=0).validation == []

# ----------------------------------------------------------------------------------- augmentation


def _images(b: int, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(b, 1, *shape)
    inner = (slice(None), slice(None), *[slice(n // 4, 3 * n // 4) for n in shape])
    x[inner] = 0.3 + 0.7 * torch.rand(x[inner].shape, generator=g)
    return x


@pytest.mark.parametrize("shape", [(24, 40), (12, 16, 20)])
def test_augmentation_shapes_range_determinism_and_identity(shape):
    src, tgt = _images(3, shape), _images(3, shape).flip(-1)
    spacing = Grid.from_shape(shape, (0.5,) + (1.0,) * (len(shape) - 1)).domain_spacing

    def run(seed, affine=1.0, intensity=1.0):
        return augment_pairs(src, tgt, spacing, torch.Generator().manual_seed(seed), affine, intensity)

    a_src, a_tgt = run(7)
    assert a_src.shape == src.shape and a_tgt.shape == tgt.shape
    for x in (a_src, a_tgt):
        assert float(x.min()) >= 0 and float(x.max()) <= 1
    b_src, b_tgt = run(7)
    assert torch.equal(a_src, b_src) and torch.equal(a_tgt, b_tgt)
    c_src, _ = run(8)
    assert not torch.equal(a_src, c_src)
    z_src, z_tgt = run(7, 0.0, 0.0)
    assert torch.equal(z_src, src) and torch.equal(z_tgt, tgt)
    for affine, intensity in ((1.0, 0.0), (0.0, 1.0)):  # each part changes every image on its own
        x, _ = run(3, affine, intensity)
        assert all(float((x[i] - src[i]).abs().max()) > 1e-3 for i in range(3))
    # the images of a batch get different warps, and the source's differ from the target's
    same = _images(2, shape)
    s2, t2 = augment_pairs(same, same, spacing, torch.Generator().manual_seed(0), 1.0, 0.0)
    assert not torch.allclose(s2[0], s2[1]) and not torch.allclose(s2, t2)


def test_affine_augmentation_moves_the_image_by_the_drawn_amount():
    shape, spacing = (64, 64), Grid.from_shape((64, 64)).domain_spacing
    x = _images(8, shape)
    ranges = AugmentRanges(rotation_degrees=0, scale=0, shear=0, translation_voxels=3)
    y = affine_augment(x, spacing, torch.Generator().manual_seed(0), 1.0, ranges)
    ax = torch.arange(64.0)

    def centroid(img):
        w = img[0]
        return torch.stack([(w.sum(1) * ax).sum(), (w.sum(0) * ax).sum()]) / w.sum()

    shifts = torch.stack([centroid(y[i]) - centroid(x[i]) for i in range(8)])
    assert float(shifts.abs().max()) <= 3.05 and float(shifts.abs().max()) > 0.5
    with pytest.raises(ConfigError):
        AugmentRanges(scale=-0.1)


def test_intensity_augmentation_keeps_zero_and_one_ordered():
    x = torch.linspace(0, 1, 101).view(1, 1, 101, 1).expand(4, 1, 101, 4).contiguous()
    y = intensity_augment(x, torch.Generator().manual_seed(2), 2.0)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert bool((y[:, :, 1:] >= y[:, :, :-1]).all())  # monotone: the contrast's order is kept

# ----------------------------------------------------------------------------------- configuration


def test_training_config_new_fields_default_to_todays_behaviour_and_are_checked():
    cfg = TrainingConfig()
    assert (cfg.schedule, cfg.pairs_per_epoch, cfg.augment_affine, cfg.augment_intensity, cfg.warmup_epochs) == \
        ("step", 0, 0.0, 0.0, 0)
    assert TrainingConfig.from_dict(TrainingConfig(schedule="cosine", warmup_epochs=2).to_dict()).warmup_epochs == 2
    bad = [{"schedule": "linear"}, {"pairs_per_epoch": -1}, {"pairs_per_epoch": 2.5}, {"pairs_per_epoch": True},
           {"augment_affine": -0.1}, {"augment_intensity": math.nan}, {"augment_affine": 5.0},
           {"warmup_epochs": 1}, {"schedule": "cosine", "warmup_epochs": 20},
           {"schedule": "cosine", "warmup_epochs": -1}]
    for changes in bad:
        with pytest.raises(ConfigError, match="training"):
            TrainingConfig(**changes)
    with pytest.raises(ConfigError, match="unknown configuration key"):
        TrainingConfig.from_dict({"augment": 1.0})


def test_cosine_schedule_learning_rates():
    cfg = TrainingConfig(epochs=10, learning_rate=1e-3, schedule="cosine")
    lrs = [learning_rate_at(cfg, e) for e in range(10)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[4] + lrs[5] == pytest.approx(1e-3 + 1e-5)  # symmetric about the middle
    warm = cfg.replace(warmup_epochs=2)
    assert [learning_rate_at(warm, e) for e in range(3)] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    assert learning_rate_at(warm, 9) == pytest.approx(1e-5)
    step = TrainingConfig(learning_rate=1e-3, lr_step=3, lr_decay=0.5)
    assert [learning_rate_at(step, e) for e in (0, 2, 3, 6)] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])


def test_pairs_per_epoch_sampling():
    everything = TrainingConfig(seed=3)
    assert sorted(epoch_order(7, everything, 0)) == list(range(7))
    cfg = TrainingConfig(seed=3, pairs_per_epoch=3)
    orders = [epoch_order(7, cfg, e) for e in range(7)]
    assert all(len(o) == 3 for o in orders)
    flat = [i for o in orders for i in o]  # 21 draws = 3 full passes over the 7 pairs
    assert all(sorted(flat[7 * k:7 * k + 7]) == list(range(7)) for k in range(3))
    assert orders == [epoch_order(7, cfg, e) for e in range(7)]
    more = epoch_order(4, cfg.replace(pairs_per_epoch=10), 1)  # more than the pool: passes in turn
    assert len(more) == 10 and sorted(more[2:6]) == list(range(4))


def test_default_network_config_has_the_registration_kernel_of_its_grid():
    grid = Grid.from_shape((160, 384), (0.3646, 0.3646))
    cfg = default_network_config("rdmm", grid)
    rc = RegistrationConfig()
    assert cfg.kernel.sigmas == pytest.approx(kernel_sigmas(RegistrationConfig(model="rdmm"), grid))
    assert cfg.kernel.sigmas[0] > rc.kernel.sigmas[0]  # raised to 2 map voxels on this grid
    assert cfg.kernel.units == "domain" and cfg.kernel.weights == rc.kernel.weights
    assert cfg.kernel.min_voxels == rc.kernel.min_voxels and cfg.kernel.border == rc.kernel.border
    assert cfg.map_low_res_factor == rc.optimizer.map_low_res_factor == 0.5
    assert (cfg.similarity, cfg.regularity_weight, cfg.regional) == (rc.similarity, rc.regularity_weight, rc.regional)
    assert cfg.integrator.method == "rk4" and cfg.integrator.steps == rc.integrator.steps
    assert cfg.integrator.max_cfl == rc.integrator.max_cfl and cfg.image_shape == (160, 384)
    assert default_network_config("rdmm", (160, 384), 0.3646) == cfg  # a shape and a spacing do the same
    lddmm = default_network_config("lddmm", grid, inverse_consistency_weight=100.0)
    assert lddmm.model == "lddmm" and lddmm.kernel == cfg.kernel and lddmm.inverse_consistency_weight == 100.0
    # the network's equivalent registration keeps these sigmas (already above the floor)
    net_rc = RegistrationConfig(model="rdmm", kernel=cfg.kernel)
    assert kernel_sigmas(net_rc, grid) == pytest.approx(cfg.kernel.sigmas)

# ----------------------------------------------------------------------------------- training


def test_augmented_cosine_training_with_pairs_per_epoch_runs_and_resumes(tmp_path):
    pairs = synthetic_network_pairs(6, seed=5, size=32)
    net = NetworkConfig(model="rdmm", image_shape=(32, 32), features=(4, 8),
                        kernel=KernelConfig(sigmas=(0.1, 0.2), weights=(0.5, 0.5)),
                        regional=RegionalConfig(smoothing_sigma=0.1), inverse_consistency_weight=10.0)
    cfg = TrainingConfig(epochs=2, batch_size=2, learning_rate=2e-3, schedule="cosine", pairs_per_epoch=3,
                         augment_affine=1.0, augment_intensity=1.0, seed=1)
    first = train(net, cfg.replace(epochs=1), pairs[:4], tmp_path, validation=pairs[4:], progress=False, device="cpu")
    assert len(first.history) == 1 and math.isfinite(first.history[0]["val_dice"])
    resumed = train(net, cfg, pairs[:4], tmp_path, validation=pairs[4:], resume=True, progress=False, device="cpu")
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    # the learning rates follow the cosine over the 2 epochs of the resumed configuration
    assert [h["lr"] for h in resumed.history] == pytest.approx([2e-3, 2e-5])
    straight = train(net, cfg, pairs[:4], tmp_path / "straight", validation=pairs[4:], progress=False, device="cpu")
    # a resumed training is the uninterrupted one (same pairs, augmentation and learning rates)
    assert resumed.history[1]["train_total"] == pytest.approx(straight.history[1]["train_total"], rel=1e-5)
    assert resumed.history[1]["val_loss"] == pytest.approx(straight.history[1]["val_loss"], rel=1e-5)
