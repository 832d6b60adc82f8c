"""What every maintenance service is: a name, an interval, and ``run(now=...)``."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

# A service that stopped at one of its limits with work left (see ``Done.again_after``) runs
# again after this long instead of a whole interval, so that a crash leaving many jobs
# behind, or thousands of jobs finishing each second, do not outrun rescue and retention.
AGAIN_AFTER = timedelta(seconds=1)


@dataclass
class Done:
    """What one run of a service did: counts by name (``{"rescued": 3}``), and when to run
    it again if sooner or later than its interval (None: after its interval)."""

    counts: dict[str, int] = field(default_factory=dict)
    again_after: timedelta | None = None


class Service(Protocol):
    """A maintenance service. ``locked`` ones run only in the worker holding the cluster-wide
    maintenance lock (``ClaimStrategy.maintenance_lock``); the others in every worker."""

    name: str
    locked: bool

    @property
    def interval(self) -> timedelta:
        """The time between runs (jittered by the loop), unless a run says otherwise."""

    def run(self, *, now: datetime) -> Done:
        """Do one round of the service's work as of ``now``."""
