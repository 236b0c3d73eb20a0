"""Google ADK sessions on threadstore: ``ThreadstoreSessionService``.

A drop-in for ADK's ``SqliteSessionService`` / ``DatabaseSessionService``::

    from threadstore.integrations.adk import ThreadstoreSessionService

    session_service = ThreadstoreSessionService("sessions.db")
    runner = Runner(agent=agent, app_name="my_app", session_service=session_service)
    ...
    await session_service.close()

Where things live (``q(x)`` is ``urllib.parse.quote(x, safe="")``, so ``/`` and ``%`` in
names cannot collide):

- a session is a thread in namespace ``adk/{q(app_name)}/{q(user_id)}``; each stored event is
  one item whose data holds the whole event (``data["adk_event"]``, the event's JSON as
  ``SqliteSessionService`` stores it); events with text are ``user_message`` (author
  ``"user"``) or ``assistant_message`` items (``data["text"]``), so threads list with the
  right preview; others are ``adk.event`` items;
- ``app:`` state is the thread ``adk-app-…`` in namespace ``adk-apps``, ``user:`` state the
  thread ``adk-user-…`` in namespace ``adk-users/{q(app_name)}``; each state change is an
  ``adk.state`` item (``{"delta": …, "time": …}``); ``temp:`` keys are never stored.

The current state of each of those threads (and a session's own state and last update time)
is a fold of its items, kept in ``ThreadMeta.extra["adk"]`` by the :func:`projector` the
service installs; a store passed as ``store=`` must be opened with
``projectors=[adk.projector()]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from .. import aio
from .._errors import InvalidItemError, ThreadExistsError, ThreadNotFoundError
from .._items import Item, StoredItem
from .._meta import ThreadMeta
from .._values import Projector
from . import require

require("google.adk", "adk")

from google.adk.errors._invocation_not_found_error import InvocationNotFoundError  # noqa: E402
from google.adk.errors._stale_session_error import StaleSessionError  # noqa: E402
from google.adk.errors.already_exists_error import AlreadyExistsError  # noqa: E402
from google.adk.errors.session_not_found_error import SessionNotFoundError  # noqa: E402
from google.adk.events.event import Event  # noqa: E402
from google.adk.platform import time as platform_time  # noqa: E402
from google.adk.platform import uuid as platform_uuid  # noqa: E402
from google.adk.sessions import _session_util  # noqa: E402
from google.adk.sessions.base_session_service import (  # noqa: E402
    BaseSessionService,
    GetSessionConfig,
    ListSessionsResponse,
)
from google.adk.sessions.session import Session  # noqa: E402
from google.adk.sessions.state import State  # noqa: E402

__all__ = ["SessionsPage", "ThreadstoreSessionService", "projector"]

#: The name of the projector, and the key of ``ThreadMeta.extra`` it maintains.
NAME: Final = "adk"
#: The data key holding an event's JSON in a session's items.
EVENT_KEY: Final = "adk_event"
#: The item kind of a change to app or user state.
STATE_KIND: Final = "adk.state"
#: The item kind of an event without text.
EVENT_KIND: Final = "adk.event"
_EVENT_KINDS: Final = frozenset({"user_message", "assistant_message", EVENT_KIND})
_PAGE: Final = 1000  # list_threads' largest page


def _q(name: str) -> str:
    return quote(name, safe="")


def _digest(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:40]


def session_namespace(app_name: str, user_id: str) -> str:
    """The namespace of ``user_id``'s sessions of ``app_name``."""
    return f"adk/{_q(app_name)}/{_q(user_id)}"


def users_namespace(app_name: str) -> str:
    """The namespace of the user-state threads of ``app_name`` (one per user)."""
    return f"adk-users/{_q(app_name)}"


APPS_NAMESPACE: Final = "adk-apps"


def session_thread_id(app_name: str, user_id: str, session_id: str) -> str:
    """The thread id of a session (session ids are unique per app and user, thread ids
    per store)."""
    return "adk-session-" + _digest(app_name, user_id, session_id)


def _app_thread_id(app_name: str) -> str:
    return "adk-app-" + _digest(app_name)


def _user_thread_id(app_name: str, user_id: str) -> str:
    return "adk-user-" + _digest(app_name, user_id)


