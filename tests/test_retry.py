"""Backoff policies (pure: no database)."""

from datetime import UTC, datetime, timedelta

import pytest

from asyncjobs.exceptions import ConfigurationError, Retry
from asyncjobs.retry import (
    MAX_DELAY,
    Exponential,
    Fixed,
    FromCallable,
    as_backoff,
    clamp_delay,
    from_json,
    next_run,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def linear(attempt):
    return attempt * 3


def endless(attempt):
    return float("inf")


@pytest.mark.parametrize("attempt", range(1, 30))
def test_exponential_full_jitter_bounds(attempt):
    policy = Exponential(base=timedelta(seconds=1), factor=2, cap=timedelta(minutes=10))
    ceiling = min(2 ** (attempt - 1), 600)
    for _ in range(50):
        delay = policy.delay(attempt).total_seconds()
        assert 0 <= delay <= ceiling


def test_exponential_without_jitter_is_exact_and_capped():
    policy = Exponential(base=2, factor=3, cap=100, jitter=False)
    assert [policy.delay(n).total_seconds() for n in (1, 2, 3, 4, 5, 500)] == [
        2,
        6,
        18,
        54,
        100,
        100,
    ]


def test_jitter_spreads_delays():
    policy = Exponential(base=timedelta(seconds=100), cap=timedelta(seconds=100))
    assert len({policy.delay(1) for _ in range(20)}) > 10


def test_fixed_and_callable():
    assert Fixed(7).delay(1) == Fixed(timedelta(seconds=7)).delay(9) == timedelta(seconds=7)
    policy = as_backoff(linear)
    assert policy == FromCallable("tests.test_retry.linear")
    assert policy.delay(4) == timedelta(seconds=12)
    assert next_run(policy, 2, now=NOW) == NOW + timedelta(seconds=6)


@pytest.mark.parametrize(
    "policy", [Exponential(), Exponential(base=5, factor=1.5, cap=60, jitter=False), Fixed(3)]
)
def test_json_round_trip(policy):
    assert from_json(policy.to_json()) == policy
    assert as_backoff(policy.to_json()) == policy


def test_invalid_policies():
    with pytest.raises(ConfigurationError):
        Exponential(factor=0.5)
    with pytest.raises(ConfigurationError):
        Fixed(-1)
    with pytest.raises(ConfigurationError, match="module-level"):
        as_backoff(lambda attempt: 1)
    with pytest.raises(ConfigurationError):
        as_backoff("nonsense")
    with pytest.raises(ConfigurationError, match="Unknown backoff"):
        from_json({"kind": "quadratic"})
    assert as_backoff(None) == Exponential()


def test_delays_past_a_year_wait_a_year():
    """``Retry(delay=10**12)`` overflowed ``now + delay`` and a delay of 1e20 s or infinity
    overflowed ``timedelta``: each now waits ``MAX_DELAY``, a year."""
    assert clamp_delay(timedelta(seconds=10**12)) == clamp_delay(timedelta.max) == MAX_DELAY
    assert clamp_delay(timedelta(seconds=-1)) == timedelta(0)
    assert Retry(delay=1e20).delay == Retry(delay=float("inf")).delay == timedelta.max
    with pytest.raises(OverflowError):
        Retry(delay=float("-inf"))
    assert FromCallable("tests.test_retry.endless").delay(1) == timedelta.max
    assert next_run(as_backoff(endless), 1, now=NOW) == NOW + MAX_DELAY
    assert next_run(Fixed(10**12), 1, now=NOW) == NOW + MAX_DELAY
