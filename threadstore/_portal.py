"""The portal: one trio thread that owns a :class:`Store`, callable from any thread or loop.

The access layers (:mod:`threadstore.aio` for asyncio, :mod:`threadstore.blocking` for plain
threads) are thin shells over one :class:`Portal`. The portal runs ``trio.run`` on a daemon
thread of its own, opens the store there with the caller's options, and then runs every call
it is handed as a trio task of the store's thread:

- :meth:`Portal.submit` hands over an async function of the store and a completion callback;
  it never blocks. The call runs in a copy of the caller's ``contextvars`` context, so the
  structlog context (``trace_parent``) travels with an append as it does on trio. The
  callback receives the call's :class:`outcome.Outcome` on the store's thread and must only
  hand it on (``loop.call_soon_threadsafe``, a lock release).
- :meth:`Call.cancel` cancels the call's trio task, exactly as cancelling a trio caller
  would: the store's own cancellation guarantees apply (an append already queued is still
  committed and projected). The callback still fires once the task has ended.
- :meth:`Portal.run_sync` runs a sync method (``append_nowait``, ``statistics``) on the
  store's thread and blocks its caller for that one hop, never for I/O.

Closing (:meth:`Portal.request_close`) refuses new calls with :class:`StoreClosedError`,
then leaves the store's ``async with`` block, which drains exactly as the trio store does
(``shutdown_timeout``). Calls in flight meanwhile either complete or fail with the store's
own ``StoreClosedError``; any still running ``shutdown_timeout`` after the store closed are
cancelled and fail with ``StoreClosedError``. Subscriptions end normally when the store
closes. A portal that is never closed is closed (and drained) at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextvars
import inspect
import threading
import types
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, suppress
from functools import partial
from typing import Any, Final, TypeVar

import attrs
import outcome
import trio

from ._errors import StoreClosedError, StoreOverloadedError
from ._feed import ThreadEvent
from ._items import Item
from ._open import open_store
from ._scoped import ScopedStore
from ._store import Receipt, Store, ThreadNotMetError

__all__ = ["MIRRORED", "MIRRORED_VIEW", "Call", "Portal", "Subscription", "mirror_docs"]

T = TypeVar("T")

#: Every public method of the trio :class:`Store` (``MIRRORED``) and of its namespace views
#: (``MIRRORED_VIEW``, :class:`~threadstore.ScopedStore`) that the access layers mirror, with
#: how it crosses the portal: ``"async"`` (a trio task), ``"sync"`` (one hop,
#: :meth:`Portal.run_sync`), ``"subscription"``, or ``"view"`` (a view made in the caller's
#: thread). The signature test compares these lists, the trio classes and both shells, so a
#: method added to the store without its mirrors fails the tests.
MIRRORED_VIEW: Final[Mapping[str, str]] = {
    "append": "async",
    "append_and_flush": "async",
    "append_nowait": "sync",
    "archive_thread": "async",
    "create_thread": "async",
    "delete_thread": "async",
    "discard": "async",
    "flush": "async",
    "flush_all": "async",
    "fork": "async",
    "get_thread": "async",
    "list_threads": "async",
    "read_context": "async",
    "read_items": "async",
    "rewind": "async",
    "subscribe": "subscription",
    "unarchive_thread": "async",
    "update_thread": "async",
}
MIRRORED: Final[Mapping[str, str]] = {
    **MIRRORED_VIEW,
    # maintenance (the store only, not its views)
    "backup": "async",
    "check": "async",
    "export_thread": "async",
    "import_thread": "async",
    "reproject": "async",
    "summary": "async",
    "scoped": "view",
    "statistics": "sync",
}

Done = Callable[[outcome.Outcome[Any]], None]


def mirror_docs(shell: type, world: str, *, view: bool = False) -> None:
    """Give each of ``shell``'s mirrored methods the trio method's docstring (of the store,
    or with ``view`` of :class:`ScopedStore`), plus a line saying how it behaves in the
    shell's ``world``."""
    original: type = ScopedStore if view else Store
    for name in MIRRORED_VIEW if view else MIRRORED:
        method = _own(shell, name)
        trio_doc = inspect.cleandoc(getattr(original, name).__doc__ or "")
        method.__doc__ = f"{trio_doc}\n\n{world}"


