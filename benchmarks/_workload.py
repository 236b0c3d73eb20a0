"""What the scenarios append: realistic agent turns, and a projector of a chosen cost."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import trio

from threadstore import Item, StoredItem, ThreadMeta

__all__ = ["TOPICS", "CostlyProjector", "item_stream", "turn_items"]

TOPICS: Final = (
    "the flaky integration test in CI",
    "a memory leak in the image resizer",
    "migrating the billing cron jobs",
    "slow queries on the orders page",
    "a race in the websocket reconnect",
    "retry storms after a deploy",
    "the CSV export timing out",
    "rate limits on the search API",
)
_TOOLS: Final = ("read_file", "run_tests", "grep", "edit_file", "http_get")
_TEXT: Final = (
    "the handler retries the request when the upstream returns a transient error and logs "
    "the attempt with its backoff so that the dashboard shows why the queue grew during the "
    "deploy window while the workers restarted one after another under the new limits"
)
_WORDS: Final = tuple(_TEXT.split(" "))


def _prose(rng: random.Random, low: int, high: int) -> str:
    """Roughly ``low``..``high`` characters of plausible text."""
    target = rng.randrange(low, high)
    words: list[str] = []
    size = 0
    while size < target:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words).capitalize() + "."


def turn_items(rng: random.Random, turn: int) -> list[Item]:
    """One agent turn as a runtime streams it (~12 items, ~250 bytes each on average)."""
    topic = rng.choice(TOPICS)
    turn_id = f"turn-{turn}"
    call_id = f"call-{turn}-{rng.randrange(10**9)}"
    items = [
        Item.user_message(f"Can you look into {topic}? " + _prose(rng, 60, 240)),
        Item.turn_started(turn_id),
        Item.reasoning(_prose(rng, 200, 600)),
        Item.tool_call(
            rng.choice(_TOOLS), {"query": topic, "path": f"src/module_{turn}.py"}, call_id
        ),
        Item.tool_result(call_id, {"lines": rng.randrange(1, 400), "text": _prose(rng, 300, 900)}),
    ]
    items.extend(Item.assistant_message(_prose(rng, 40, 200)) for _ in range(rng.randrange(4, 8)))
    items.append(Item.token_usage(rng.randrange(500, 4000), rng.randrange(100, 900)))
    items.append(Item.turn_completed(turn_id))
    return items


def item_stream(seed: int) -> Iterator[Item]:
    """An endless, deterministic stream of turns' items."""
    rng = random.Random(seed)
    turn = 0
    while True:
        turn += 1
        yield from turn_items(rng, turn)


class CostlyProjector:
    """A custom projector whose every call costs ``cost`` seconds (an LLM call stand-in).

    It counts the batches and items it saw in ``meta.extra["bench"]``.
    """

    name = "bench"

    def __init__(self, cost: float) -> None:
        self.cost = cost
        self.calls = 0

    async def project(self, meta: ThreadMeta, items: Sequence[StoredItem]) -> Mapping[str, Any]:
        self.calls += 1
        await trio.sleep(self.cost)
        seen = meta.extra.get(self.name)
        before = int(seen.get("items", 0)) if isinstance(seen, Mapping) else 0
        return {"batches": self.calls, "items": before + len(items)}
