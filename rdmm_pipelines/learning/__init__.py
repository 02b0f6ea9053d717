"""Learnt registration (the paper's third family member): networks predict the initial momentum
(and RDMM's pre-weights), the shooting models of :mod:`rdmm_pipelines.models` do the rest.

* :class:`NetworkConfig`, :class:`TrainingConfig`: what a network is and how it is trained;
* :class:`RegistrationNetwork`: affine net -> momentum U-Net (+ pre-weight U-Net) -> shooting;
* :func:`train`: unsupervised training with validation, checkpoints and curves (optionally
  augmented batches, a cosine schedule, a bounded number of pairs per epoch);
* :func:`split_by_subject`, :func:`default_network_config`: subject-wise splits, and a network
  whose kernel is that of ``register()`` at the defaults on a grid;
* :func:`load_checkpoint`, :func:`register_with_network`: use a trained network, optionally
  refined by instance optimisation (:class:`RefineConfig`).
"""

from .augment import AugmentRanges, augment_pairs
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .config import NETWORK_MODELS, NetworkConfig, TrainingConfig, network_config
from .data import NetworkPair, load_pair, prepare_pair, synthetic_network_pairs
from .loss import RegistrationLoss
from .network import Prediction, RegistrationNetwork
from .predict import register_with_network
from .refine import RefineConfig
from .setup import default_network_config
from .split import SubjectSplit, split_by_subject
from .training import TrainingResult, epoch_order, learning_rate_at, train, validate

__all__ = [
    "NETWORK_MODELS",
    "AugmentRanges",
    "Checkpoint",
    "CheckpointError",
    "NetworkConfig",
    "NetworkPair",
    "Prediction",
    "RefineConfig",
    "RegistrationLoss",
    "RegistrationNetwork",
    "SubjectSplit",
    "TrainingConfig",
    "TrainingResult",
    "augment_pairs",
    "default_network_config",
    "epoch_order",
    "learning_rate_at",
    "load_checkpoint",
    "load_pair",
    "network_config",
    "prepare_pair",
    "register_with_network",
    "save_checkpoint",
    "split_by_subject",
    "synthetic_network_pairs",
    "train",
    "validate",
]
