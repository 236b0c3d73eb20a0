"""Thread metadata and the pure fold that derives it from the log.

``Patch.from_items`` turns a contiguous run of items into a patch; patches ``merge``
associatively; ``Projection.apply`` folds a patch into a thread's metadata. Folding items in
one batch or in any split of batches gives exactly the same ``Projection``.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeAlias

import attrs

from ._history import CONTROL_KINDS, FORK_KIND, REWIND_KIND
from ._items import (
    METADATA_KIND,
    URGENT_KINDS,
    Item,
    StoredItem,
    datetime_to_us,
    normalize_json,
    us_to_datetime,
)

__all__ = [
    "LAST_MESSAGE_CHARS",
    "PREVIEW_CHARS",
    "Patch",
    "Pending",
    "Projection",
    "Status",
    "ThreadMeta",
    "fold_log_rows",
    "truncate",
]

PREVIEW_CHARS = 240
LAST_MESSAGE_CHARS = 240

Status: TypeAlias = Literal["idle", "running", "error"]
_STATUSES: tuple[Status, Status, Status] = ("idle", "running", "error")
# A status transition maps each of idle/running/error (in that order) to the resulting status.
_Transition: TypeAlias = tuple[Status, Status, Status]
_SAME: _Transition = ("idle", "running", "error")
_TRANSITIONS: dict[str, _Transition] = {
    "turn_started": ("running", "running", "running"),
    "error": ("error", "error", "error"),
    "turn_completed": ("idle", "idle", "error"),
    "turn_aborted": ("idle", "idle", "error"),
}


_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


def _readonly(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy. Proxies made here wrap private dicts, so they are reused as is."""
    if type(mapping) is types.MappingProxyType:
        return mapping
    return types.MappingProxyType(dict(mapping)) if mapping else _EMPTY


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when it was cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


@attrs.frozen(kw_only=True)
class ThreadMeta:
    """A thread's metadata: what thread pickers list and sort. Derived from the log."""

    id: str
    created_at: datetime
    updated_at: datetime
    recency_at: datetime
    title: str | None
    goal: str | None
    preview: str | None
    last_message: str | None
    item_count: int
    turn_count: int
    status: Status
    input_tokens: int
    output_tokens: int
    archived_at: datetime | None
    extra: Mapping[str, Any] = attrs.field(converter=_readonly)
    seq: int
    #: The tenant the thread belongs to, fixed at creation (``""``: the default).
    namespace: str = ""
    #: For a thread made by ``Store.fork``: the source thread and the seq it was forked at.
    forked_from: str | None = None
    forked_at: int | None = None
    #: The store-wide change number of the thread's latest listed change (see
    #: :meth:`threadstore.Store.subscribe`): strictly increasing in commit order, so a
    #: list and a feed can be lined up. Not part of equality (0 on values the store did
    #: not read or write).
    change: int = attrs.field(default=0, eq=False)


def _compose(first: _Transition, then: _Transition) -> _Transition:
    a, b, c = (then[_STATUSES.index(s)] for s in first)
    return (a, b, c)


