"""Logging for a library that is quiet unless the application asks.

A :class:`Logger` sends each event to structlog when the application has configured
structlog (``structlog.is_configured()``, decided per call, so configuring after import
works), and to the standard library's :mod:`logging` otherwise: to the stdlib logger named
after the emitting module, at the same level, with the event name, its fields and the bound
``structlog.contextvars`` rendered as ``key=value`` in the message. So an application
that configured nothing sees warnings and errors on stderr (Python's last-resort handler)
and never a line on stdout. A filtered-out event costs one ``is_configured()`` and one
``isEnabledFor()``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import structlog

__all__ = ["LogMethod", "Logger", "get_logger"]

_render = structlog.processors.KeyValueRenderer(sort_keys=False)


class LogMethod(Protocol):
    """``log.debug`` and its siblings: an event name and its fields."""

    def __call__(self, event: str, /, **fields: Any) -> object: ...


class _Levels(Protocol):
    """What the library calls on a structlog logger."""

    debug: LogMethod
    info: LogMethod
    warning: LogMethod
    error: LogMethod


def _drop(event: str, /, **fields: Any) -> None:
    """What a filtered-out level returns while structlog is unconfigured."""


class Logger:
    """structlog when the application configured it, the stdlib logger ``name`` otherwise.

    Sync levels only: ``log.debug(event, **fields)``, ``info``, ``warning`` and ``error``,
    each an event name and its fields as keyword arguments, as with a structlog logger.
    """

    __slots__ = ("_structlog", "name", "stdlib")

    def __init__(self, name: str) -> None:
        self.name = name
        #: Where events go while structlog is unconfigured.
        self.stdlib = logging.getLogger(name)
        self._structlog: _Levels = structlog.get_logger(name)

    def is_enabled_for(self, level: int) -> bool:
        """False only if an event at ``level`` would surely be dropped: structlog is not
        configured and the stdlib logger is not enabled for ``level``. (Configured, the
        application's processors decide, so this is True.) For a caller that would compute
        fields only such an event needs."""
        return structlog.is_configured() or self.stdlib.isEnabledFor(level)

    # Each level is a property that returns the method to call, so that a configured app's
    # events reach structlog without a second call passing the fields on (which doubled
    # the overhead of a filtered-out debug event over calling structlog directly).

    @property
    def debug(self) -> LogMethod:
        if structlog.is_configured():
            return self._structlog.debug
        return self._debug if self.stdlib.isEnabledFor(logging.DEBUG) else _drop

    @property
    def info(self) -> LogMethod:
        if structlog.is_configured():
            return self._structlog.info
        return self._info if self.stdlib.isEnabledFor(logging.INFO) else _drop

    @property
    def warning(self) -> LogMethod:
        if structlog.is_configured():
            return self._structlog.warning
        return self._warning if self.stdlib.isEnabledFor(logging.WARNING) else _drop

    @property
    def error(self) -> LogMethod:
        if structlog.is_configured():
            return self._structlog.error
        return self._error if self.stdlib.isEnabledFor(logging.ERROR) else _drop

    def _debug(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def _info(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def _warning(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def _error(self, event: str, /, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        # The event's own fields first, then the bound contextvars it does not override.
        for key, value in structlog.contextvars.get_contextvars().items():
            fields.setdefault(key, value)
        message = f"{event} {_render(None, '', fields)}" if fields else event
        # stacklevel: the record names the caller of log.debug(...), not this module.
        self.stdlib.log(level, message, stacklevel=3)


def get_logger(name: str) -> Logger:
    """A :class:`Logger` for the module ``name`` (pass ``__name__``)."""
    return Logger(name)