class _Projector:
    """Folds a thread's ADK items into ``ThreadMeta.extra["adk"]``: ``state`` (the session's
    own keys, or the app's or user's un-prefixed keys), ``update_time`` (the last event's
    timestamp, or the last state change's time) and ``seq`` (the last item folded)."""

    name = NAME

    def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any] | None:
        adk = meta.extra.get(NAME)
        if not isinstance(adk, Mapping) or "role" not in adk:
            return None  # not one of ours
        state: dict[str, Any] = dict(adk.get("state") or {})
        update_time = adk.get("update_time")
        last: int | None = None
        for item in items:
            if adk["role"] == "session":
                event = item.data.get(EVENT_KEY)
                if item.kind not in _EVENT_KINDS or not isinstance(event, Mapping):
                    continue
                actions = event.get("actions") or {}
                delta = actions.get("state_delta") or {} if isinstance(actions, Mapping) else {}
                state.update(_session_util.extract_state_delta(dict(delta))["session"])
                update_time = event.get("timestamp", update_time)
            elif item.kind == STATE_KIND:
                state.update(item.data["delta"])
                update_time = item.data["time"]
            last = item.seq
        if last is None:
            return None
        return {"state": state, "update_time": update_time, "seq": last}


_PROJECTOR: Final = _Projector()


def projector() -> Projector:
    """The projector a store serving ``ThreadstoreSessionService`` must be opened with."""
    return _PROJECTOR


class SessionsPage:
    """One page of :meth:`ThreadstoreSessionService.list_sessions_page`, newest first."""

    def __init__(self, sessions: list[Session], next_cursor: str | None) -> None:
        self.sessions = sessions
        #: Pass back as ``cursor`` for the next page; None on the last one.
        self.next_cursor = next_cursor


