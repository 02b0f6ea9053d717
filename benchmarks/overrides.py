"""Dotted-key overrides of a configuration dictionary, shared by the benchmark scripts."""

from __future__ import annotations


def apply_overrides(cfg_dict: dict, overrides: dict) -> dict:
    """``cfg_dict`` (a ``RegistrationConfig.to_dict()``) with each ``"a.b.c": value`` set, in place."""
    for key, value in overrides.items():
        node = cfg_dict
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return cfg_dict
