"""Scales of the three run profiles: ``--smoke`` (CI, < 30 s), quick (default), ``--full``."""

from __future__ import annotations

from typing import Final

import attrs

__all__ = ["PROFILES", "Profile"]


@attrs.frozen(kw_only=True)
class Profile:
    """How big each scenario runs. S1-S3 keep the sizes their targets are stated for in
    quick and full runs (full repeats the noisy ones instead); S4 and S5 grow with the profile.
    """

    name: str
    #: S1: threads x appends, per projector cost (``None``: no projector at all).
    s1_threads: int
    s1_appends: int
    s1_costs_ms: tuple[float | None, ...]
    #: S2: threads x items per burst, repeated (ours and the bare loop alternate).
    s2_threads: int
    s2_items: int
    s2_repeats: int
    #: S3: goal-first creations, idle and again under a burst.
    s3_creates: int
    #: S4: threads x items in the store; timed calls per figure.
    s4_threads: int
    s4_items: int
    s4_calls: int
    #: S5: threads touched once, in a child process.
    s5_threads: int
    #: S6: threads the child bursts into; it is killed after this many acknowledged appends.
    s6_threads: int
    s6_kill_after: int
    #: S7: sequential appends per layer; burst threads x items; rounds (layers alternate).
    s7_appends: int
    s7_threads: int
    s7_items: int
    s7_repeats: int
    #: S8: items in the long thread; timed calls of each history edit.
    s8_items: int
    s8_calls: int
    #: S9: ADK sessions (over users) listed; timed calls.
    s9_sessions: int
    s9_users: int
    s9_calls: int
    #: S10: threads a subscriber replays from the change index; cross-process events timed.
    s10_threads: int
    s10_events: int
    #: S11: the PostgreSQL engine beside SQLite: burst threads x items (repeated; the
    #: engines alternate), goal-first creations, threads in the store when listing, and
    #: timed list calls.
    s11_threads: int
    s11_items: int
    s11_repeats: int
    s11_creates: int
    s11_list_threads: int
    s11_calls: int
    #: A scenario still running after this many seconds fails (a hang must not stall CI).
    timeout_s: float


SMOKE: Final = Profile(
    name="smoke",
    s1_threads=10,
    s1_appends=10,
    s1_costs_ms=(None, 0.0, 10.0, 100.0),
    s2_threads=20,
    s2_items=20,
    s2_repeats=1,
    s3_creates=30,
    s4_threads=500,
    s4_items=20,
    s4_calls=100,
    s5_threads=2_000,
    s6_threads=20,
    s6_kill_after=300,
    s7_appends=200,
    s7_threads=20,
    s7_items=20,
    s7_repeats=1,
    s8_items=1000,
    s8_calls=3,
    s9_sessions=500,
    s9_users=10,
    s9_calls=3,
    s10_threads=500,
    s10_events=5,
    s11_threads=10,
    s11_items=10,
    s11_repeats=1,
    s11_creates=20,
    s11_list_threads=500,
    s11_calls=50,
    timeout_s=120,
)

QUICK: Final = Profile(
    name="quick",
    s1_threads=50,
    s1_appends=40,
    s1_costs_ms=(None, 0.0, 10.0, 100.0),
    s2_threads=100,
    s2_items=100,
    s2_repeats=2,
    s3_creates=300,
    s4_threads=10_000,
    s4_items=20,
    s4_calls=500,
    s5_threads=20_000,
    s6_threads=200,
    s6_kill_after=5_000,
    s7_appends=2000,
    s7_threads=100,
    s7_items=100,
    s7_repeats=2,
    s8_items=10000,
    s8_calls=10,
    s9_sessions=2000,
    s9_users=10,
    s9_calls=10,
    s10_threads=10_000,
    s10_events=40,
    s11_threads=100,
    s11_items=100,
    s11_repeats=2,
    s11_creates=300,
    s11_list_threads=10_000,
    s11_calls=500,
    timeout_s=600,
)

FULL: Final = Profile(
    name="full",
    s1_threads=50,
    s1_appends=40,
    s1_costs_ms=(None, 0.0, 10.0, 100.0),
    s2_threads=100,
    s2_items=100,
    s2_repeats=5,
    s3_creates=1_000,
    s4_threads=100_000,
    s4_items=20,
    s4_calls=2_000,
    s5_threads=100_000,
    s6_threads=1_000,
    s6_kill_after=50_000,
    s7_appends=5000,
    s7_threads=100,
    s7_items=100,
    s7_repeats=5,
    s8_items=10000,
    s8_calls=30,
    s9_sessions=10000,
    s9_users=10,
    s9_calls=20,
    s10_threads=100_000,
    s10_events=200,
    s11_threads=100,
    s11_items=100,
    s11_repeats=5,
    s11_creates=1000,
    s11_list_threads=10_000,
    s11_calls=2_000,
    timeout_s=3_600,
)

PROFILES: Final = {p.name: p for p in (SMOKE, QUICK, FULL)}
