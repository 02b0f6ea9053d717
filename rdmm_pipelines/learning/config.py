"""Configuration of a learnt registration network and of its training (frozen, strict).

A :class:`NetworkConfig` fixes everything a trained network's weights depend on (the shooting
model, its kernel, the input size, the architecture); it travels inside every checkpoint, so a
checkpoint rebuilds its own network. A :class:`TrainingConfig` holds what only training uses.
Sigmas and smoothing widths are in domain units (the longest side of the image = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import IntegratorConfig, KernelConfig, RegionalConfig, SimilarityConfig
from ..config_base import ConfigError, _choice, _Config, _positive

__all__ = ["COSINE_FLOOR", "NETWORK_MODELS", "SCHEDULES", "NetworkConfig", "TrainingConfig", "network_config"]

#: the shooting models a network can drive
NETWORK_MODELS = ("vsvf", "lddmm", "rdmm")
#: learning-rate schedules of TrainingConfig.schedule
SCHEDULES = ("step", "cosine")
#: the "cosine" schedule ends at this fraction of the learning rate
COSINE_FLOOR = 0.01


@dataclass(frozen=True)
class NetworkConfig(_Config):
    """A learnt registration network: affine net (optional) -> momentum U-Net (+ pre-weight U-Net
    for RDMM) -> shooting at ``map_low_res_factor`` of the image resolution.

    Attributes:
        model: "vsvf", "lddmm" or "rdmm" (the network predicts m0, and h0 for RDMM).
        image_shape: the spatial size (2 or 3 axes) the network takes; every axis a multiple of
            2 ** levels. Images of another size are refused (or resampled on request).
        channels: image channels (1 for a grey-level image).
        features: feature channels of the U-Nets per level, finest first (its length is the
            number of levels + 1: ``levels = len(features) - 1`` poolings).
        map_low_res_factor: 1.0 (shoot at full resolution) or 0.5 (the U-Nets' outputs, the
            momentum and the map at half resolution, the map upsampled for the similarity).
        affine_steps: steps of the multi-step affine network (0: no affine network; images are
            taken as affinely aligned).
        refine_steps: iterations of the deformable part: step k sees the source warped by the map
            of step k-1 and its map is composed after it (1 = a single prediction).
        kernel, regional, integrator, similarity: as for optimisation (RegistrationConfig).
        regularity_weight: weight of 1/2 <m0, K m0>.
        inverse_consistency_weight: weight of mean |phi_st o phi_ts - id|^2 (domain units, mean over
            voxels and axes) on bidirectional batches (0 disables; the authors' 500 in [-1, 1]
            coordinates is 2000 here).
        affine_similarity_weight: weight of the affine stage's own similarity, which lets the
            affine network learn global alignment rather than leave it to the deformation.
        momentum_clamp: the momentum is c tanh(u / c) of the U-Net's output u, so |m0| < c (domain
            units; None: unbounded). The authors clamp RDMM's momentum to +-1; a bound keeps an
            early, too-large prediction from blowing up the shooting (measured: LDDMM-net at
            learning rate 2e-3 hit a non-finite loss in epoch 3 without one).
    """

    model: str = "rdmm"
    image_shape: tuple[int, ...] = (96, 96)
    channels: int = 1
    features: tuple[int, ...] = (16, 32, 32, 64)
    map_low_res_factor: float = 0.5
    affine_steps: int = 0
    refine_steps: int = 1
    kernel: KernelConfig = field(default_factory=lambda: KernelConfig(
        sigmas=(0.02, 0.04, 0.06, 0.08), weights=(0.1, 0.3, 0.3, 0.3)))
    regional: RegionalConfig = field(default_factory=RegionalConfig)
    integrator: IntegratorConfig = field(default_factory=lambda: IntegratorConfig(method="rk4", steps=5))
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)
    regularity_weight: float = 20.0
    inverse_consistency_weight: float = 0.0
    affine_similarity_weight: float = 1.0
    momentum_clamp: float | None = 2.0

    def __post_init__(self) -> None:
        _choice("model", self.model, NETWORK_MODELS)
        if self.momentum_clamp is not None:
            _positive("momentum_clamp", self.momentum_clamp)
        if self.kernel.units != "domain":
            raise ConfigError("a network's kernel sigmas must be in domain units (kernel.units = 'domain')")
        if self.model == "rdmm" and self.regional.source != "optimized":
            raise ConfigError("a network predicts RDMM's pre-weights: regional.source must be 'optimized' "
                              "(a pre-defined regulariser needs no pre-weight network)")
        shape = self.image_shape
        if (not isinstance(shape, tuple) or len(shape) not in (2, 3)
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 8 for n in shape)):
            raise ConfigError(f"image_shape must be 2 or 3 integers >= 8; got {shape!r}")
        if (not isinstance(self.features, tuple) or len(self.features) < 2
                or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in self.features)):
            raise ConfigError(f"features must be at least two positive integers; got {self.features!r}")
        multiple = 2 ** self.levels
        if any(n % multiple for n in shape):
            raise ConfigError(
                f"every axis of image_shape {shape} must be a multiple of {multiple} "
                f"(2 ** {self.levels} poolings of features {self.features})")
        if self.map_low_res_factor not in (0.5, 1.0):
            raise ConfigError(f"map_low_res_factor must be 0.5 or 1.0; got {self.map_low_res_factor!r}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or self.channels < 1:
            raise ConfigError(f"channels must be a positive integer; got {self.channels!r}")
        for name in ("affine_steps", "refine_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative integer; got {value!r}")
        if self.refine_steps < 1:
            raise ConfigError("refine_steps must be at least 1")
        _positive("regularity_weight", self.regularity_weight)
        _positive("inverse_consistency_weight", self.inverse_consistency_weight, allow_zero=True)
        _positive("affine_similarity_weight", self.affine_similarity_weight, allow_zero=True)

    @property
    def ndim(self) -> int:
        return len(self.image_shape)

    @property
    def levels(self) -> int:
        """Number of poolings of the U-Nets."""
        return len(self.features) - 1

    @property
    def map_shape(self) -> tuple[int, ...]:
        """Spatial size of the momentum, the pre-weights and the shot map."""
        return tuple(round(n * self.map_low_res_factor) for n in self.image_shape)


@dataclass(frozen=True)
class TrainingConfig(_Config):
    """How a network is trained (Adam, as the authors).

    Attributes:
        epochs: passes over the training pairs.
        batch_size: pairs per optimiser step (each pair also runs reversed when the network's
            inverse-consistency weight is > 0).
        learning_rate: Adam's step size at the start (after the warm-up).
        schedule: how the learning rate changes from epoch to epoch: "step" (multiply it by
            ``lr_decay`` every ``lr_step`` epochs) or "cosine" (from ``learning_rate`` down to
            ``COSINE_FLOOR`` (1 %) of it in the last epoch along half a cosine; with
            ``warmup_epochs`` w > 0, epochs 1..w first rise linearly, epoch k at k / (w + 1) of it).
            Raising ``epochs`` on resume stretches the cosine over the new number of epochs.
        lr_decay, lr_step: the "step" schedule's factor and period.
        warmup_epochs: linear warm-up epochs of the "cosine" schedule (0: none; 1-2 helps a
            network whose first large steps would blow up the shooting).
        validation_fraction: share of the pairs held out for validation when no separate
            validation set is given (at least one pair when > 0).
        seed: seeds the weights' initialisation, the order of the pairs and the augmentation.
        clip_gradient: clip the gradient norm to this (0 disables).
        threads: CPU threads for torch (0: leave torch's default).
        pairs_per_epoch: 0: every training pair once per epoch; N > 0: N pairs per epoch, taken
            in turn from a seeded sequence of shuffles of the pool (every pair once before any
            repeats), so a large pool trains in epochs of bounded length.
        augment_affine: strength of the random affine warp of each training image (source and
            target independently; 1 = up to 5 degrees, +-5 % scale, 0.05 shear, 4 voxels:
            :mod:`rdmm_pipelines.learning.augment`); 0 disables it. Validation is never augmented.
        augment_intensity: strength of the random gamma / scale / shift of each training image
            (1 = gamma in [0.74, 1.35], scale +-10 %, shift +-0.05); 0 disables it.
    """

    epochs: int = 20
    batch_size: int = 1
    learning_rate: float = 1e-3
    lr_decay: float = 0.5
    lr_step: int = 60
    validation_fraction: float = 0.2
    seed: int = 0
    clip_gradient: float = 10.0
    threads: int = 0
    schedule: str = "step"
    warmup_epochs: int = 0
    pairs_per_epoch: int = 0
    augment_affine: float = 0.0
    augment_intensity: float = 0.0

    def __post_init__(self) -> None:
        _choice("training.schedule", self.schedule, SCHEDULES)
        for name in ("warmup_epochs", "pairs_per_epoch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"training.{name} must be a non-negative integer; got {value!r}")
        if self.warmup_epochs and self.schedule != "cosine":
            raise ConfigError("training.warmup_epochs needs the cosine schedule (training.schedule = 'cosine')")
        if isinstance(self.epochs, int) and self.warmup_epochs >= self.epochs > 0:
            raise ConfigError(
                f"training.warmup_epochs ({self.warmup_epochs}) must be fewer than the epochs ({self.epochs})")
        for name in ("augment_affine", "augment_intensity"):
            value = getattr(self, name)
            _positive(f"training.{name}", value, allow_zero=True)
            if value > 4:
                raise ConfigError(f"training.{name} must be at most 4 (4 times the ranges of "
                                  f"rdmm_pipelines.learning.augment.AugmentRanges); got {value!r}")
        for name in ("epochs", "batch_size", "lr_step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"training.{name} must be a positive integer; got {value!r}")
        _positive("training.learning_rate", self.learning_rate)
        if not (isinstance(self.lr_decay, (int, float)) and 0 < self.lr_decay <= 1):
            raise ConfigError(f"training.lr_decay must be in (0, 1]; got {self.lr_decay!r}")
        if not (isinstance(self.validation_fraction, (int, float)) and 0 <= self.validation_fraction < 1
                and math.isfinite(self.validation_fraction)):
            raise ConfigError(f"training.validation_fraction must be in [0, 1); got {self.validation_fraction!r}")
        _positive("training.clip_gradient", self.clip_gradient, allow_zero=True)
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"training.threads must be a non-negative integer; got {self.threads!r}")


def network_config(model: str, image_shape: tuple[int, ...], **changes) -> NetworkConfig:
    """The default network of ``model`` for images of ``image_shape`` (the paper's optimised-RDMM
    kernel; vSVF and LDDMM use the same sigmas with the initial weights fixed)."""
    return NetworkConfig(model=model, image_shape=tuple(int(n) for n in image_shape), **changes)
