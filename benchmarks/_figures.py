"""What a scenario returns: figures, each with an optional target, plus data for the plot."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import attrs

__all__ = ["Figure", "ScenarioResult", "Target"]

Op = Literal["<", "<=", ">", ">=", "=="]
_OPS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
}


@attrs.frozen(kw_only=True)
class Target:
    """``value <op> threshold``; ``note`` says where the threshold comes from if not obvious."""

    op: Op
    threshold: float
    note: str = ""

    def met(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        return _OPS[self.op](value, self.threshold)


@attrs.frozen(kw_only=True)
class Figure:
    """One measured number. ``key`` is stable (for JSON consumers), ``label`` is for people."""

    key: str
    label: str
    value: float | None
    unit: str = ""
    target: Target | None = None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.value)

    def to_json(self) -> dict[str, Any]:
        value = self.value
        if value is not None and math.isnan(value):
            value = None
        out: dict[str, Any] = {"key": self.key, "label": self.label, "value": value}
        out["unit"] = self.unit
        if self.target is not None:
            out["target"] = {"op": self.target.op, "threshold": self.target.threshold}
            if self.target.note:
                out["target"]["note"] = self.target.note
            out["met"] = self.met
        return out


@attrs.frozen(kw_only=True)
class ScenarioResult:
    """A scenario's figures; ``series`` feeds the plot, ``settings`` the SQLite settings seen."""

    id: str
    title: str
    figures: tuple[Figure, ...]
    params: Mapping[str, Any] = attrs.field(factory=dict)
    series: Mapping[str, Any] = attrs.field(factory=dict)
    settings: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    notes: tuple[str, ...] = ()
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "wall_s": round(self.wall_s, 3),
            "params": dict(self.params),
            "figures": [f.to_json() for f in self.figures],
            "notes": list(self.notes),
            "series": dict(self.series),
        }
