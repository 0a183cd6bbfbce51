"""Time on the wire and in the warehouse: one way to write each.

- Messages carry RFC 3339 UTC times with a ``Z`` (``rfc3339``), parsed back by ``parse_rfc3339``.
- ClickHouse ``DateTime64`` literals are UTC ``YYYY-MM-DD hh:mm:ss.fff`` (``ch_time``), read
  back by ``parse_ch_time``.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def rfc3339(ts: datetime | float | None = None, timespec: str = "milliseconds") -> str:
    """An aware datetime (or epoch seconds; now when None) as RFC 3339 UTC with 'Z'."""
    if ts is None:
        ts = utcnow()
    elif not isinstance(ts, datetime):
        ts = datetime.fromtimestamp(ts, timezone.utc)
    return ts.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def ch_time(ts: datetime | float | None = None, digits: int = 3) -> str:
    """A ClickHouse DateTime64 literal in UTC with ``digits`` fractional digits (0, 3 or 6)."""
    if ts is None:
        ts = utcnow()
    elif not isinstance(ts, datetime):
        ts = datetime.fromtimestamp(ts, timezone.utc)
    text = ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[:19] if digits == 0 else text[: 20 + digits]


def parse_ch_time(value: str) -> datetime:
    """A DateTime64 string as ClickHouse returns it (UTC) to an aware datetime."""
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
