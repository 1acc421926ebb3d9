"""Restart policies as data, and the pure functions that apply them.

The intensity check and the next delay are pure functions of the restart
history (the times of earlier restarts), ``now`` and a random source, so they
are tested without a clock.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence

import attrs

__all__ = [
    "Backoff",
    "DEFAULT_RETRY",
    "GiveUp",
    "Restart",
    "RestartPolicy",
    "Strategy",
    "next_delay",
    "restarts_in_window",
    "may_restart",
]


class Restart(enum.Enum):
    """When a child is restarted (OTP restart types)."""

    PERMANENT = "permanent"
    """Always: after a crash and after a normal exit."""
    TRANSIENT = "transient"
    """Only after a crash."""
    TEMPORARY = "temporary"
    """Never."""


class Strategy(enum.Enum):
    """Which children restart when one crashes (OTP strategies)."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


@attrs.frozen(kw_only=True)
class Backoff:
    """Delay before retry ``k``: ``min(maximum, initial * multiplier**(k-1))``,
    times ``uniform(1 - jitter, 1 + jitter)``."""

    initial: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    maximum: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    jitter: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )

    def delay(self, k: int, rng: random.Random | None = None) -> float:
        """The delay before retry number ``k`` (1-based)."""
        base = min(self.maximum, self.initial * self.multiplier ** max(k - 1, 0))
        if self.jitter and base:
            base *= (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return base


class GiveUp(enum.Enum):
    """What happens to a session's backlog when its supervisor gives up."""

    ABANDON = "abandon"
    """Non-terminal inputs are abandoned (``STOPPED``), waiters resolved."""
    KEEP = "keep"
    """Queued inputs stay ``QUEUED`` (staged ones are requeued) and run when
    an executor is attached again."""


@attrs.frozen(kw_only=True)
class RestartPolicy:
    """How an executor loop is restarted: at most ``max_restarts`` restarts
    within any ``within`` seconds, each after its backoff delay.  When the
    policy gives up, the session goes to ``STOPPED`` and ``on_give_up``
    says what becomes of its backlog."""

    restart: Restart = Restart.PERMANENT
    max_restarts: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    within: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    backoff: Backoff = attrs.field(factory=Backoff)
    on_give_up: GiveUp = attrs.field(
        default=GiveUp.ABANDON, validator=attrs.validators.instance_of(GiveUp)
    )


DEFAULT_RETRY: Backoff = Backoff(initial=1.0, multiplier=2.0, maximum=60.0, jitter=0.2)
"""The default delay before the next turn after a failed run: agent turns
mostly fail on rate limits and outages, which an immediate retry only hits
again."""


def restarts_in_window(history: Sequence[float], now: float, within: float) -> int:
    """How many of the restart times in ``history`` fall in ``(now - within, now]``."""
    return sum(1 for t in history if now - within < t <= now)


def may_restart(policy: RestartPolicy, history: Sequence[float], now: float) -> bool:
    """Whether one more restart at ``now`` stays within the policy's intensity."""
    return restarts_in_window(history, now, policy.within) < policy.max_restarts


def next_delay(
    policy: RestartPolicy, history: Sequence[float], now: float, rng: random.Random | None = None
) -> float:
    """The backoff delay of the next restart at ``now``."""
    k = restarts_in_window(history, now, policy.within) + 1
    return policy.backoff.delay(k, rng)
