"""What every settings dataclass of verify shares: dict round trips that name unknown keys."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class DictConf:
    """Mixin for frozen dataclasses: ``from_dict``, ``replace`` and ``to_dict``.

    A misspelt key in a config file must fail loudly with the list of valid
    ones rather than surface as a bare TypeError from the constructor.
    """

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**d)

    @classmethod
    def resolve(cls, conf, presets: Mapping[str, Any], default=None):
        """An instance from ``conf``: an instance, a preset name, a dict, or
        None for ``default`` (``cls()`` when not given)."""
        if conf is None:
            return cls() if default is None else default
        if isinstance(conf, cls):
            return conf
        if isinstance(conf, str):
            if conf not in presets:
                raise ValueError(f"unknown {cls.__name__} preset {conf!r}; presets: {', '.join(presets)}")
            return presets[conf]
        if isinstance(conf, Mapping):
            return cls.from_dict(conf)
        raise ValueError(f"conf must be a {cls.__name__}, a preset name or a dict, got {type(conf).__name__}")

    def replace(self, **changes):
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
