"""The RetryPolicy: when a failed upload is tried again, and whether it is worth it.

Backoff uses full jitter (a uniformly random wait below an exponential
ceiling) so many devices that lost the same server do not come back in step.
The clock value and the random source are parameters, never read here, so the
schedule is reproducible in tests and the retry state can live in the outbox
row (``retry_count``, ``next_retry_at``) and survive restarts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from acode_sync.config import RetryConfig
from acode_sync.errors import (
    BATCH_FAILED,
    INVALID_PAYLOAD,
    ConnectionFailed,
    PermanentError,
    TransientError,
)

Rand = Callable[[], float]
"""A random source returning a float in [0, 1), like ``random.random``."""


@dataclass(frozen=True)
class RetryDecision:
    """What to write back to an outbox row after a failure."""

    retry_count: int
    # None when exhausted: the item waits for an explicit `retry`, not a timer.
    next_retry_at: datetime | None
    exhausted: bool


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay_seconds: float = 1
    max_delay_seconds: float = 300

    def __post_init__(self) -> None:
        # The config loader checks these too; repeated here because a policy
        # built by hand with a zero base would retry in a hot loop.
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not self.base_delay_seconds > 0:
            raise ValueError(f"base_delay_seconds must be > 0, got {self.base_delay_seconds}")
        if not self.max_delay_seconds >= self.base_delay_seconds:
            raise ValueError(
                "max_delay_seconds must be >= base_delay_seconds, "
                f"got {self.max_delay_seconds} < {self.base_delay_seconds}"
            )

    @classmethod
    def from_config(cls, cfg: RetryConfig) -> RetryPolicy:
        return cls(
            max_attempts=cfg.max_attempts,
            base_delay_seconds=cfg.base_delay_seconds,
            max_delay_seconds=cfg.max_delay_seconds,
        )

    def ceiling(self, retry_count: int) -> float:
        """Upper bound of the wait: ``min(max_delay, base_delay * 2**retry_count)``."""
        if retry_count < 0:
            raise ValueError(f"retry_count must be >= 0, got {retry_count}")
        # Compare exponents instead of computing 2**retry_count: a large count
        # (a row failing for months, a corrupt column) would overflow a float.
        if retry_count >= math.log2(self.max_delay_seconds / self.base_delay_seconds):
            return float(self.max_delay_seconds)
        return float(self.base_delay_seconds * 2**retry_count)

    def delay(self, retry_count: int, rand: Rand) -> float:
        """Seconds to wait before the next attempt, full jitter: ``rand() * ceiling``."""
        return rand() * self.ceiling(retry_count)

    def after_failure(self, retry_count: int, now: datetime, rand: Rand) -> RetryDecision:
        """Decide the row's retry state after one more failure.

        ``retry_count`` is the count *before* this failure. The wait uses it
        (not the new count), so the first retry waits random(0, base), the
        second random(0, 2*base), the third random(0, 4*base) ..., capped at
        ``max_delay_seconds``. With ``max_attempts`` = 5, the 5th failure
        exhausts the item (ACODE-SYNC-004) and only ``retry`` re-queues it.
        """
        new_count = retry_count + 1
        if new_count >= self.max_attempts:
            return RetryDecision(retry_count=new_count, next_retry_at=None, exhausted=True)
        wait = timedelta(seconds=self.delay(retry_count, rand))
        return RetryDecision(retry_count=new_count, next_retry_at=now + wait, exhausted=False)


# SQLSTATE class 54 (program limit exceeded: statement too complex, index row
# too large, too many columns): psycopg files it under OperationalError, but it
# is caused by the data sent and fails the same way on every attempt.
_PERMANENT_SQLSTATE_CLASSES = ("54",)

# Checked after the transient rules. ProgrammingError also covers a schema the
# server lacks (UndefinedTable): that is a deployment bug, but the statement
# cannot succeed as sent, and retrying a batch for hours hides it.
_PERMANENT = (PermanentError, psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError)


def is_transient(exc: BaseException) -> bool:
    """True when the failure is worth retrying with backoff.

    Transient: our :class:`TransientError`; every ``psycopg.OperationalError``
    (in psycopg 3 that includes connection loss, AdminShutdown,
    CannotConnectNow, SerializationFailure, DeadlockDetected, QueryCanceled
    for a statement timeout and LockNotAvailable) except SQLSTATE class 54;
    and ``OSError`` (which covers ``ConnectionError`` and ``TimeoutError``).

    Permanent: our :class:`PermanentError`, ``psycopg.DataError``,
    ``IntegrityError`` and ``ProgrammingError``.

    Anything else is treated as transient: calling an unknown failure
    permanent would mark good items Failed for what is likely a bug in our code
    or an environment hiccup. Retrying is bounded anyway: after
    ``max_attempts`` the item stops with ACODE-SYNC-004 and stays visible.
    """
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, psycopg.OperationalError):
        return (exc.sqlstate or "")[:2] not in _PERMANENT_SQLSTATE_CLASSES
    if isinstance(exc, OSError):
        return True
    return not isinstance(exc, _PERMANENT)


def is_link(exc: BaseException) -> bool:
    """True when it was the link that failed (not the server, not the data)."""
    return isinstance(exc, ConnectionFailed | psycopg.OperationalError | OSError | TimeoutError)


def describe(exc: BaseException) -> str:
    """An upload failure as an item's error: its code, its kind, its first line."""
    if isinstance(exc, ConnectionFailed):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if is_link(exc):
        return f"{ConnectionFailed.code}: connection lost: {text}"
    if is_transient(exc):
        return f"{BATCH_FAILED}: batch failed: {text}"
    return f"{INVALID_PAYLOAD}: invalid payload: {text}"
