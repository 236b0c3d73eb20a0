"""Namespaces: one store, many tenants; a scoped view never shows another tenant's thread.

Contract tests over every engine (the ``store`` fixture).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from _helpers import meta_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threadstore import (
    InvalidCursorError,
    InvalidItemError,
    Item,
    Store,
    ThreadMeta,
    ThreadNotFoundError,
    open_store,
)


async def test_threads_carry_their_namespace_and_views_create_in_theirs(store: Store) -> None:
    plain = await store.create_thread(goal="g")
    alice = await store.create_thread(goal="g", namespace="acme/alice")
    assert (plain.namespace, alice.namespace) == ("", "acme/alice")
    tenant = store.scoped("acme/bob")
    assert tenant.namespace == "acme/bob"
    bob = await tenant.create_thread(goal="bob's", thread_id="bob-1")
    assert bob.namespace == "acme/bob"
    assert (await store.get_thread("bob-1")).namespace == "acme/bob"
    assert (await tenant.get_thread("bob-1")).goal == "bob's"


async def test_listing_is_confined_to_the_view_or_filtered_by_namespace(store: Store) -> None:
    for ns in ("a", "b", ""):
        for n in range(3):
            await store.create_thread(goal=f"{ns or 'root'} {n}", namespace=ns)
    a = store.scoped("a")
    assert {t.namespace for t in (await a.list_threads()).threads} == {"a"}
    assert len((await a.list_threads()).threads) == 3
    assert len((await store.list_threads()).threads) == 9
    assert {t.namespace for t in (await store.list_threads(namespace="b")).threads} == {"b"}
    assert len((await store.list_threads(namespace="")).threads) == 3
    assert (await a.list_threads(search="b 1")).threads == ()  # search stays confined
    first = await a.list_threads(limit=2)
    rest = await a.list_threads(limit=2, cursor=first.next_cursor)
    assert len(first.threads + rest.threads) == 3
    assert {t.namespace for t in rest.threads} == {"a"}
    with pytest.raises(InvalidCursorError):  # a page token belongs to its namespace
        await store.scoped("b").list_threads(limit=2, cursor=first.next_cursor)


def _cross_calls(view: Any, tid: str) -> list[Callable[[], Awaitable[Any]]]:
    async def append_nowait() -> Any:
        await trio.lowlevel.checkpoint()
        return view.append_nowait(tid, Item.user_message("x"))

    return [
        lambda: view.get_thread(tid),
        lambda: view.read_items(tid),
        lambda: view.read_context(tid),
        lambda: view.append(tid, Item.user_message("x")),
        append_nowait,
        lambda: view.append_and_flush(tid, Item.user_message("x")),
        lambda: view.flush(tid),
        lambda: view.discard(tid),
        lambda: view.update_thread(tid, title="stolen"),
        lambda: view.archive_thread(tid),
        lambda: view.unarchive_thread(tid),
        lambda: view.delete_thread(tid),
        lambda: view.rewind(tid, 0),
        lambda: view.fork(tid),
    ]


async def test_every_call_on_another_namespaces_thread_is_not_found(store: Store) -> None:
    theirs = await store.create_thread(goal="secret", namespace="acme/alice")
    await store.append_and_flush(theirs.id, Item.user_message("private"))
    before = await store.get_thread(theirs.id)
    view = store.scoped("acme/mallory")
    for call in _cross_calls(view, theirs.id):
        with pytest.raises(ThreadNotFoundError) as caught:
            await call()
        assert str(caught.value) == str(ThreadNotFoundError("missing")).replace(
            "missing", theirs.id
        )  # indistinguishable from a thread that does not exist
    assert await store.get_thread(theirs.id) == before
    assert len(await store.read_items(theirs.id)) == 2
    assert [t.id for t in (await store.list_threads(include_empty=True)).threads] == [theirs.id]


@pytest.mark.parametrize("namespace", [" lead", "trail ", "x" * 129, 3, None, "tab\there"])
async def test_bad_namespaces_are_refused_and_nothing_is_created(
    store: Store, namespace: object
) -> None:
    with pytest.raises(InvalidItemError, match="namespace"):
        await store.create_thread(goal="g", namespace=namespace)  # type: ignore[arg-type]
    with pytest.raises(InvalidItemError, match="namespace"):
        store.scoped(namespace)  # type: ignore[arg-type]
    assert (await store.list_threads(include_empty=True)).threads == ()


async def test_a_fork_stays_in_its_sources_namespace(store: Store) -> None:
    tenant = store.scoped("t")
    source = await tenant.create_thread(goal="g")
    fork = await tenant.fork(source.id)
    assert fork.namespace == "t"
    assert [t.id for t in (await store.scoped("").list_threads()).threads] == []


async def test_a_scoped_subscription_sees_only_its_namespace(store: Store) -> None:
    seen: list[str] = []
    async with store.scoped("a").subscribe() as events:
        await store.create_thread(goal="theirs", namespace="b")
        mine = await store.create_thread(goal="mine", namespace="a")
        async for event in events:
            seen.append(meta_of(event).id)
            if meta_of(event).id == mine.id:
                break
    assert seen == [mine.id]


# -- no sequence of scoped calls shows another namespace's thread --------------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["create", "append", "list", "get", "read", "rewind", "fork", "delete"]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 5),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_no_sequence_of_scoped_calls_crosses_namespaces(ops: list[tuple[str, str, int]]) -> None:
    async def run() -> None:
        async with open_store(":memory:") as store:
            owner: dict[str, str] = {}
            for op, ns, pick in ops:
                view = store.scoped(ns)
                ids = sorted(owner)
                tid = ids[pick % len(ids)] if ids else "none"
                seen: list[ThreadMeta] = []
                try:
                    if op == "create":
                        meta = await view.create_thread(goal=f"{ns}{len(owner)}")
                        owner[meta.id] = ns
                        seen.append(meta)
                    elif op == "append":
                        await view.append_and_flush(tid, Item.user_message("m"))
                    elif op == "list":
                        seen += (await view.list_threads(include_empty=True)).threads
                    elif op == "get":
                        seen.append(await view.get_thread(tid))
                    elif op == "read":
                        await view.read_items(tid)
                        await view.read_context(tid)
                        assert owner.get(tid) == ns
                    elif op == "rewind":
                        seen.append(await view.rewind(tid, 0))
                    elif op == "fork":
                        meta = await view.fork(tid)
                        owner[meta.id] = ns
                        seen.append(meta)
                    elif op == "delete":
                        await view.delete_thread(tid)
                        assert owner.pop(tid) == ns
                except ThreadNotFoundError:
                    assert owner.get(tid) != ns
                assert all(meta.namespace == ns for meta in seen)
                assert all(owner[meta.id] == ns for meta in seen)

    trio.run(run)
