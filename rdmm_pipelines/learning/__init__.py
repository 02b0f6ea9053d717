"""Learnt registration (the paper's third family member): networks predict the initial momentum
(and RDMM's pre-weights), the shooting models of :mod:`rdmm_pipelines.models` do the rest.

* :class:`NetworkConfig`, :class:`TrainingConfig`: what a network is and how it is trained;
* :class:`RegistrationNetwork`: affine net -> momentum U-Net (+ pre-weight U-Net) -> shooting;
* :func:`train`: unsupervised training with validation, checkpoints and curves;
* :func:`load_checkpoint`, :func:`register_with_network`: use a trained network, optionally
  refined by instance optimisation (:class:`RefineConfig`).
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .config import NETWORK_MODELS, NetworkConfig, TrainingConfig, network_config
from .data import NetworkPair, load_pair, prepare_pair, synthetic_network_pairs
from .loss import RegistrationLoss
from .network import Prediction, RegistrationNetwork
from .predict import register_with_network
from .refine import RefineConfig
from .training import TrainingResult, train, validate

__all__ = [
    "NETWORK_MODELS",
    "Checkpoint",
    "CheckpointError",
    "NetworkConfig",
    "NetworkPair",
    "Prediction",
    "RefineConfig",
    "RegistrationLoss",
    "RegistrationNetwork",
    "TrainingConfig",
    "TrainingResult",
    "load_checkpoint",
    "load_pair",
    "network_config",
    "prepare_pair",
    "register_with_network",
    "save_checkpoint",
    "synthetic_network_pairs",
    "train",
    "validate",
]
