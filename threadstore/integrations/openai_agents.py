"""The OpenAI Agents SDK's ``Session`` protocol on threadstore: a drop-in for ``SQLiteSession``.

.. code-block:: python

    from threadstore.integrations.openai_agents import ThreadstoreSession

    session = ThreadstoreSession("user-123", "threads.db")  # was SQLiteSession(...)
    result = await Runner.run(agent, "Hello", session=session)
    session.close()

Needs the ``openai-agents`` extra (``pip install 'threadstore[openai-agents]'``); importing
:mod:`threadstore` never imports the SDK.

**Semantics** are ``SQLiteSession``'s: items come back in insertion order exactly as given
(a JSON round trip); ``get_items(limit)`` (or ``session_settings.limit``) returns the newest
N in order, ``0`` none, a negative limit all; ``pop_item`` removes and returns the newest
item (``None`` when empty); ``clear_session`` empties the session; sessions on one path are
isolated by id. A closed session raises ``RuntimeError``.

**Where things live.** A session is the thread whose id is the session id (an id threadstore
cannot take, e.g. longer than 128 characters, becomes ``sha256-<hex>`` of it and the id is
kept in the thread's ``extra["openai_agents_session_id"]``), in the namespace
``"openai-agents"`` unless ``namespace=`` says otherwise. Each SDK item is one threadstore
item whose data keeps the original under ``"item"``; the kind follows the item (a user
message is a ``user_message`` with its ``text``, an assistant message an
``assistant_message``, a ``function_call`` a ``tool_call``, a ``function_call_output`` a
``tool_result``, ``reasoning`` a ``reasoning``; any other type ``openai.<type>``), so
``list_threads`` shows the right preview, last message and counts.

**History edits.** ``pop_item`` and ``clear_session`` are ``store.rewind``: the log keeps
every item ever added (``read_items``), only the context (what ``get_items`` returns)
shrinks, and the thread's metadata follows. Mutations of one session (from any instance,
loop or thread of the process) take turns, so concurrent pops never return the same item.

**Stores.** Sessions on one path in one process share one store, opened by the first and
closed by the last ``close()``. ``db_path=":memory:"`` (the default) gives each session a
private store of its own on threadstore's in-memory engine, gone on ``close()`` (as
``SQLiteSession``'s private in-memory database). ``store=`` runs on an open
:mod:`threadstore.aio` or :mod:`threadstore.blocking` handle, which ``close()`` leaves open.

**Loops, threads, cancellation.** Callable from any asyncio loop in any thread. A mutation
runs to its end once started: cancelling the caller raises ``CancelledError`` after it
settled, so an ``add_items`` is stored whole or (if cancelled before it started) not at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs

from .. import aio, blocking
from .._errors import InvalidItemError, ThreadExistsError, ThreadNotFoundError
from .._items import Item, StoredItem, validate_thread_id
from .._meta import ThreadMeta
from .._portal import Portal
from . import require

require("agents", "openai-agents")

from agents.memory.session import _CompactionSnapshot  # noqa: E402
from agents.memory.session_settings import (  # noqa: E402 - after the extra's check
    SessionSettings,
    coerce_session_settings,
    resolve_session_limit,
)

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

__all__ = ["DEFAULT_NAMESPACE", "SessionInfo", "SessionPage", "ThreadstoreSession"]

T = TypeVar("T")

#: The namespace sessions live in unless ``namespace=`` names another.
DEFAULT_NAMESPACE: Final = "openai-agents"
#: Where a hashed thread id keeps the session id it stands for.
SESSION_ID_KEY: Final = "openai_agents_session_id"
_MEMORY: Final = ":memory:"
#: The largest ``read_context`` limit asked for (the store's ``max_read_limit`` is larger).
_MAX_WINDOW: Final = 10_000
_KIND_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.:-")


# -- the mapping between SDK items and threadstore items ------------------------------------


def _plain(value: Any) -> Any:
    """``value`` as fresh plain JSON values (dicts and lists), never the store's own."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _text(content: Any) -> str:
    """The text of a message's ``content``: a str, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _kind_for(type_: object) -> str:
    name = "".join(c if c in _KIND_CHARS else "_" for c in str(type_).lower())[:57]
    return f"openai.{name or 'item'}"


def to_item(sdk_item: Any) -> Item:
    """The threadstore item an SDK item is stored as (its data keeps it under ``"item"``).

    Raises ``TypeError`` for what JSON cannot hold (as ``SQLiteSession`` does), and
    ``InvalidItemError`` (a ``ValueError``) for what threadstore refuses (NaN, oversized)."""
    json.dumps(sdk_item)  # TypeError for what JSON cannot hold, as SQLiteSession raises
    item = _plain(sdk_item)
    if not isinstance(item, dict):
        return Item(kind="openai.item", data={"item": item})
    type_, role = item.get("type"), item.get("role")
    if type_ in (None, "message") and isinstance(role, str):
        text = _text(item.get("content"))
        if role in ("user", "assistant"):
            return Item(kind=f"{role}_message", data={"text": text, "item": item})
        return Item(kind=_kind_for(f"{role}_message"), data={"text": text, "item": item})
    if (
        type_ == "function_call"
        and isinstance(item.get("name"), str)
        and isinstance(item.get("call_id"), str)
    ):
        data = {
            "name": item["name"],
            "arguments": item.get("arguments"),
            "call_id": item["call_id"],
        }
        return Item(kind="tool_call", data={**data, "item": item})
    if type_ == "function_call_output" and isinstance(item.get("call_id"), str):
        data = {"call_id": item["call_id"], "output": item.get("output"), "is_error": False}
        return Item(kind="tool_result", data={**data, "item": item})
    if type_ == "reasoning":
        return Item(kind="reasoning", data={"text": _text(item.get("summary")), "item": item})
    return Item(kind=_kind_for(type_ or "item"), data={"item": item})


_SKIP: Final[Any] = object()


def to_sdk_item(stored: StoredItem) -> Any:
    """The SDK item a threadstore item stands for, or ``_SKIP`` (e.g. a ``title`` item).

    Items the adapter stored come back exactly; a ``user_message``, ``assistant_message``
    or ``compaction`` appended to the thread by other means becomes an easy input message
    (the compaction as a ``system`` message carrying its summary)."""
    data = stored.data
    if "item" in data:
        return _plain(data["item"])
    if stored.kind in ("user_message", "assistant_message") and isinstance(data.get("text"), str):
        return {"role": stored.kind.removesuffix("_message"), "content": data["text"]}
    if stored.kind == "compaction" and isinstance(data.get("summary"), str):
        return {"role": "system", "content": data["summary"]}
    return _SKIP


def thread_id_for(session_id: str) -> str:
    """The thread a session id is stored in: the id itself when it is a valid thread id."""
    try:
        return validate_thread_id(session_id)
    except InvalidItemError:
        return "sha256-" + hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


# -- shared stores and per-session locks -----------------------------------------------------


class _Shared:
    """One store opened by the adapter, with how many sessions use it."""

    def __init__(self, key: str | None, target: str) -> None:
        self.key = key
        self._stack = ExitStack()
        self.store: blocking.Store = self._stack.enter_context(blocking.open_store(target))
        self.users = 0

    def close(self) -> None:
        self._stack.close()


_shared: dict[str, _Shared] = {}
_shared_lock = threading.Lock()
#: Per store (its portal), per thread id: the lock a session's mutations take turns on, and
#: the threads known to exist.
_locks: weakref.WeakKeyDictionary[Portal, dict[str, threading.Lock]] = weakref.WeakKeyDictionary()
_created: weakref.WeakKeyDictionary[Portal, set[str]] = weakref.WeakKeyDictionary()


def _acquire(db_path: str | Path) -> _Shared:
    if str(db_path) == _MEMORY:
        private = _Shared(None, _MEMORY)  # the session's own
        private.users = 1
        return private
    key = str(Path(db_path).expanduser().resolve())
    with _shared_lock:
        shared = _shared.get(key)
        if shared is None:
            shared = _shared[key] = _Shared(key, key)
        shared.users += 1
        return shared


def _release(shared: _Shared) -> None:
    with _shared_lock:  # held while closing: a session opening the path meanwhile waits
        shared.users -= 1
        if shared.users > 0:
            return
        if shared.key is not None:
            del _shared[shared.key]
        shared.close()


def _per_store(portal: Portal, thread_id: str) -> tuple[threading.Lock, set[str]]:
    """The session's lock, and the set of threads known to exist in ``portal``'s store."""
    with _shared_lock:
        locks = _locks.setdefault(portal, {})
        return locks.setdefault(thread_id, threading.Lock()), _created.setdefault(portal, set())


def _wider(window: int) -> int | None:
    """The next read window: twice as many, or all once that would be too many."""
    return window * 2 if window * 2 <= _MAX_WINDOW else None


async def _settled(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if the caller is cancelled meanwhile; then raise the
    cancellation (a mutation's outcome is never left unknown)."""
    task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
    if cancelled is not None:
        if not task.cancelled():
            task.exception()  # retrieved: the caller hears of its cancellation only
        raise cancelled
    return task.result()  # noqa: ASYNC910 - awaited above (done tasks only)


