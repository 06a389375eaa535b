"""The RetryPolicy: backoff schedule, exhaustion and failure classification."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import psycopg
import psycopg.errors
import pytest

from acode_sync import errors
from acode_sync.config import RetryConfig
from acode_sync.retry import RetryDecision, RetryPolicy, is_transient

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ALMOST_ONE = 1.0 - 1e-9


def almost_one() -> float:
    return ALMOST_ONE


def half() -> float:
    return 0.5


def zero() -> float:
    return 0.0


def test_defaults_match_the_manual() -> None:
    assert RetryPolicy() == RetryPolicy(max_attempts=5, base_delay_seconds=1, max_delay_seconds=300)


def test_from_config_copies_every_field() -> None:
    cfg = RetryConfig(max_attempts=7, base_delay_seconds=0.5, max_delay_seconds=60)
    assert RetryPolicy.from_config(cfg) == RetryPolicy(7, 0.5, 60)


def test_ceiling_doubles_then_caps_at_max_delay() -> None:
    policy = RetryPolicy()
    assert [policy.ceiling(n) for n in range(11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]


def test_delay_with_fixed_rand_gives_exact_full_jitter_schedule() -> None:
    policy = RetryPolicy()
    top = [policy.delay(n, almost_one) for n in range(10)]
    expected = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert top == pytest.approx([e * ALMOST_ONE for e in expected], rel=0, abs=1e-6)
    assert all(d < e for d, e in zip(top, expected, strict=True))
    assert [policy.delay(n, half) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert policy.delay(3, zero) == 0.0


def test_delay_does_not_overflow_for_huge_retry_counts() -> None:
    policy = RetryPolicy()
    assert policy.delay(10_000, half) == 150.0
    assert policy.delay(10**18, half) == 150.0


def test_delay_respects_custom_base_and_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_seconds=0.25, max_delay_seconds=1)
    assert [policy.ceiling(n) for n in range(5)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_negative_retry_count_is_rejected() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().delay(-1, half)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay_seconds": 0},
        {"base_delay_seconds": -1},
        {"base_delay_seconds": 10, "max_delay_seconds": 5},
    ],
)
def test_invalid_policy_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_after_failure_schedules_from_now_with_growing_waits() -> None:
    policy = RetryPolicy()
    decisions = [policy.after_failure(count, NOW, half) for count in range(4)]
    assert decisions == [
        RetryDecision(1, NOW + timedelta(seconds=0.5), exhausted=False),
        RetryDecision(2, NOW + timedelta(seconds=1), exhausted=False),
        RetryDecision(3, NOW + timedelta(seconds=2), exhausted=False),
        RetryDecision(4, NOW + timedelta(seconds=4), exhausted=False),
    ]


def test_fifth_failure_exhausts_with_no_next_retry() -> None:
    policy = RetryPolicy(max_attempts=5)
    count = 0
    outcomes = []
    for _ in range(5):
        decision = policy.after_failure(count, NOW, almost_one)
        outcomes.append(decision.exhausted)
        count = decision.retry_count
    assert outcomes == [False, False, False, False, True]
    assert decision == RetryDecision(5, None, exhausted=True)


def test_single_attempt_policy_exhausts_on_first_failure() -> None:
    assert RetryPolicy(max_attempts=1).after_failure(0, NOW, half) == RetryDecision(1, None, True)


def test_after_failure_reads_no_clock_and_no_global_random() -> None:
    calls: list[int] = []

    def rand() -> float:
        calls.append(1)
        return 0.25

    later = NOW + timedelta(days=3)
    decision = RetryPolicy().after_failure(2, later, rand)
    assert decision.next_retry_at == later + timedelta(seconds=1)
    assert calls == [1]


@pytest.mark.parametrize(
    "exc",
    [
        errors.TransientError("link down"),
        errors.ConnectionFailed("cannot reach server"),
        psycopg.OperationalError("connection refused"),
        psycopg.errors.AdminShutdown(),
        psycopg.errors.CannotConnectNow(),
        psycopg.errors.SerializationFailure(),
        psycopg.errors.DeadlockDetected(),
        psycopg.errors.QueryCanceled(),
        psycopg.errors.LockNotAvailable(),
        psycopg.errors.TooManyConnections(),
        psycopg.errors.ConnectionTimeout(),
        TimeoutError(),
        ConnectionRefusedError(),
        ConnectionResetError(),
        socket.gaierror(-2, "Name or service not known"),
        OSError("network unreachable"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient_failures(exc: BaseException) -> None:
    assert is_transient(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        errors.PermanentError("bad item"),
        errors.InvalidPayload("payload is not an object"),
        psycopg.DataError("bad value"),
        psycopg.errors.InvalidTextRepresentation(),
        psycopg.errors.NumericValueOutOfRange(),
        psycopg.IntegrityError("violates constraint"),
        psycopg.errors.UniqueViolation(),
        psycopg.errors.ForeignKeyViolation(),
        psycopg.errors.CheckViolation(),
        psycopg.ProgrammingError("syntax"),
        psycopg.errors.UndefinedColumn(),
        psycopg.errors.ProgramLimitExceeded(),
        psycopg.errors.StatementTooComplex(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_failures(exc: BaseException) -> None:
    assert is_transient(exc) is False


@pytest.mark.parametrize(
    "exc",
    [RuntimeError("bug"), KeyError("x"), psycopg.InternalError(), errors.SyncError("?")],
    ids=lambda e: type(e).__name__,
)
def test_unknown_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc) is True


def test_psycopg_hierarchy_assumptions_hold() -> None:
    # The classification relies on these being OperationalError in psycopg 3.
    for cls in (
        psycopg.errors.SerializationFailure,
        psycopg.errors.DeadlockDetected,
        psycopg.errors.QueryCanceled,
        psycopg.errors.LockNotAvailable,
        psycopg.errors.AdminShutdown,
        psycopg.errors.CannotConnectNow,
    ):
        assert issubclass(cls, psycopg.OperationalError), cls
