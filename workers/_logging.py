"""Logging for a library that is quiet unless the application asks.

A :class:`Logger` sends each event to structlog when the application has configured
structlog (``structlog.is_configured()``, decided per call, so configuring after import
works), and to the standard library's :mod:`logging` otherwise: to the stdlib logger named
after the emitting module, at the same level, with the event name and its fields (the bound
``structlog.contextvars`` first) rendered as ``key=value`` in the message. So an application
that configured nothing sees warnings and errors on stderr (Python's last-resort handler)
and never a line on stdout. A filtered-out event costs one ``is_configured()`` and one
``isEnabledFor()``.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["Logger", "get_logger"]

_render = structlog.processors.KeyValueRenderer(sort_keys=False)


class Logger:
    """structlog when the application configured it, the stdlib logger ``name`` otherwise.

    Sync level methods only (``debug``, ``info``, ``warning``, ``error``), each taking an
    event name and its fields as keyword arguments, as a structlog logger does.
    """

    __slots__ = ("_structlog", "name", "stdlib")

    def __init__(self, name: str) -> None:
        self.name = name
        #: Where events go while structlog is unconfigured.
        self.stdlib = logging.getLogger(name)
        self._structlog: Any = structlog.get_logger(name)

    def is_enabled_for(self, level: int) -> bool:
        """False only if an event at ``level`` would surely be dropped: structlog is not
        configured and the stdlib logger is not enabled for ``level``. (Configured, the
        application's processors decide, so this is True.) For a caller that would compute
        fields only such an event needs."""
        return structlog.is_configured() or self.stdlib.isEnabledFor(level)

    def debug(self, event: str, **fields: Any) -> None:
        if structlog.is_configured():
            self._structlog.debug(event, **fields)
        elif self.stdlib.isEnabledFor(logging.DEBUG):
            self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        if structlog.is_configured():
            self._structlog.info(event, **fields)
        elif self.stdlib.isEnabledFor(logging.INFO):
            self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        if structlog.is_configured():
            self._structlog.warning(event, **fields)
        elif self.stdlib.isEnabledFor(logging.WARNING):
            self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        if structlog.is_configured():
            self._structlog.error(event, **fields)
        elif self.stdlib.isEnabledFor(logging.ERROR):
            self._emit(logging.ERROR, event, fields)

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        context = structlog.contextvars.get_contextvars()
        if context:
            fields = {**context, **fields}  # an explicit field wins, as in merge_contextvars
        message = f"{event} {_render(None, '', fields)}" if fields else event
        # stacklevel: the record names the caller of debug()/info()/..., not this module.
        self.stdlib.log(level, message, stacklevel=3)


def get_logger(name: str) -> Logger:
    """A :class:`Logger` for the module ``name`` (pass ``__name__``)."""
    return Logger(name)
