"""Go duration syntax, the way Dapr component metadata writes time spans.

>>> parse_duration("1m30s")
datetime.timedelta(seconds=90)
>>> format_duration(timedelta(milliseconds=500))
'500ms'

Upstream decodes with Go's ``time.ParseDuration`` and, if that fails, reads
the value as whole seconds, so ``"10"`` means ten seconds; we do the same.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from jsnb.errors import InvalidArgumentError

__all__ = ["MAX_SECONDS", "format_duration", "from_seconds", "parse_duration", "to_seconds"]

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign, accepted by Go
    "μs": 1e-6,  # U+03BC greek mu, accepted by Go
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# ASCII digits only, as Go reads them (Python's \d also matches other scripts' digits).
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)
_WHOLE = re.compile(r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+", re.ASCII)
_INT = re.compile(r"[+-]?\d+", re.ASCII)


# Go stores a duration as int64 nanoseconds: about 292 years either way.
MAX_SECONDS = (2**63 - 1) / 1e9


def from_seconds(seconds: float) -> timedelta:
    """A timedelta for *seconds*, refusing what a Go duration cannot hold (and NaN)."""
    if not math.isfinite(seconds) or abs(seconds) > MAX_SECONDS:
        raise InvalidArgumentError(
            f"{seconds!r} seconds is out of range: a duration holds at most about 292 years"
        )
    return timedelta(seconds=seconds)


def parse_duration(text: str) -> timedelta:
    """Parse Go duration syntax (``"1h2m3.5s"``, ``"500ms"``) or bare integer seconds.

    Raises ``ValueError`` with the accepted forms when *text* is neither.
    """
    s = text.strip()
    if s in ("", "0", "+0", "-0"):
        return timedelta(0)
    if _WHOLE.fullmatch(s):
        sign = -1.0 if s.startswith("-") else 1.0
        total = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _PART.findall(s))
        return from_seconds(sign * total)
    if _INT.fullmatch(s):
        return from_seconds(int(s))
    raise InvalidArgumentError(
        f"{text!r} is not a duration: use Go syntax such as '500ms', '10s', '1m30s' "
        "(units ns, us, ms, s, m, h) or whole seconds such as '10'"
    )


def format_duration(value: timedelta) -> str:
    """Write *value* in the shortest Go syntax that parses back to it exactly."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if micros < 1_000_000:
        if micros % 1000 == 0:
            return f"{sign}{micros // 1000}ms"
        return f"{sign}{micros}us"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    secs, frac = divmod(rest, 1_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs or frac:
        out += f"{secs}.{frac:06d}".rstrip("0") + "s" if frac else f"{secs}s"
    return out


def to_seconds(value: timedelta | None) -> float | None:
    """The float seconds nats-py's consumer config wants (``None`` stays unset)."""
    return None if value is None else value.total_seconds()