# -- listing -------------------------------------------------------------------------------


@attrs.frozen
class SessionInfo:
    """One session of a listing: its id and its thread's metadata."""

    session_id: str
    meta: ThreadMeta


@attrs.frozen
class SessionPage:
    """A page of sessions, newest first; pass ``next_cursor`` back for the next (None: last)."""

    sessions: tuple[SessionInfo, ...]
    next_cursor: str | None


def _portal_of(store: aio.Store | blocking.Store | ThreadstoreSession) -> Portal:
    if isinstance(store, ThreadstoreSession):
        return store._portal
    if isinstance(store, aio.Store | blocking.Store):
        return store._portal
    raise TypeError(
        f"store must be a threadstore aio.Store or blocking.Store, not {type(store).__name__}"
    )


# -- the session ---------------------------------------------------------------------------


class ThreadstoreSession:
    """The SDK's ``Session`` protocol on a threadstore thread; a drop-in for ``SQLiteSession``.

    ``ThreadstoreSession(session_id, db_path=":memory:", session_settings=None, *,
    store=None, namespace="openai-agents")``: see the module's documentation.
    """

    session_settings: SessionSettings | None = None

    def __init__(
        self,
        session_id: str,
        db_path: str | Path = _MEMORY,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        *,
        store: aio.Store | blocking.Store | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> None:
        self.session_id = session_id
        self.session_settings = (
            coerce_session_settings(session_settings)
            if session_settings is not None
            else SessionSettings()
        )
        self.db_path = db_path
        self._closed = False
        self._shared: _Shared | None = None
        if store is None:
            self._shared = _acquire(db_path)
            self._portal = self._shared.store._portal
        else:
            self._portal = _portal_of(store)
        try:
            self._blocking = blocking.Store(self._portal).scoped(namespace)
            self._aio = aio.Store(self._portal).scoped(namespace)
        except BaseException:
            self.close()
            raise
        self.namespace = namespace
        self.thread_id = thread_id_for(session_id)
        self._lock, self._created = _per_store(self._portal, self.thread_id)

    def __repr__(self) -> str:
        return (
            f"ThreadstoreSession({self.session_id!r}, {str(self.db_path)!r}, "
            f"namespace={self.namespace!r})"
        )

    @property
    def store(self) -> aio.Store:
        """The store the session lives in (an asyncio handle): fork, rewind, list, read."""
        return aio.Store(self._portal)

    # -- the Session protocol --------------------------------------------------------------

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The session's items in order; ``limit``: the newest N (default
        ``session_settings.limit``), ``0`` none, negative all."""
        self._check_not_closed()
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted == 0:
            await asyncio.sleep(0)
            return []
        if wanted is None or wanted < 0:
            return self._decode(await self._read(None))
        window: int | None = wanted if wanted <= _MAX_WINDOW else None
        while True:
            stored = await self._read(window)
            items = self._decode(stored)
            if window is None or len(items) >= wanted or len(stored) < window:
                return items[-wanted:]
            window = _wider(window)  # items a session does not return sat among the newest

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append ``items``, in order, as one batch: stored whole or not at all."""
        self._check_not_closed()
        if not items:
            await asyncio.sleep(0)
            return
        converted = [to_item(item) for item in items]
        await self._mutate(lambda: self._append(converted))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item (a rewind: the log keeps it); None if empty."""
        return await self._pop_item_with_validation()

    async def _pop_item_with_validation(
        self, validate: Callable[[TResponseInputItem], None] | None = None
    ) -> TResponseInputItem | None:
        """``pop_item``, with ``validate(item)`` run before the removal: if it raises, the
        item stays where it was (the hook ``SQLiteSession`` offers ``EncryptedSession``)."""
        self._check_not_closed()
        return await self._mutate(lambda: self._pop(validate))

    async def clear_session(self) -> None:
        """Empty the session (a rewind to its start: the log keeps every item)."""
        self._check_not_closed()
        await self._mutate(self._clear)

    def close(self) -> None:
        """Stop using the store; the last session on a path (or a private ``":memory:"``
        session) closes it. Idempotent; a ``store=`` handle stays open."""
        self._closed = True
        shared, self._shared = self._shared, None
        if shared is not None:
            _release(shared)

    async def _get_compaction_snapshot(
        self, limit: int, *, prune_prefix: Callable[[Any], bool] | None = None
    ) -> _CompactionSnapshot | None:
        """The SDK's hook for atomic compaction (as ``SQLiteSession``'s, offered by the
        class itself only, not by subclasses): the newest ``limit`` items, whether they are
        all, and ``replace_suffix(start, output)``, which replaces ``items[start:]`` with
        ``output`` (after dropping the oldest items ``prune_prefix`` accepts) unless the
        session changed meanwhile. The replacement is a rewind and an append under the
        session's lock (two commits: a crash between them leaves the suffix rewound)."""
        if type(self) is not ThreadstoreSession:
            await asyncio.sleep(0)
            return None
        self._check_not_closed()
        stored = self._pairs(await self._read(None))
        tail = stored[-limit:] if limit > 0 else []
        expected_all = [s.seq for s, _ in tail]

        async def replace_suffix(start: int, output: list[Any]) -> bool:
            expected = expected_all[start:]
            if not expected:
                await asyncio.sleep(0)
                return False
            new_items = [to_item(item) for item in output]
            return await self._mutate(lambda: self._replace(expected, new_items, prune_prefix))

        return _CompactionSnapshot([i for _, i in tail], len(stored) <= limit, replace_suffix)

    # -- beyond SQLiteSession --------------------------------------------------------------

    @classmethod
    async def list_sessions(
        cls,
        store: aio.Store | blocking.Store | ThreadstoreSession,
        *,
        limit: int = 50,
        cursor: str | None = None,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> SessionPage:
        """The sessions of ``namespace`` in ``store`` (or a session's store), most recently
        updated first, with their metadata; empty (cleared) sessions included."""
        view = aio.Store(_portal_of(store)).scoped(namespace)
        page = await view.list_threads(limit=limit, cursor=cursor, include_empty=True)
        sessions = tuple(
            SessionInfo(str(meta.extra.get(SESSION_ID_KEY, meta.id)), meta) for meta in page.threads
        )
        return SessionPage(sessions, page.next_cursor)

    # -- inside --------------------------------------------------------------------------

    def _check_not_closed(self) -> None:
        if self._closed:
            raise RuntimeError("ThreadstoreSession is closed")

    async def _read(self, limit: int | None) -> list[StoredItem]:
        try:
            return await self._aio.read_context(self.thread_id, limit)
        except ThreadNotFoundError:
            return []  # noqa: ASYNC910 - the read above awaited

    @staticmethod
    def _pairs(stored: list[StoredItem]) -> list[tuple[StoredItem, Any]]:
        pairs = ((item, to_sdk_item(item)) for item in stored)
        return [(item, sdk) for item, sdk in pairs if sdk is not _SKIP]

    @classmethod
    def _decode(cls, stored: list[StoredItem]) -> list[Any]:
        return [sdk for _, sdk in cls._pairs(stored)]

    async def _mutate(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (blocking store calls) on a worker thread holding the session's lock,
        to its end even if the caller is cancelled."""

        def locked() -> T:
            with self._lock:
                return fn()

        return await _settled(asyncio.to_thread(locked))

    def _append(self, items: list[Item]) -> None:
        created = self._created
        for attempt in (1, 2):
            if self.thread_id not in created:
                self._create()
                created.add(self.thread_id)
            try:
                self._blocking.append(self.thread_id, *items)
                return
            except ThreadNotFoundError:  # deleted through the store meanwhile: start anew
                created.discard(self.thread_id)
                if attempt == 2:
                    raise

    def _create(self) -> None:
        extra = None if self.thread_id == self.session_id else {SESSION_ID_KEY: self.session_id}
        with suppress(ThreadExistsError):
            self._blocking.create_thread(thread_id=self.thread_id, extra=extra)

    def _pop(self, validate: Callable[[Any], None] | None) -> Any:
        window: int | None = 8
        while True:
            try:
                stored = self._blocking.read_context(self.thread_id, window)
            except ThreadNotFoundError:
                return None
            for candidate in reversed(stored):
                item = to_sdk_item(candidate)
                if item is _SKIP:
                    continue
                if validate is not None:
                    validate(item)
                self._blocking.rewind(self.thread_id, candidate.seq - 1)
                return item
            if window is None or len(stored) < window:
                return None
            window = _wider(window)

    def _replace(
        self, expected: list[int], output: list[Item], prune: Callable[[Any], bool] | None
    ) -> bool:
        try:
            context = self._blocking.read_context(self.thread_id)
        except ThreadNotFoundError:
            return False
        pairs = self._pairs(context)
        if [s.seq for s, _ in pairs[-len(expected) :]] != expected:
            return False  # the session changed since the snapshot
        before = pairs[: -len(expected)]
        dropped = 0
        if prune is not None:
            while dropped < len(before) and prune(before[dropped][1]):
                dropped += 1
        if dropped:
            cut = before[0][0].seq - 1
            last_dropped = before[dropped - 1][0].seq
            kept = [
                Item(kind=s.kind, data=_plain(s.data))
                for s in context
                if last_dropped < s.seq < expected[0]
            ]
        else:
            cut, kept = expected[0] - 1, []
        self._blocking.rewind(self.thread_id, cut)
        if kept or output:
            self._blocking.append(self.thread_id, *kept, *output)
        return True

    def _clear(self) -> None:
        try:
            if self._blocking.read_context(self.thread_id, 1):
                self._blocking.rewind(self.thread_id, 0)
        except ThreadNotFoundError:
            pass