def _merge_nested(
    left: Mapping[str, Mapping[str, Any]], right: Mapping[str, Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    result = dict(left)
    for name, update in right.items():
        result[name] = _readonly({**result.get(name, {}), **update})
    return result


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _later(current: datetime, us: int | None) -> datetime:
    if us is None or us <= datetime_to_us(current):
        return current
    return us_to_datetime(us)


def _latest(a: str | None, b: str | None) -> str | None:
    return a if b is None else b


@attrs.frozen(kw_only=True)
class Patch:
    """The metadata change derived from a contiguous run of items (times in µs).

    ``first_seq``/``last_seq`` are the seq range covered, both 0 for a patch with no items
    (``Patch.empty()`` or a projector's ``Patch.extra_update``). ``a.merge(b)`` is what applying
    ``a`` then ``b`` does; it is associative.
    """

    first_seq: int = 0
    last_seq: int = 0
    item_count: int = 0
    turn_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    #: First non-blank user_message text in the run (already truncated to ``PREVIEW_CHARS``).
    first_user_text: str | None = None
    goal: str | None = None
    title: str | None = None
    #: Latest assistant_message text, truncated to ``LAST_MESSAGE_CHARS``.
    last_message: str | None = None
    updated_at_us: int | None = None
    recency_at_us: int | None = None
    status: _Transition = _SAME
    #: Top-level ``extra`` keys set by ``metadata`` items; ``None`` deletes the key.
    extra: Mapping[str, Any] = attrs.field(default={}, converter=_readonly)
    #: Projector updates, shallow-merged into ``extra[name]`` after ``extra`` is applied.
    extra_nested: Mapping[str, Mapping[str, Any]] = attrs.field(default={}, converter=_readonly)
    has_urgent_kind: bool = False
    #: The run holds a ``rewind``: the context statistics must be folded again from the log
    #: (see ``Projection.with_context``); the other fields still apply.
    rewound: bool = False
    #: From a ``fork`` item (a forked thread's first): the source and the seq forked at.
    forked_from: str | None = None
    forked_at: int | None = None

    @classmethod
    def empty(cls) -> Patch:
        """The patch that changes nothing (the identity of ``merge``)."""
        return _EMPTY_PATCH

    @classmethod
    def from_items(cls, items: Sequence[StoredItem]) -> Patch:
        """The patch of ``items``: validated items with consecutive seqs, in seq order."""
        patch = cls()
        for item in items:
            patch = patch.merge(cls._from_item(item))
        return patch

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, int, str, Mapping[str, Any]]]) -> Patch:
        """``from_items`` over ``(seq, created_at_us, kind, data)`` rows, in one pass.

        The append path's fold: no per-item ``Patch`` or ``datetime`` is built.
        """
        if not rows:
            return cls()
        turns = input_tokens = output_tokens = 0
        first_user: str | None = None
        goal = title = last_message = None
        updated: int | None = None
        recency: int | None = None
        status = _SAME
        extra: dict[str, Any] = {}
        urgent = rewound = False
        controls = 0
        forked_from: str | None = None
        forked_at: int | None = None
        for _seq, at, kind, data in rows:
            if updated is None or at > updated:
                updated = at
            text = data.get("text")
            if kind in CONTROL_KINDS:
                controls += 1  # history edits: not part of the context, not counted
                if kind == REWIND_KIND:
                    rewound = True
                else:
                    forked_from, forked_at = data.get("from"), data.get("at_seq")
                continue
            if kind == "user_message" and isinstance(text, str):
                recency = at if recency is None or at > recency else recency
                if first_user is None and text.strip():
                    first_user = truncate(text, PREVIEW_CHARS)
            elif kind == "turn_started":
                recency = at if recency is None or at > recency else recency
                turns += 1
            elif kind == "assistant_message" and isinstance(text, str):
                last_message = truncate(text, LAST_MESSAGE_CHARS)
            elif kind == "goal" and isinstance(text, str):
                goal = text
            elif kind == "title" and isinstance(text, str):
                title = text
            elif kind == "token_usage":
                input_tokens += data.get("input", 0)
                output_tokens += data.get("output", 0)
            elif kind == METADATA_KIND and isinstance(data.get("extra"), Mapping):
                extra.update(normalize_json(data["extra"], "data['extra']"))
            transition = _TRANSITIONS.get(kind)
            if transition is not None:
                status = _compose(status, transition)
            urgent = urgent or kind in URGENT_KINDS
        return cls(
            first_seq=rows[0][0],
            last_seq=rows[-1][0],
            item_count=len(rows) - controls,
            turn_count=turns,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            first_user_text=first_user,
            goal=goal,
            title=title,
            last_message=last_message,
            updated_at_us=updated,
            recency_at_us=recency,
            status=status,
            extra=extra,
            has_urgent_kind=urgent,
            rewound=rewound,
            forked_from=forked_from,
            forked_at=forked_at,
        )

    @classmethod
    def _from_item(cls, item: StoredItem) -> Patch:
        kind, data = item.kind, item.data
        at = datetime_to_us(item.created_at)
        if kind in CONTROL_KINDS:
            fork = kind == FORK_KIND
            return cls(
                first_seq=item.seq,
                last_seq=item.seq,
                updated_at_us=at,
                rewound=not fork,
                forked_from=data.get("from") if fork else None,
                forked_at=data.get("at_seq") if fork else None,
            )
        text = data.get("text")
        fields: dict[str, Any] = {}
        if kind == "user_message" and isinstance(text, str):
            fields["recency_at_us"] = at
            if text.strip():
                fields["first_user_text"] = truncate(text, PREVIEW_CHARS)
        elif kind == "turn_started":
            fields["recency_at_us"] = at
            fields["turn_count"] = 1
        elif kind == "assistant_message" and isinstance(text, str):
            fields["last_message"] = truncate(text, LAST_MESSAGE_CHARS)
        elif kind in ("goal", "title") and isinstance(text, str):
            fields[kind] = text
        elif kind == "token_usage":
            fields["input_tokens"] = data.get("input", 0)
            fields["output_tokens"] = data.get("output", 0)
        elif kind == METADATA_KIND and isinstance(data.get("extra"), Mapping):
            fields["extra"] = normalize_json(data["extra"], "data['extra']")
        return cls(
            first_seq=item.seq,
            last_seq=item.seq,
            item_count=1,
            updated_at_us=at,
            status=_TRANSITIONS.get(kind, _SAME),
            has_urgent_kind=kind in URGENT_KINDS,
            **fields,
        )

    @classmethod
    def extra_update(cls, name: str, mapping: Mapping[str, Any]) -> Patch:
        """A projector's output: shallow-merge ``mapping`` into ``extra[name]``.

        A value of ``None`` deletes that key. Raise ``InvalidItemError`` if ``mapping`` is not
        JSON (see ``normalize_json``).
        """
        update = normalize_json(mapping, f"projector {name!r} output")
        if not isinstance(update, dict):
            raise TypeError(f"projector {name!r} must return a mapping, got {mapping!r}")
        return cls(extra_nested={name: update})

    @property
    def urgent(self) -> bool:
        """Whether the run holds a kind in ``URGENT_KINDS``.

        A thread's first user message is urgent too, which only the caller can tell:
        ``patch.has_user_message and not projection.has_user_message``.
        """
        return self.has_urgent_kind

    @property
    def has_user_message(self) -> bool:
        """Whether the run holds a non-blank user message (which becomes the preview)."""
        return self.first_user_text is not None

    def merge(self, other: Patch) -> Patch:
        """The patch equal to applying ``self`` then ``other`` (``other``'s items follow)."""
        if other is _EMPTY_PATCH:
            return self
        if self is _EMPTY_PATCH:
            return other
        if self.last_seq and other.first_seq and other.first_seq != self.last_seq + 1:
            raise ValueError(
                f"patches are not contiguous: seq {self.first_seq}..{self.last_seq} "
                f"then {other.first_seq}..{other.last_seq}"
            )
        if other.extra:
            extra: Mapping[str, Any] = {**self.extra, **other.extra}
            nested: Mapping[str, Any] = {
                k: v for k, v in self.extra_nested.items() if k not in other.extra
            }
        else:
            extra, nested = self.extra, self.extra_nested
        return Patch(
            first_seq=self.first_seq or other.first_seq,
            last_seq=other.last_seq or self.last_seq,
            item_count=self.item_count + other.item_count,
            turn_count=self.turn_count + other.turn_count,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            first_user_text=self.first_user_text or other.first_user_text,
            goal=_latest(self.goal, other.goal),
            title=_latest(self.title, other.title),
            last_message=_latest(self.last_message, other.last_message),
            updated_at_us=_max(self.updated_at_us, other.updated_at_us),
            recency_at_us=_max(self.recency_at_us, other.recency_at_us),
            status=_compose(self.status, other.status),
            extra=extra,
            extra_nested=(
                _merge_nested(nested, other.extra_nested) if other.extra_nested else nested
            ),
            has_urgent_kind=self.has_urgent_kind or other.has_urgent_kind,
            rewound=self.rewound or other.rewound,
            forked_from=_latest(self.forked_from, other.forked_from),
            forked_at=other.forked_at if other.forked_from is not None else self.forked_at,
        )


