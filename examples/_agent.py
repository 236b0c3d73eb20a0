"""The pretend model the examples stream from: deterministic turns, no network."""

from __future__ import annotations

from collections.abc import Iterator

from threadstore import Item


def turn(turn_id: str, question: str) -> Iterator[Item]:
    """One agent turn as a runtime streams it: start, a tool call and its result, the
    answer in chunks, token usage, completion."""
    yield Item.turn_started(turn_id)
    yield Item.tool_call("search", {"q": question}, f"{turn_id}/call")
    yield Item.tool_result(f"{turn_id}/call", f"3 results for {question!r}")
    for chunk in ("Here ", "is ", "what ", "I ", "found."):
        yield Item.assistant_message(chunk)
    yield Item.token_usage(120, 45)
    yield Item.turn_completed(turn_id)
