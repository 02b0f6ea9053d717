"""Stateless tensor functions: interpolation, finite differences, Gaussian filters.

This layer imports nothing else from :mod:`rdmm_pipelines`.
"""