#: How long calls still running after the store closed may take (``open_store``'s default
#: ``shutdown_timeout`` unless the options name one).
_SHUTDOWN_TIMEOUT: Final[float] = (
    inspect.signature(open_store).parameters["shutdown_timeout"].default
)

#: What a call cancelled by its own caller reports (the caller raises its own cancellation).
_GAVE_UP: Final[outcome.Outcome[Any]] = outcome.Value(None)


def _own(shell: type, name: str) -> Any:
    """``shell``'s own function ``name``: one inherited from a shared base is copied into
    ``shell`` first, so that each shell's copy carries its own docstring."""
    if name in shell.__dict__:
        return shell.__dict__[name]
    inherited = getattr(shell, name)
    copy = types.FunctionType(
        inherited.__code__,
        inherited.__globals__,
        inherited.__name__,
        inherited.__defaults__,
        inherited.__closure__,
    )
    copy.__kwdefaults__ = inherited.__kwdefaults__
    copy.__annotations__ = inherited.__annotations__
    copy.__qualname__ = f"{shell.__qualname__}.{name}"
    copy.__wrapped__ = getattr(inherited, "__wrapped__", inherited)  # type: ignore[attr-defined]
    setattr(shell, name, copy)
    return copy


def _append(
    view: ScopedStore | None, thread_id: str, items: tuple[Item, ...], store: Store
) -> Awaitable[Receipt]:
    return (store if view is None else view).append(thread_id, *items)


def _closed(target: str) -> StoreClosedError:
    return StoreClosedError(f"store {target!r} is closed")


