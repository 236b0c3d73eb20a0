"""The opaque listing cursor: round trip and every way a cursor is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadstore._errors import InvalidCursorError
from threadstore._page_token import CursorQuery, decode_cursor, encode_cursor

SECRET = b"s" * 32
QUERY = CursorQuery(
    order_by="updated_at", descending=True, archived=False, search=None, include_empty=False
)


def refused(token: object, *, secret: bytes = SECRET, query: CursorQuery = QUERY) -> str:
    with pytest.raises(InvalidCursorError) as info:
        decode_cursor(secret, token, query)
    return str(info.value)


queries = st.builds(
    CursorQuery,
    order_by=st.sampled_from(["updated_at", "created_at", "recency_at"]),
    descending=st.booleans(),
    archived=st.booleans(),
    search=st.none() | st.text(max_size=20),
    include_empty=st.booleans(),
)


@settings(max_examples=200)
@given(queries, st.integers(-(2**62), 2**62), st.text(min_size=1, max_size=128))
def test_round_trip(query: CursorQuery, sort_value: int, thread_id: str) -> None:
    token = encode_cursor(SECRET, query, sort_value, thread_id)
    assert token.isascii()
    assert token.replace("-", "").replace("_", "").isalnum()
    assert decode_cursor(SECRET, token, query) == (sort_value, thread_id)


def test_cursor_does_not_show_the_secret() -> None:
    token = encode_cursor(SECRET, QUERY, 1, "t")
    assert SECRET not in base64.urlsafe_b64decode(token + "==")


def test_every_flipped_character_is_refused() -> None:
    token = encode_cursor(SECRET, QUERY, 1_700_000_000_000_000, "0190a1b2-thread")
    for i, char in enumerate(token):
        for replacement in {"A", "b", "-", "_", "9"} - {char}:
            tampered = token[:i] + replacement + token[i + 1 :]
            message = refused(tampered)
            assert "tampered" in message or "malformed" in message


def test_tampered_position_is_refused_as_tampered() -> None:
    token = encode_cursor(SECRET, QUERY, 1, "t")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-3] ^= 1  # inside the payload: the position changes
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    assert "tampered with or made by another store" in refused(forged)


def test_cursor_from_another_store_is_refused() -> None:
    token = encode_cursor(b"other store secret", QUERY, 1, "t")
    assert "made by another store" in refused(token)


@pytest.mark.parametrize(
    "change",
    [
        {"order_by": "created_at"},
        {"order_by": "recency_at"},
        {"descending": False},
        {"archived": True},
        {"search": "cats"},
        {"include_empty": True},
    ],
)
def test_cursor_for_another_query_is_refused(change: dict[str, Any]) -> None:
    token = encode_cursor(SECRET, QUERY, 1, "t")
    other = attrs.evolve(QUERY, **change)
    assert "different query" in refused(token, query=other)


def test_search_text_is_part_of_the_query() -> None:
    query = attrs.evolve(QUERY, search="cats")
    token = encode_cursor(SECRET, query, 1, "t")
    assert decode_cursor(SECRET, token, query) == (1, "t")
    assert "different query" in refused(token, query=attrs.evolve(QUERY, search="dogs"))


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        (None, "expected a str"),
        (12345, "expected a str"),
        (b"bytes", "expected a str"),
        ("", "not url-safe base64"),
        ("abc def", "not url-safe base64"),
        ("abc+/", "not url-safe base64"),
        ("abc=", "not url-safe base64"),
        ("é", "not url-safe base64"),
        ("A", "bad base64"),
        ("AAAA", "too short"),
    ],
)
def test_malformed_cursors_are_refused(token: object, problem: str) -> None:
    message = refused(token)
    assert "malformed cursor" in message
    assert problem in message


def test_validly_signed_garbage_is_refused_as_malformed() -> None:
    # What a future format version or a bug would produce: authentic but unreadable.
    for payload in (b"not json", b'[2,"x",1,"t"]', b'[1,"x",true,"t"]', b"{}"):
        mac = hmac.new(SECRET, payload, hashlib.sha256).digest()[:16]
        token = base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")
        assert "bad structure" in refused(token)
