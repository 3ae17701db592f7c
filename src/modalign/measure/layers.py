"""A selection of decoder layers, as the `--layers` flag and config files write it ('1-8,12')."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modalign.errors import ConfigError

__all__ = ["Layers", "parse_layers"]


class Layers(tuple):
    """Decoder layer indices, in the order given (a tuple of ints).

    Settings fields of this type read '1-4,8' from a flag or a config file, or a list of ints
    from JSON; 'all' (or an empty spec) means every layer, which settings hold as None.

    >>> Layers.coerce("1-3,8"), Layers.coerce([2, 4]), Layers.coerce("all")
    ((1, 2, 3, 8), (2, 4), None)
    """

    @classmethod
    def coerce(cls, value: Any) -> Layers | None:
        if value is None:
            return None
        if isinstance(value, str):
            parsed = parse_layers(value)
            return None if parsed is None else cls(parsed)
        if isinstance(value, Sequence) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            return cls(value)
        raise ConfigError(f"--layers: {value!r} is not a layer selection (use e.g. 1-8,12)")


def parse_layers(spec: str | None) -> list[int] | None:
    """'1-4,8' -> [1, 2, 3, 4, 8]; None/'all' -> None (every decoder layer).

    >>> parse_layers("1-4,8"), parse_layers("all")
    ([1, 2, 3, 4, 8], None)
    """
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ConfigError(f"--layers: cannot parse {part!r} (use e.g. 1-8,12)") from None
    return out