class ThreadstoreSessionService(BaseSessionService):
    """ADK's ``BaseSessionService`` on a threadstore store (see the module's docs).

    ``db_path`` is the store's file (``":memory:"``: a temporary store removed by
    :meth:`close`); ``store=`` runs on an open :mod:`threadstore.aio` handle instead (opened
    with ``projectors=[projector()]``; :meth:`close` then leaves it open). The store is
    opened on first use; call :meth:`close` from the event loop that used it first.
    """

    def __init__(self, db_path: str = ":memory:", *, store: aio.Store | None = None) -> None:
        self._db_path = db_path
        self._store = store
        self._stack: AsyncExitStack | None = None
        self._tempdir: str | None = None
        self._lock: asyncio.Lock | None = None
        self._known: set[str] = set()  # state threads known to exist
        self._checked = store is None  # whether the store's projector was seen at work

    # -- the store ------------------------------------------------------------------------

    async def _open(self) -> aio.Store:
        if self._store is not None:
            return self._store  # noqa: ASYNC910 - open already
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._store is None:
                path: str | Path = self._db_path
                if self._db_path in ("", ":memory:"):
                    self._tempdir = tempfile.mkdtemp(prefix="threadstore-adk-")
                    path = Path(self._tempdir) / "sessions.db"
                stack = AsyncExitStack()
                self._store = await stack.enter_async_context(
                    aio.open_store(path, projectors=[_PROJECTOR])
                )
                self._stack = stack
        return self._store

    async def close(self) -> None:  # noqa: ASYNC910 - nothing to close without a store
        """Close the store if the service opened it (a ``store=`` handle stays open)."""
        stack, self._stack = self._stack, None
        if stack is not None:
            self._store = None
            self._known.clear()
            await stack.aclose()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    async def _state_thread(  # noqa: ASYNC910 - known threads need no call
        self, store: aio.Store, thread_id: str, namespace: str, adk: dict[str, Any]
    ) -> None:
        if thread_id in self._known:
            return  # noqa: ASYNC910 - known to exist
        try:
            await store.create_thread(
                thread_id=thread_id,
                namespace=namespace,
                extra={NAME: {**adk, "state": {}, "update_time": None}},
            )
        except ThreadExistsError:
            # Made before (maybe by another process sharing the store: this makes it known
            # here, so appends to it need not look it up), or being made by another call
            # here right now (then known already, not committed yet).
            with suppress(ThreadNotFoundError):
                await store.get_thread(thread_id)
        self._known.add(thread_id)

    async def _ensure_state_threads(self, store: aio.Store, app_name: str, user_id: str) -> None:
        await self._state_thread(
            store, _app_thread_id(app_name), APPS_NAMESPACE, {"role": "app", "app": app_name}
        )
        await self._state_thread(
            store,
            _user_thread_id(app_name, user_id),
            users_namespace(app_name),
            {"role": "user", "app": app_name, "user": user_id},
        )

    async def _scoped_state(self, store: aio.Store, thread_id: str) -> dict[str, Any]:
        try:
            meta = await store.get_thread(thread_id)
        except ThreadNotFoundError:
            return {}  # noqa: ASYNC910 - the lookup awaited
        return dict(meta.extra.get(NAME, {}).get("state") or {})

    def _apply_scoped_deltas(
        self,
        store: aio.Store,
        app_name: str,
        user_id: str,
        deltas: Mapping[str, dict[str, Any]],
        time: float,
    ) -> list[aio.Receipt]:
        """Append the app and user deltas (ordered now); their receipts (to wait on)."""
        pending = []
        for key, thread_id in (
            ("app", _app_thread_id(app_name)),
            ("user", _user_thread_id(app_name, user_id)),
        ):
            if deltas[key]:
                item = Item(kind=STATE_KIND, data={"delta": deltas[key], "time": time})
                pending.append(store.append_nowait(thread_id, item))
        return pending

    # -- BaseSessionService ---------------------------------------------------------------

    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        store = await self._open()
        now = platform_time.get_time()
        session_id = (session_id.strip() if session_id else None) or platform_uuid.new_uuid()
        deltas = _session_util.extract_json_safe_state_delta(state or {})
        await self._ensure_state_threads(store, app_name, user_id)
        try:
            await store.create_thread(
                thread_id=session_thread_id(app_name, user_id, session_id),
                namespace=session_namespace(app_name, user_id),
                extra={
                    NAME: {
                        "role": "session",
                        "app": app_name,
                        "user": user_id,
                        "id": session_id,
                        "create_time": now,
                        "initial_state": deltas["session"],
                        "state": deltas["session"],
                        "update_time": now,
                    }
                },
            )
        except ThreadExistsError:
            raise AlreadyExistsError(f"Session with id {session_id} already exists.") from None
        try:
            pending = self._apply_scoped_deltas(store, app_name, user_id, deltas, now)
        except InvalidItemError:  # a delta too big: no session either
            await store.delete_thread(session_thread_id(app_name, user_id, session_id))
            raise
        for receipt in pending:
            await receipt.visible()
        app_state = await self._scoped_state(store, _app_thread_id(app_name))
        user_state = await self._scoped_state(store, _user_thread_id(app_name, user_id))
        return Session(
            app_name=app_name,
            user_id=user_id,
            id=session_id,
            state=_merge_state(app_state, user_state, deltas["session"]),
            events=[],
            last_update_time=now,
        )

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        store = await self._open()
        session_id = session_id.strip() if session_id else session_id
        tid = session_thread_id(app_name, user_id, session_id)
        try:
            meta = await store.get_thread(tid)
        except ThreadNotFoundError:
            return None
        adk = meta.extra[NAME]
        events = await self._read_events(store, tid, config)
        app_state = await self._scoped_state(store, _app_thread_id(app_name))
        user_state = await self._scoped_state(store, _user_thread_id(app_name, user_id))
        return Session(
            app_name=app_name,
            user_id=user_id,
            id=session_id,
            state=_merge_state(app_state, user_state, adk["state"]),
            events=events,
            last_update_time=adk["update_time"],
        )

    async def _read_events(
        self, store: aio.Store, tid: str, config: GetSessionConfig | None
    ) -> list[Event]:
        recent = config.num_recent_events if config else None
        after = config.after_timestamp if config else None
        if recent == 0:
            return []  # noqa: ASYNC910 - no events asked for
        if recent is not None and not after:
            # The newest ``recent`` items of the context, a few more in case some are not
            # events; the whole context only if that was not enough.
            items = await store.read_context(tid, limit=recent + 4)
            found = [i for i in items if i.kind in _EVENT_KINDS and EVENT_KEY in i.data]
            if len(found) < recent and len(items) == recent + 4:
                items = await store.read_context(tid)
        else:
            items = await store.read_context(tid)
        data = [i.data[EVENT_KEY] for i in items if i.kind in _EVENT_KINDS and EVENT_KEY in i.data]
        if after:
            data = [d for d in data if d["timestamp"] >= after]
        if recent is not None:
            data = data[-recent:]
        return [Event.model_validate(d) for d in data]

    async def list_sessions(
        self, *, app_name: str, user_id: str | None = None
    ) -> ListSessionsResponse:
        store = await self._open()
        app_state = await self._scoped_state(store, _app_thread_id(app_name))
        users: dict[str, dict[str, Any]] = {}  # user id -> user state
        if user_id is not None:
            users[user_id] = await self._scoped_state(store, _user_thread_id(app_name, user_id))
        else:
            async for meta in _all_threads(store, users_namespace(app_name)):
                adk = meta.extra.get(NAME, {})
                users[adk["user"]] = dict(adk.get("state") or {})
        # Only each session's ``extra["adk"]`` is kept: the ThreadMetas are freed page by
        # page, which keeps the garbage collector's work down at 10,000 sessions.
        found: list[tuple[float, str, str, Mapping[str, Any]]] = []

        async def walk(user: str) -> None:
            async for meta in _all_threads(store, session_namespace(app_name, user)):
                adk = meta.extra[NAME]
                found.append((adk["update_time"], user, adk["id"], adk))

        await asyncio.gather(*(walk(user) for user in users))  # the store reads in parallel
        found.sort(key=_first_three)  # ADK's order: oldest update first
        return ListSessionsResponse(
            sessions=[_listed(adk, app_state, users[user]) for _, user, _, adk in found]
        )

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        store = await self._open()
        session_id = session_id.strip() if session_id else session_id
        with suppress(ThreadNotFoundError):
            await store.delete_thread(session_thread_id(app_name, user_id, session_id))

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        store = await self._open()
        return await self._scoped_state(store, _user_thread_id(app_name, user_id))

    async def append_event(self, session: Session, event: Event) -> Event:
        if event.partial:
            return event  # noqa: ASYNC910 - ADK's rule: partial events are not stored
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        store = await self._open()
        app_name, user_id = session.app_name, session.user_id
        tid = session_thread_id(app_name, user_id, session.id)
        try:
            meta = await store.get_thread(tid)
        except ThreadNotFoundError:
            raise SessionNotFoundError(f"Session {session.id} not found.") from None
        if meta.extra[NAME]["update_time"] > session.last_update_time:
            raise StaleSessionError(
                "The last_update_time provided in the session object is"
                " earlier than the update_time in storage."
                " Please check if it is a stale session."
            )
        deltas = _session_util.extract_json_safe_state_delta(event.actions.state_delta or {})
        if deltas["app"] or deltas["user"]:
            await self._ensure_state_threads(store, app_name, user_id)
        # The event first: its item holds the deltas, so if it is refused (too big), nothing
        # was written; the deltas follow at once, ordered with it (usually one commit).
        event_receipt = store.append_nowait(tid, _event_item(event))
        pending = [
            event_receipt,
            *self._apply_scoped_deltas(store, app_name, user_id, deltas, event.timestamp),
        ]
        for receipt in pending:
            await receipt.visible()  # (durable first: then its seq is known on any store)
        if not self._checked:
            self._check_projector(await store.get_thread(tid), event_receipt.seq)
        session.last_update_time = event.timestamp
        return self._commit_event_to_session(session, event)

    def _check_projector(self, meta: ThreadMeta, seq: int) -> None:
        if meta.extra.get(NAME, {}).get("seq") != seq:
            raise RuntimeError(
                "the store passed as store= has no ADK projector: open it with "
                "projectors=[threadstore.integrations.adk.projector()]"
            )
        self._checked = True

    # -- beyond ADK -----------------------------------------------------------------------

    async def list_sessions_page(
        self, *, app_name: str, user_id: str, limit: int = 50, cursor: str | None = None
    ) -> SessionsPage:
        """One page of ``user_id``'s sessions, most recently updated first (no events).

        Cost O(limit) however many sessions the user has; pass ``next_cursor`` back for the
        next page. Order is by the store's ``updated_at`` (the time the newest event was
        stored), not by the events' own timestamps.
        """
        store = await self._open()
        app_state = await self._scoped_state(store, _app_thread_id(app_name))
        user_state = await self._scoped_state(store, _user_thread_id(app_name, user_id))
        page = await store.list_threads(
            limit=limit,
            cursor=cursor,
            include_empty=True,
            namespace=session_namespace(app_name, user_id),
        )
        return SessionsPage(
            [_listed(m.extra[NAME], app_state, user_state) for m in page.threads],
            page.next_cursor,
        )

    async def rewind_session(
        self, *, app_name: str, user_id: str, session_id: str, before_invocation_id: str
    ) -> Session:
        """Take the first event of ``before_invocation_id`` and every later event out of the
        session, as ``Runner.rewind_async`` does, but as a history edit (``Store.rewind``):
        the events stay in the log (``read_items``), the session's own state is folded
        again from the events that remain, ``app:``/``user:`` state is left as it is (as
        ADK's rewind leaves it). Returns the session as ``get_session`` now returns it.

        Raises ``SessionNotFoundError`` or ADK's ``InvocationNotFoundError``.
        """
        store = await self._open()
        tid = session_thread_id(app_name, user_id, session_id)
        try:
            items = await store.read_context(tid)
        except ThreadNotFoundError:
            raise SessionNotFoundError(f"Session {session_id} not found.") from None
        cut = next(
            (
                item.seq
                for item in items
                if _event_of(item)
                and item.data[EVENT_KEY].get("invocation_id") == before_invocation_id
            ),
            None,
        )
        if cut is None:
            raise InvocationNotFoundError(f"Invocation ID not found: {before_invocation_id}")
        await store.rewind(tid, cut - 1)
        await self._refold(store, tid, session_id)
        session = await self.get_session(app_name=app_name, user_id=user_id, session_id=session_id)
        assert session is not None
        return session

    async def fork_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        new_session_id: str | None = None,
    ) -> Session:
        """A new session of the same user with a copy of ``session_id``'s events and state
        (``Store.fork``: one transaction); later events of either never show in the other.

        Raises ``SessionNotFoundError``, or ``AlreadyExistsError`` if ``new_session_id`` is
        taken.
        """
        store = await self._open()
        new_id = (new_session_id.strip() if new_session_id else None) or platform_uuid.new_uuid()
        new_tid = session_thread_id(app_name, user_id, new_id)
        try:
            await store.fork(session_thread_id(app_name, user_id, session_id), thread_id=new_tid)
        except ThreadNotFoundError:
            raise SessionNotFoundError(f"Session {session_id} not found.") from None
        except ThreadExistsError:
            raise AlreadyExistsError(f"Session with id {new_id} already exists.") from None
        await self._refold(store, new_tid, new_id)
        session = await self.get_session(app_name=app_name, user_id=user_id, session_id=new_id)
        assert session is not None
        return session

    async def _refold(self, store: aio.Store, tid: str, session_id: str) -> None:
        """Fold the session's state again from the events of its context, and record it."""
        meta = await store.get_thread(tid)
        adk = dict(meta.extra[NAME])
        state = dict(adk.get("initial_state") or {})
        for item in await store.read_context(tid):
            if _event_of(item):
                delta = (item.data[EVENT_KEY].get("actions") or {}).get("state_delta") or {}
                state.update(_session_util.extract_state_delta(dict(delta))["session"])
        adk.update(id=session_id, state=state, update_time=platform_time.get_time())
        await store.update_thread(tid, extra={NAME: adk})


