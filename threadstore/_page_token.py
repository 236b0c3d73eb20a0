"""The page tokens of ``list_threads`` (its opaque, authenticated keyset ``cursor``).

A cursor carries the position after which the next page starts (the sort value of the last
thread listed and its id) and a fingerprint of the query that made it, authenticated with
HMAC-SHA256 under the store's own secret. A cursor that was altered, made by another store or
for a different query is rejected with ``InvalidCursorError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from typing import Literal

import attrs

from ._errors import InvalidCursorError, shorten

__all__ = ["CursorQuery", "OrderBy", "decode_cursor", "encode_cursor"]

OrderBy = Literal["updated_at", "created_at", "recency_at"]

_VERSION = 1
_MAC_BYTES = 16
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")


@attrs.frozen(kw_only=True)
class CursorQuery:
    """The parameters of a listing that a cursor is only valid for."""

    order_by: OrderBy
    descending: bool
    archived: bool
    search: str | None
    include_empty: bool
    #: The namespace listed (None: every namespace).
    namespace: str | None = None

    def fingerprint(self) -> str:
        """A short digest identifying this query."""
        fields: list[object] = [
            self.order_by,
            self.descending,
            self.archived,
            self.search,
            self.include_empty,
        ]
        if self.namespace is not None:  # (tokens of unscoped listings keep their digest)
            fields.append(self.namespace)
        text = json.dumps(fields, separators=(",", ":"))
        return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_cursor(secret: bytes, query: CursorQuery, sort_value_us: int, thread_id: str) -> str:
    """The cursor for the page after the thread ``thread_id`` with sort value ``sort_value_us``."""
    payload = json.dumps(
        [_VERSION, query.fingerprint(), sort_value_us, thread_id], separators=(",", ":")
    ).encode("ascii")
    return base64.urlsafe_b64encode(_mac(secret, payload) + payload).decode("ascii").rstrip("=")


def decode_cursor(secret: bytes, token: object, query: CursorQuery) -> tuple[int, str]:
    """Return ``(sort_value_us, thread_id)`` of a cursor made by ``encode_cursor``.

    Raise ``InvalidCursorError`` if ``token`` is malformed, was altered or made with another
    secret (another store), or was made for a different ``query``.
    """
    if not isinstance(token, str):
        raise InvalidCursorError(
            f"malformed cursor: expected a str, got {shorten(token)} of type {type(token).__name__}"
        )
    if _TOKEN_RE.fullmatch(token) is None:
        raise InvalidCursorError(f"malformed cursor {shorten(token)}: not url-safe base64")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursorError(f"malformed cursor {shorten(token)}: bad base64") from None
    # Reject alternative spellings of the same bytes (unused low bits in the last character).
    if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != token:
        raise InvalidCursorError(f"malformed cursor {shorten(token)}: not canonical base64")
    if len(raw) <= _MAC_BYTES:
        raise InvalidCursorError(f"malformed cursor {shorten(token)}: too short")
    mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise InvalidCursorError(
            f"cursor {shorten(token)} was tampered with or made by another store"
        )
    try:
        version, fingerprint, sort_value_us, thread_id = json.loads(payload)
    except (ValueError, TypeError):
        raise InvalidCursorError(f"malformed cursor {shorten(token)}: bad structure") from None
    if (
        version != _VERSION
        or not isinstance(fingerprint, str)
        or not isinstance(sort_value_us, int)
        or isinstance(sort_value_us, bool)
        or not isinstance(thread_id, str)
    ):
        raise InvalidCursorError(f"malformed cursor {shorten(token)}: bad structure")
    if fingerprint != query.fingerprint():
        raise InvalidCursorError(
            f"cursor {shorten(token)} was made for a different query "
            "(order_by, descending, archived, search or include_empty changed)"
        )
    return sort_value_us, thread_id
