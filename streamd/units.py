"""Durations ("500ms", "5m", "30d") and sizes (bytes or "100MiB") as config values."""

from __future__ import annotations

import re
from typing import Final

_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

_SIZE_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS: Final = {
    None: 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}


class Duration:
    """A non-negative span of time, kept in seconds, written as "500ms", "5m", "30d"."""

    __slots__ = ("seconds",)
    seconds: float

    def __init__(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a duration cannot be negative")
        self.seconds = float(seconds)

    @classmethod
    def parse(cls, value: object) -> Duration:
        if isinstance(value, Duration):
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise TypeError(f"expected a duration like \"500ms\" or \"5m\", got {type(value).__name__}")
        if isinstance(value, (int, float)):
            return cls(float(value))
        m = _DURATION_RE.match(value)
        if not m:
            raise ValueError(
                f"invalid duration {value!r}: use a number and a unit (ms, s, m, h, d, w), e.g. \"5m\""
            )
        return cls(float(m.group(1)) * _DURATION_UNITS[m.group(2)])

    def __str__(self) -> str:
        s = self.seconds
        for unit in ("w", "d", "h", "m", "s"):
            factor = _DURATION_UNITS[unit]
            if s >= factor and (s / factor).is_integer():
                return f"{int(s / factor)}{unit}"
        return f"{round(s * 1000, 3):g}ms"

    def __repr__(self) -> str:
        return f"Duration({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash(self.seconds)


class Size:
    """A number of bytes, written as 1048576 or "1MiB"."""

    __slots__ = ("bytes",)
    bytes: int

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError("a size cannot be negative")
        self.bytes = int(n)

    @classmethod
    def parse(cls, value: object) -> Size:
        if isinstance(value, Size):
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise TypeError(f"expected a size like 1048576 or \"100MiB\", got {type(value).__name__}")
        if isinstance(value, int):
            return cls(value)
        m = _SIZE_RE.match(value)
        if not m:
            raise ValueError(f"invalid size {value!r}: use bytes or a unit (KiB, MiB, GiB, KB, MB, GB)")
        return cls(int(float(m.group(1)) * _SIZE_UNITS[m.group(2)]))

    def __str__(self) -> str:
        for unit in ("TiB", "GiB", "MiB", "KiB"):
            if self.bytes >= _SIZE_UNITS[unit] and self.bytes % _SIZE_UNITS[unit] == 0:
                return f"{self.bytes // _SIZE_UNITS[unit]}{unit}"
        return str(self.bytes)

    def __repr__(self) -> str:
        return f"Size({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Size) and other.bytes == self.bytes

    def __hash__(self) -> int:
        return hash(self.bytes)