_EMPTY_PATCH = Patch()


#: A log row: ``(seq, created_at_us, kind, data_json)``.
_Row: TypeAlias = tuple[int, int, str, str]

#: Kinds whose data the fold reads (the others count by kind alone): only these are decoded.
_FOLDED_DATA_KINDS: frozenset[str] = frozenset(
    {"user_message", "assistant_message", "goal", "title", "token_usage", METADATA_KIND, FORK_KIND}
)


@attrs.frozen(eq=False)
class Pending:
    """Appended items not yet folded into the thread's metadata: the projection's work.

    It holds the items' log rows (not the items: nothing per item stays alive but its row),
    as a view ``[start, end)`` of an append-only list that merges extend in place, so a
    merge costs O(1) amortized and creates no object per item. A view never changes: a
    merge into a ``Pending`` whose list grew past its view (a fork) copies first. The rows
    are folded into one :class:`Patch` once per metadata write (:meth:`fold`, on the
    writer thread), decoding only the JSON the fold needs. ``first_seq``/``last_seq`` are
    the seq range held (both 0 when empty); ``urgent`` and ``has_user_message`` are
    :attr:`Patch.urgent` and :attr:`Patch.has_user_message` of the fold, known without it.
    """

    first_seq: int = 0
    last_seq: int = 0
    urgent: bool = False
    has_user_message: bool = False
    _rows: list[_Row] = attrs.field(factory=list)
    _start: int = 0
    _end: int = 0

    @classmethod
    def empty(cls) -> Pending:
        """Nothing pending: folds to ``Patch.empty()`` (the identity of ``merge``)."""
        return _NOTHING

    @classmethod
    def of(cls, rows: Sequence[_Row], items: Sequence[Item]) -> Pending:
        """One append: ``rows`` as written to the log (in seq order) and their ``items``."""
        urgent = user = False
        for item in items:
            kind = item.kind
            if kind in URGENT_KINDS:
                urgent = True
            elif kind == "user_message" and not user:
                text = item.data.get("text")
                user = isinstance(text, str) and bool(text.strip())
        return cls(rows[0][0], rows[-1][0], urgent, user, list(rows), 0, len(rows))

    def merge(self, other: Pending) -> Pending:
        """What folding ``self`` then ``other`` does (``other``'s items follow)."""
        if not other.last_seq:
            return self
        if not self.last_seq:
            return other
        if other.first_seq != self.last_seq + 1 or self.first_seq < 0:
            # A gap (another process appended between, in a shared store) or one before
            # (a gapped Pending): only the range is kept, and the write folds the log.
            if other.first_seq <= self.last_seq:
                raise ValueError(
                    f"pending items overlap: seq {self.first_seq}..{self.last_seq} "
                    f"then {other.first_seq}..{other.last_seq}"
                )
            return Pending(
                -1,
                other.last_seq,
                self.urgent or other.urgent,
                self.has_user_message or other.has_user_message,
            )
        rows, start = self._rows, self._start
        if self._end != len(rows):  # a fork: another merge extended this list already
            rows, start = rows[start : self._end], 0
        if other._end - other._start == 1:
            rows.append(other._rows[other._start])
        else:
            rows.extend(other._rows[other._start : other._end])
        return Pending(
            self.first_seq,
            other.last_seq,
            self.urgent or other.urgent,
            self.has_user_message or other.has_user_message,
            rows,
            start,
            len(rows),
        )

    def log_rows(self) -> list[_Row]:
        """Every pending item as its log row ``(seq, created_at_us, kind, data_json)``."""
        return self._rows[self._start : self._end]

    def fold(self) -> Patch:
        """The :class:`Patch` of every pending item, in one pass."""
        return fold_log_rows(self._rows[self._start : self._end])


