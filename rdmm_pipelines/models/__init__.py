"""Shooting models (ODE right-hand sides) and their states."""

from .shooting import LDDMM, RDMM, VSVF, ShootingModel
from .states import FlowState, GeodesicState, RegionalState

__all__ = ["VSVF", "LDDMM", "RDMM", "ShootingModel", "FlowState", "GeodesicState", "RegionalState"]
