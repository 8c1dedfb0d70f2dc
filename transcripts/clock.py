"""Timestamps are stored as naive UTC (TIMESTAMP), so no time-zone extension or tz database is needed to read them."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
