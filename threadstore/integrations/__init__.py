"""Drop-in session stores for agent SDKs, each behind an optional extra.

- :mod:`threadstore.integrations.openai_agents` (``pip install threadstore[openai-agents]``):
  ``ThreadstoreSession``, the OpenAI Agents SDK's ``Session`` protocol.
- :mod:`threadstore.integrations.adk` (``pip install threadstore[adk]``):
  ``ThreadstoreSessionService``, Google ADK's ``BaseSessionService``.

Importing :mod:`threadstore` never imports an SDK; importing an adapter without its SDK
raises ``ImportError`` naming the extra to install (:func:`require`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` (an SDK), or raise ``ImportError`` saying which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{module!r} is not installed: pip install 'threadstore[{extra}]'"
        ) from exc
