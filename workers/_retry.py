"""Retry policy: a pure schedule of bounded exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

__all__ = ["RetryPolicy", "always_retry"]


def always_retry(error: BaseException) -> bool:
    """The default predicate: every ``Exception`` from an apply is worth another attempt."""
    return True


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How often and how patiently a failed apply is tried again.

    ``attempts`` counts every try, the first included (``attempts=1`` never retries). The
    n-th retry waits ``min(max_delay, base_delay * 2**(n-1))`` scaled by a random factor in
    ``[1 - jitter, 1 + jitter]``. ``retryable(error)`` decides whether an error is worth
    another attempt; a non-retryable error fails the attempt for good at once.
    """

    attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    base_delay: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    max_delay: float = attrs.field(default=2.0, validator=attrs.validators.ge(0))
    jitter: float = attrs.field(
        default=0.2, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )
    retryable: Callable[[BaseException], bool] = always_retry

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt number ``attempt`` (1-based), which raised ``error``, gets another."""
        return attempt < self.attempts and self.retryable(error)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        if self.jitter:
            base *= rng.uniform(1 - self.jitter, 1 + self.jitter)
        return max(0.0, base)
