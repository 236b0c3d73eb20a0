"""workers: a generic keyed actor pool for trio.

Per key, mergeable pending work is applied by one actor at a time; generation barriers let
callers wait until work through a point is applied. Knows nothing of what the work is.
"""

from ._errors import PoolClosedError, WorkDiscardedError, WorkersError, WorkFailedError
from ._logging import Logger, get_logger
from ._pool import ActorPool, PoolStatistics, ShutdownReport, open_pool
from ._retry import RetryPolicy, always_retry
from ._slot import Mergeable

__all__ = [
    "ActorPool",
    "Logger",
    "Mergeable",
    "PoolClosedError",
    "PoolStatistics",
    "RetryPolicy",
    "ShutdownReport",
    "WorkDiscardedError",
    "WorkFailedError",
    "WorkersError",
    "always_retry",
    "get_logger",
    "open_pool",
]
