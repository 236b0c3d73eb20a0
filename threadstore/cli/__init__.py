"""The ``threadstore`` command: list, read, follow, check, repair, export, import and back
up a store from the shell (``threadstore --help``; docs/cli.md).

It drives the public API only (``threadstore.open_store``), read-only for every read
command so that it works beside the process that owns the store.
"""

from ._app import EXIT_CODES, main

__all__ = ["EXIT_CODES", "main"]