def fold_log_rows(rows: Sequence[_Row]) -> Patch:
    """``Patch.from_rows`` over log rows ``(seq, created_at_us, kind, data_json)`` (in seq
    order, not necessarily contiguous), decoding only the JSON the fold reads."""
    loads = json.loads
    return Patch.from_rows(
        [
            (seq, at, kind, loads(text) if kind in _FOLDED_DATA_KINDS else _EMPTY)
            for seq, at, kind, text in rows
        ]
    )


_NOTHING = Pending()


@attrs.frozen(kw_only=True)
class Projection:
    """A thread's metadata plus the fold state that is not part of ``ThreadMeta``."""

    meta: ThreadMeta
    #: Whether the preview already comes from a user message (a later goal no longer moves it).
    has_user_message: bool

    @classmethod
    def new(cls, thread_id: str, created_at_us: int, namespace: str = "") -> Projection:
        """The projection of a thread with no items yet."""
        created = us_to_datetime(created_at_us)
        meta = ThreadMeta(
            id=thread_id,
            created_at=created,
            updated_at=created,
            recency_at=created,
            title=None,
            goal=None,
            preview=None,
            last_message=None,
            item_count=0,
            turn_count=0,
            status="idle",
            input_tokens=0,
            output_tokens=0,
            archived_at=None,
            extra={},
            seq=0,
            namespace=namespace,
        )
        return cls(meta=meta, has_user_message=False)

    def apply(self, patch: Patch) -> Projection:
        """Fold ``patch`` in; its items must start right after ``meta.seq``."""
        meta = self.meta
        if patch.first_seq and patch.first_seq != meta.seq + 1:
            raise ValueError(
                f"patch for seq {patch.first_seq}..{patch.last_seq} does not follow "
                f"thread {meta.id!r} at seq {meta.seq}"
            )
        has_user = self.has_user_message
        preview = meta.preview
        if not has_user and patch.first_user_text is not None:
            has_user, preview = True, patch.first_user_text
        elif not has_user and patch.goal is not None:
            preview = truncate(patch.goal, PREVIEW_CHARS) if patch.goal.strip() else None
        extra: Mapping[str, Any]
        if not patch.extra and not patch.extra_nested:
            extra = meta.extra  # (read-only already: reused as is)
        else:
            extra = self._extra_after(patch)
        new_meta = ThreadMeta(
            id=meta.id,
            created_at=meta.created_at,
            archived_at=meta.archived_at,
            updated_at=_later(meta.updated_at, patch.updated_at_us),
            recency_at=_later(meta.recency_at, patch.recency_at_us),
            title=_latest(meta.title, patch.title),
            goal=_latest(meta.goal, patch.goal),
            preview=preview,
            last_message=_latest(meta.last_message, patch.last_message),
            item_count=meta.item_count + patch.item_count,
            turn_count=meta.turn_count + patch.turn_count,
            status=patch.status[_STATUSES.index(meta.status)],
            input_tokens=meta.input_tokens + patch.input_tokens,
            output_tokens=meta.output_tokens + patch.output_tokens,
            extra=extra,
            seq=patch.last_seq or meta.seq,
            namespace=meta.namespace,
            forked_from=meta.forked_from if patch.forked_from is None else patch.forked_from,
            forked_at=meta.forked_at if patch.forked_from is None else patch.forked_at,
        )
        return Projection(meta=new_meta, has_user_message=has_user)

    def with_context(self, context: Patch) -> Projection:
        """This projection with its context statistics replaced by ``context``'s, the patch
        of every item still in the thread's context (after a rewind).

        Counts, token sums, preview, last message, status and ``recency_at`` come from the
        context; title, goal, ``extra``, the fork fields, ``updated_at`` and ``seq`` are the
        thread's attributes, folded over every item of the log, and stay as they are.
        """
        meta = self.meta
        has_user = context.first_user_text is not None
        if has_user:
            preview = context.first_user_text
        elif meta.goal is not None and meta.goal.strip():
            preview = truncate(meta.goal, PREVIEW_CHARS)
        else:
            preview = None
        created_us = datetime_to_us(meta.created_at)
        return Projection(
            meta=attrs.evolve(
                meta,
                recency_at=us_to_datetime(max(created_us, context.recency_at_us or created_us)),
                preview=preview,
                last_message=context.last_message,
                item_count=context.item_count,
                turn_count=context.turn_count,
                status=context.status[0],
                input_tokens=context.input_tokens,
                output_tokens=context.output_tokens,
            ),
            has_user_message=has_user,
        )

    def _extra_after(self, patch: Patch) -> dict[str, Any]:
        extra = dict(self.meta.extra)
        for key, value in patch.extra.items():
            if value is None:
                extra.pop(key, None)
            else:
                extra[key] = value
        for name, update in patch.extra_nested.items():
            current = extra.get(name)
            merged = dict(current) if isinstance(current, Mapping) else {}
            for key, value in update.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            extra[name] = merged
        return extra

    def with_change(self, change: int) -> Projection:
        """This projection stamped with the change number its write was given."""
        return Projection(
            meta=attrs.evolve(self.meta, change=change), has_user_message=self.has_user_message
        )

    def with_archived_at(self, archived_at_us: int | None) -> Projection:
        """This projection archived at ``archived_at_us`` (``None``: not archived)."""
        archived = None if archived_at_us is None else us_to_datetime(archived_at_us)
        return attrs.evolve(self, meta=attrs.evolve(self.meta, archived_at=archived))
