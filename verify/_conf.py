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

    def replace(self, **changes):
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