def _event_of(item: StoredItem) -> bool:
    return item.kind in _EVENT_KINDS and isinstance(item.data.get(EVENT_KEY), Mapping)


async def _all_threads(store: aio.Store, namespace: str) -> AsyncIterator[ThreadMeta]:
    cursor: str | None = None
    while True:
        page = await store.list_threads(
            limit=_PAGE, cursor=cursor, include_empty=True, namespace=namespace
        )
        for meta in page.threads:
            yield meta  # noqa: ASYNC911 - list_threads awaited
        cursor = page.next_cursor
        if cursor is None:
            return  # noqa: ASYNC911 - list_threads awaited


def _listed(
    adk: Mapping[str, Any], app_state: dict[str, Any], user_state: dict[str, Any]
) -> Session:
    return Session(
        app_name=adk["app"],
        user_id=adk["user"],
        id=adk["id"],
        state=_merge_state(app_state, user_state, adk["state"]),
        events=[],
        last_update_time=adk["update_time"],
    )


def _event_item(event: Event) -> Item:
    data: dict[str, Any] = {EVENT_KEY: event.model_dump(mode="json", exclude_none=True)}
    parts = event.content.parts if event.content and event.content.parts else []
    text = "".join(p.text for p in parts if p.text and not p.thought)
    if not text:
        return Item(kind=EVENT_KIND, data=data)
    kind = "user_message" if event.author == "user" else "assistant_message"
    return Item(kind=kind, data={"text": text, **data})


def _first_three(found: tuple[float, str, str, Mapping[str, Any]]) -> tuple[float, str, str]:
    return found[0], found[1], found[2]


def _copy(value: Any) -> Any:
    """A deep copy of a JSON value (what the store holds), faster than ``copy.deepcopy``."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _merge_state(
    app_state: Mapping[str, Any], user_state: Mapping[str, Any], session_state: Mapping[str, Any]
) -> dict[str, Any]:
    """ADK's merged view: the session's keys, then ``app:`` and ``user:`` keys (copies)."""
    merged = {key: _copy(value) for key, value in session_state.items()}
    for key, value in app_state.items():
        merged[State.APP_PREFIX + key] = _copy(value)
    for key, value in user_state.items():
        merged[State.USER_PREFIX + key] = _copy(value)
    return merged
