"""Numerical optimisation: pre-weight parametrisation, RDMM penalties, multi-scale L-BFGS."""
