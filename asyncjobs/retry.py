"""Backoff policies: when the next attempt of a failed job may run.

Pure functions of the attempt number and ``now``; nothing here touches the database. A policy
is stored on each job as JSON (``to_json``/``from_json``) so that a job keeps the policy it was
enqueued with, whatever the settings say later.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils.module_loading import import_string

from asyncjobs.conf import as_timedelta
from asyncjobs.exceptions import ConfigurationError

# A random source that is not seeded by task code that seeds the global one.
_random = random.SystemRandom()

# The longest wait before a retry, whatever a ``Retry`` or a backoff asks for. A year is
# far inside what every database stores and what arithmetic on ``run_after`` (adding the
# delay, leases, time-zone conversions) can do without an OverflowError near
# ``datetime.max`` (year 9999), where ``Retry(delay=10**12)`` landed; a retry further off is
# a mistake, and one scheduled a year ahead stays visible and can be cancelled or retried.
MAX_DELAY = timedelta(days=365)


def clamp_delay(delay: timedelta) -> timedelta:
    """``delay`` brought within ``[0, MAX_DELAY]``."""
    return min(max(delay, timedelta(0)), MAX_DELAY)


@dataclass(frozen=True, slots=True)
class Exponential:
    """Exponential backoff: ``base * factor ** (attempt - 1)``, capped at ``cap``.

    With ``jitter`` (the default) the delay is drawn uniformly from ``[0, that]`` ("full
    jitter"), which spreads out retries of jobs that failed together.

    Parameters:
        base: the delay before the second attempt, before jitter.
        factor: how much each further attempt multiplies the delay by.
        cap: the largest delay.
        jitter: draw the delay at random below the computed one.
    """

    base: timedelta = timedelta(seconds=2)
    factor: float = 2.0
    cap: timedelta = timedelta(hours=1)
    jitter: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", as_timedelta(self.base))
        object.__setattr__(self, "cap", as_timedelta(self.cap))
        if self.base < timedelta(0) or self.cap < timedelta(0) or self.factor < 1:
            raise ConfigurationError("Exponential needs base >= 0, cap >= 0 and factor >= 1.")

    def delay(self, attempt: int) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        cap = self.cap.total_seconds()
        # Compute in floats but stop growing at the cap so huge attempt numbers do not overflow.
        raw = self.base.total_seconds()
        for _ in range(max(attempt - 1, 0)):
            raw *= self.factor
            if raw >= cap:
                break
        ceiling = min(raw, cap)
        seconds = _random.uniform(0, ceiling) if self.jitter else ceiling
        return timedelta(seconds=seconds)

    def to_json(self) -> dict[str, Any]:
        """This policy as a JSON object."""
        return {
            "kind": "exponential",
            "base": self.base.total_seconds(),
            "factor": self.factor,
            "cap": self.cap.total_seconds(),
            "jitter": self.jitter,
        }


@dataclass(frozen=True, slots=True)
class Fixed:
    """The same wait before every retry.

    Parameters:
        every: the wait between attempts (``timedelta`` or seconds).
    """

    every: timedelta = timedelta(seconds=10)

    def __post_init__(self) -> None:
        value = as_timedelta(self.every)
        if value is None or value < timedelta(0):
            raise ConfigurationError("Fixed needs a wait >= 0.")
        object.__setattr__(self, "every", value)

    def delay(self, attempt: int) -> timedelta:
        """The wait after any failed attempt."""
        return self.every

    def to_json(self) -> dict[str, Any]:
        """This policy as a JSON object."""
        return {"kind": "fixed", "delay": self.every.total_seconds()}


@dataclass(frozen=True, slots=True)
class FromCallable:
    """A backoff computed by a module-level function ``f(attempt) -> timedelta | seconds``.

    The function is stored by its dotted path, so it must be importable by the worker.
    """

    path: str

    def delay(self, attempt: int) -> timedelta:
        """Call the function for the wait after failed attempt ``attempt``."""
        raw = import_string(self.path)(attempt)
        try:
            value = as_timedelta(raw)
        except OverflowError:  # past timedelta.max (or infinite): the longest wait
            value = timedelta.max if isinstance(raw, int | float) and raw > 0 else None
        if value is None or value < timedelta(0):
            raise ConfigurationError(f"Backoff {self.path} returned {raw!r}.")
        return value

    def to_json(self) -> dict[str, Any]:
        """This policy as a JSON object."""
        return {"kind": "callable", "path": self.path}


Backoff = Exponential | Fixed | FromCallable
DEFAULT_BACKOFF = Exponential()


def as_backoff(value: Backoff | Callable[[int], Any] | dict[str, Any] | None) -> Backoff:
    """Normalise what a user may pass as ``backoff`` into a policy object.

    Accepts a policy, a module-level callable, a stored JSON object, or ``None`` (the default).
    Raises ``ConfigurationError`` for anything else.
    """
    if value is None:
        return DEFAULT_BACKOFF
    if isinstance(value, Exponential | Fixed | FromCallable):
        return value
    if isinstance(value, dict):
        return from_json(value)
    if callable(value):
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", "")
        if not module or "<" in qualname:
            raise ConfigurationError("A backoff callable must be a module-level function.")
        return FromCallable(f"{module}.{qualname}")
    raise ConfigurationError(f"Invalid backoff: {value!r}.")


def from_json(data: dict[str, Any]) -> Backoff:
    """Rebuild a policy from ``to_json()`` output."""
    kind = data.get("kind")
    if kind == "exponential":
        return Exponential(
            base=timedelta(seconds=data["base"]),
            factor=data["factor"],
            cap=timedelta(seconds=data["cap"]),
            jitter=data["jitter"],
        )
    if kind == "fixed":
        return Fixed(timedelta(seconds=data["delay"]))
    if kind == "callable":
        return FromCallable(data["path"])
    raise ConfigurationError(f"Unknown backoff kind: {kind!r}.")


def next_run(policy: Backoff, attempt: int, *, now: datetime) -> datetime:
    """When the attempt after failed attempt number ``attempt`` may start (at most
    ``MAX_DELAY`` after ``now``)."""
    return now + clamp_delay(policy.delay(attempt))
