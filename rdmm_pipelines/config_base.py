"""The configuration machinery: frozen dataclasses built strictly from plain dictionaries.

:class:`_Config` is the mixin of every configuration class (:mod:`rdmm_pipelines.config`,
:mod:`rdmm_pipelines.learning.config`): ``from_dict`` rejects unknown keys naming their path,
``to_dict`` and ``replace`` (validated like a new instance).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Mapping

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration value or key is invalid."""


class _Config:
    """Mixin: strict construction from plain dictionaries and conversion back."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], _path: str = "") -> Any:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{_path or cls.__name__}: expected a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            where = f"{_path}." if _path else ""
            raise ConfigError(
                f"unknown configuration key(s) {', '.join(where + k for k in unknown)}; "
                f"valid keys{' of ' + _path if _path else ''}: {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in data.items():
            sub = _nested_type(hints[name])
            path = f"{_path}.{name}" if _path else name
            if sub is not None and isinstance(value, Mapping):
                kwargs[name] = sub.from_dict(value, path)
            elif isinstance(value, list):
                kwargs[name] = _tuplify(value)
            else:
                kwargs[name] = value
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(f"{_path + ': ' if _path else ''}{err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (validated like a new instance)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _nested_type(hint: Any) -> type | None:
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and issubclass(t, _Config):
            return t
    return None


def _tuplify(value: Any) -> Any:
    return tuple(_tuplify(v) for v in value) if isinstance(value, (list, tuple)) else value


def _choice(name: str, value: Any, options: tuple) -> None:
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, options))}; got {value!r}")


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number; got {value!r}")