class Call:
    """One call crossing the portal. Created by :meth:`Portal.submit`/:meth:`Portal.append`."""

    __slots__ = (
        "_append",
        "_cancelled",
        "_claim",
        "_context",
        "_done",
        "_fn",
        "_portal",
        "_scope",
    )

    def __init__(
        self,
        portal: Portal,
        fn: Callable[[Store], Awaitable[Any]],
        done: Done,
        append: tuple[ScopedStore | None, str, tuple[Item, ...]] | None = None,
    ) -> None:
        self._portal = portal
        self._fn = fn
        self._done: Done | None = done
        self._append = append
        self._cancelled = False
        self._claim = threading.Lock()  # the first _finish takes it: finished exactly once
        self._context = contextvars.copy_context()
        self._scope: trio.CancelScope | None = None  # a call run as a task of its own

    def cancel(self) -> None:
        """Cancel the call (any thread; idempotent); the callback still fires once it ended.

        A call not started yet never starts; a running one is cancelled as a trio caller
        would be; an append already accepted is committed and projected all the same."""
        self._cancelled = True
        token = self._portal._token
        if token is not None:
            with suppress(trio.RunFinishedError):  # ended: the call was finished already
                token.run_sync_soon(self._cancel_task)

    def _cancel_task(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def _finish(self, result: outcome.Outcome[Any]) -> None:
        """Hand ``result`` to the caller; later calls do nothing. Any thread (an append may
        be finished by the writer thread's commit hook and by the store's thread)."""
        if self._claim.acquire(blocking=False):
            done, self._done = self._done, None
            assert done is not None
            done(result)


class Portal:
    """A trio thread owning the store opened with ``open_store(target, **options)``.

    Construct anywhere, then :meth:`start`; every other method is safe from any thread
    (except the portal's own, where a blocking call would deadlock: ``RuntimeError``).
    """

    def __init__(self, target: Any, options: Mapping[str, Any]) -> None:
        self.target = target
        self._options = dict(options)
        self._grace: float = self._options.get("shutdown_timeout", _SHUTDOWN_TIMEOUT)
        self._lock = threading.Lock()  # guards the lifecycle fields below
        self._token: trio.lowlevel.TrioToken | None = None
        self._accepting = False
        self._ended = False
        self._error: BaseException | None = None  # how opening or closing failed
        self._on_ready: Callable[[BaseException | None], None] | None = None
        self._on_closed: list[Callable[[BaseException | None], None]] = []
        self._store: Store | None = None  # store's thread only, like the rest below
        self._nursery: trio.Nursery | None = None
        self._close_requested = trio.Event()
        self._subscriptions: set[Subscription] = set()
        self._inbox: deque[Call] = deque()  # calls waiting for the store's thread
        self._scheduled = False  # a drain of the inbox is queued on the store's thread
        self._thread: threading.Thread | None = None
        #: Set once the store is open (attributes the shells expose without a hop).
        self.path = str(target)
        self.read_only = False

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, on_ready: Callable[[BaseException | None], None]) -> None:
        """Start the store's thread; ``on_ready(None)`` once the store is open, or
        ``on_ready(error)`` if opening failed (the thread has ended then). Non-blocking;
        ``on_ready`` runs on the store's thread and must only hand the news on."""
        self._on_ready = on_ready
        self._thread = threading.Thread(
            target=self._thread_main, name="threadstore-portal", daemon=True
        )
        self._thread.start()

    def request_close(self, on_closed: Callable[[BaseException | None], None]) -> None:
        """Refuse new calls and close the store; ``on_closed(error or None)`` once the store
        has drained and its thread ended (at once if it had). Non-blocking, idempotent."""
        with self._lock:
            self._accepting = False
            ended, token = self._ended, self._token
            if not ended:
                self._on_closed.append(on_closed)
        if ended:
            on_closed(self._error)
            return
        if token is not None:
            with suppress(trio.RunFinishedError):  # ending: on_closed fires from the thread
                token.run_sync_soon(self._close_requested.set)

    def close(self) -> None:
        """Close and block until the store has drained (:meth:`request_close`, then wait).

        Raises what closing raised, if anything."""
        self._not_on_own_thread()
        finished = threading.Event()
        errors: list[BaseException] = []

        def closed(error: BaseException | None) -> None:
            if error is not None:
                errors.append(error)
            finished.set()

        self.request_close(closed)
        finished.wait()
        if errors:
            raise errors[0]

    def _thread_main(self) -> None:
        atexit.register(self.close)  # a store never closed still drains at exit
        try:
            trio.run(self._main)
        except BaseException as exc:  # handed to the opener or the closer, never lost
            self._error = exc
        finally:
            atexit.unregister(self.close)
        with self._lock:
            self._accepting = False
            self._ended = True
            callbacks, self._on_closed = self._on_closed, []
        self._refuse_queued()
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:  # opening failed
            on_ready(self._error or _closed(self.path))
            return
        for callback in callbacks:
            callback(self._error)

    async def _main(self) -> None:
        async with trio.open_nursery() as calls:
            self._nursery = calls
            try:
                async with open_store(self.target, **self._options) as store:
                    await self._serve(store)
            except Exception as exc:  # opening or closing failed: reported, not raised in
                self._error = exc  # the nursery (which would wrap it in a group)
            # The store has drained; calls still running get the grace the store had.
            self._store = None
            for subscription in list(self._subscriptions):
                subscription._scope.cancel()
            calls.cancel_scope.deadline = trio.current_time() + self._grace

    async def _serve(self, store: Store) -> None:
        self._store = store
        self.path, self.read_only = store.path, store.read_only
        with self._lock:
            self._token = trio.lowlevel.current_trio_token()
            self._accepting = not self._on_closed
            if self._on_closed:  # closed before it was open
                self._close_requested.set()
        on_ready, self._on_ready = self._on_ready, None
        assert on_ready is not None
        on_ready(None)
        await self._close_requested.wait()
        with self._lock:
            self._accepting = False

    # -- calls --------------------------------------------------------------------------

    def submit(self, fn: Callable[[Store], Awaitable[Any]], done: Done) -> Call:
        """Run ``await fn(store)`` on the store's thread; ``done(outcome)`` when it ended.

        Never blocks. Raises :class:`StoreClosedError` if the store is closing or closed.
        """
        return self._queue(Call(self, fn, done))

    def view(self, namespace: str) -> ScopedStore:
        """``store.scoped(namespace)``, made in the caller's thread (a view is a plain value).

        Raises :class:`StoreClosedError` if the store is not open, ``InvalidItemError`` for
        a bad namespace."""
        store = self._store
        if store is None:
            raise _closed(self.path)
        return store.scoped(namespace)

    def append(
        self,
        thread_id: str,
        items: tuple[Item, ...],
        done: Done,
        view: ScopedStore | None = None,
    ) -> Call:
        """``store.append(thread_id, *items)`` (on ``view`` if given): ``done`` gets its
        :class:`Receipt` (or error).

        The same call as ``submit(lambda s: s.append(...))``, without a trio task per call:
        the store's thread accepts the items with ``append_nowait`` as it takes the call,
        and one task per batch of calls waits for their commits in order. When the store is
        over its memory bound the call falls back to ``store.append`` (which waits for room).
        """
        fn = partial(_append, view, thread_id, items)
        return self._queue(Call(self, fn, done, (view, thread_id, items)))

    def _queue(self, call: Call) -> Call:
        # Calls wait in one FIFO queue; the store's thread is woken once per batch (the
        # queue is appended to before the flag is read, and the drain clears the flag before
        # it empties the queue, so no call is left behind). A call queued as the store's
        # thread ends is finished with StoreClosedError, here or by that thread.
        token = self._token
        if not self._accepting or token is None:
            raise _closed(self.path)
        self._inbox.append(call)
        if not self._scheduled:
            self._scheduled = True
            with suppress(trio.RunFinishedError):
                token.run_sync_soon(self._drain)
        if self._ended:
            self._refuse_queued()
        return call

    def _refuse_queued(self) -> None:
        """Finish every queued call with StoreClosedError (the store's thread has ended)."""
        while True:
            try:
                call = self._inbox.popleft()
            except IndexError:
                return
            call._finish(outcome.Error(_closed(self.path)))

    def _drain(self) -> None:
        """On the store's thread: start every queued call, in order."""
        self._scheduled = False
        inbox, store, nursery = self._inbox, self._store, self._nursery
        accepted: list[tuple[Call, Receipt]] = []
        while inbox:
            call = inbox.popleft()
            if store is None or nursery is None:
                call._finish(outcome.Error(_closed(self.path)))
            elif call._cancelled:
                call._finish(_GAVE_UP)  # cancelled before it started: nothing happened
            elif call._append is None:
                call._context.run(nursery.start_soon, self._run, call)
            else:
                view, thread_id, items = call._append
                target = store if view is None else view
                try:
                    receipt = call._context.run(target.append_nowait, thread_id, *items)
                except (StoreOverloadedError, ThreadNotMetError):
                    # Waits for room, or looks up a thread another process made.
                    call._context.run(nursery.start_soon, self._run, call)
                except Exception as exc:
                    call._finish(outcome.Error(exc))
                else:
                    # The caller is woken by the commit itself (on the engine's thread)
                    # when the engine can; ``_until_durable`` covers every other case.
                    receipt._when_committed(partial(call._finish, outcome.Value(receipt)))
                    accepted.append((call, receipt))
        if accepted:
            assert nursery is not None
            nursery.start_soon(self._until_durable, accepted)

    async def _until_durable(self, accepted: list[tuple[Call, Receipt]]) -> None:
        """Finish accepted appends as they commit (in queue order, which is commit order):
        one wait per commit still pending, not a checkpoint per call."""
        for index, (call, receipt) in enumerate(accepted):
            if receipt._committed():
                call._finish(outcome.Value(receipt))
                continue
            try:
                await receipt.durable()
            except Exception as exc:
                call._finish(outcome.Error(exc))
            except BaseException:  # the shutdown deadline: the rest are not waited for
                for unfinished, _ in accepted[index:]:
                    unfinished._finish(outcome.Error(_closed(self.path)))
                raise
            else:
                call._finish(outcome.Value(receipt))
        await trio.lowlevel.checkpoint()

    async def _run(self, call: Call) -> None:  # noqa: ASYNC910 - a spawned task; the store checkpoints
        """One call as a trio task of its own, cancellable through its scope."""
        store = self._store
        if store is None:  # started just before the store closed
            call._finish(outcome.Error(_closed(self.path)))
            await trio.lowlevel.checkpoint()
            return
        result = _GAVE_UP
        call._scope = scope = trio.CancelScope()
        if call._cancelled:
            scope.cancel()
        try:
            with scope:
                result = outcome.Value(await call._fn(store))
        except BaseException as exc:
            if isinstance(exc, Exception):
                result = outcome.Error(exc)
            else:  # cancelled by the portal's shutdown deadline (or worse): report, re-raise
                call._finish(outcome.Error(_closed(self.path)))
                raise
        call._finish(result)

    def run_sync(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn(store)`` on the store's thread; block the caller for that hop only."""
        self._not_on_own_thread()
        token = self._token
        if not self._accepting or token is None:
            raise _closed(self.path)
        ran = threading.Lock()
        ran.acquire()
        box: list[outcome.Outcome[T]] = []
        context = contextvars.copy_context()

        def run() -> None:
            store = self._store
            if store is None:
                box.append(outcome.Error(_closed(self.path)))
            else:
                box.append(context.run(outcome.capture, fn, store))
            ran.release()

        try:
            token.run_sync_soon(run)
        except trio.RunFinishedError:
            raise _closed(self.path) from None
        ran.acquire()
        return box[0].unwrap()

    def _not_on_own_thread(self) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError(
                "a blocking threadstore call from the store's own thread would deadlock "
                "(use the trio Store there)"
            )


@attrs.define(eq=False)
class Subscription:
    """A ``store.subscribe()`` held open by a task on the store's thread.

    :meth:`open` (a portal call) starts the holder and returns once it is subscribed;
    :meth:`next` (a portal call each) takes the next event, raising ``StopAsyncIteration``
    when the subscription ended; :meth:`close` (a portal call) unsubscribes.
    """

    portal: Portal
    _events: AsyncIterator[ThreadEvent] | None = None
    _scope: trio.CancelScope = attrs.Factory(trio.CancelScope)

    @classmethod
    def opener(
        cls,
        portal: Portal,
        subscribe: Callable[[Store], AbstractAsyncContextManager[AsyncIterator[ThreadEvent]]],
    ) -> Callable[[Store], Awaitable[Subscription]]:
        """The portal call that subscribes with ``subscribe(store)`` (e.g.
        ``lambda s: s.subscribe(since, buffer=buffer)``)."""

        async def open_(store: Store) -> Subscription:
            subscription: Subscription = cls(portal)
            assert portal._nursery is not None
            await portal._nursery.start(subscription._hold, subscribe(store))
            return subscription

        return open_

    async def _hold(
        self,
        subscription: AbstractAsyncContextManager[AsyncIterator[ThreadEvent]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with subscription as events:
            self._events = events
            self.portal._subscriptions.add(self)
            try:
                task_status.started()
                with self._scope:
                    await trio.sleep_forever()
            finally:
                self.portal._subscriptions.discard(self)

    async def next(self, _store: Store) -> ThreadEvent:
        """The next event (a portal call); ``StopAsyncIteration`` once it ended."""
        if self._events is None or self._scope.cancel_called:
            await trio.lowlevel.checkpoint()
            raise StopAsyncIteration
        return await self._events.__anext__()

    async def close(self, _store: Store) -> None:
        """Unsubscribe (a portal call; idempotent)."""
        self._scope.cancel()
        await trio.lowlevel.checkpoint()
