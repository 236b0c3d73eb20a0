"""The report: a markdown table of every figure, the JSON record, and the plot."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._figures import Figure, ScenarioResult, Target

__all__ = [
    "format_value",
    "load_results",
    "markdown_table",
    "plot",
    "report_json",
    "write_json",
]


def format_value(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if unit == "x":
        return f"{value:.3g}x" if abs(value) < 1000 else f"{value:,.0f}x"
    if unit.endswith("/s"):
        return f"{value:,.0f} {unit}"
    if float(value).is_integer() and unit in ("", "MB") and abs(value) >= 1:
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def format_target(target: Target | None, unit: str) -> str:
    if target is None:
        return ""
    text = f"{target.op} {format_value(target.threshold, unit)}"
    return f"{text} ({target.note})" if target.note else text


def _met(figure: Figure) -> str:
    met = figure.met
    if met is None:
        return "" if figure.target is None else "n/a"
    return "met" if met else "**missed**"


def markdown_table(results: Mapping[str, ScenarioResult]) -> str:
    lines = [
        "| | figure | value | target | met |",
        "|---|---|---:|---|:---:|",
    ]
    for result in results.values():
        if not result.figures:  # e.g. skipped: say why instead of leaving it out
            for note in result.notes or ("no figures",):
                lines.append(f"| {result.id} | {note} | n/a | | |")
        for figure in result.figures:
            lines.append(
                f"| {result.id} | {figure.label} | {format_value(figure.value, figure.unit)} | "
                f"{format_target(figure.target, figure.unit)} | {_met(figure)} |"
            )
    return "\n".join(lines)


def report_json(
    *,
    timestamp: str,
    profile: str,
    argv: list[str],
    machine: Mapping[str, Any],
    results: Mapping[str, ScenarioResult],
    errors: Mapping[str, str],
    wall_s: float,
) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for result in results.values():
        for durability, values in result.settings.items():
            settings.setdefault(durability, dict(values))
    figures = [f for r in results.values() for f in r.figures if f.target is not None]
    return {
        "timestamp": timestamp,
        "profile": profile,
        "argv": argv,
        "wall_s": round(wall_s, 2),
        "machine": dict(machine),
        "sqlite_settings": settings,
        "targets": {
            "met": sum(1 for f in figures if f.met is True),
            "missed": sum(1 for f in figures if f.met is False),
        },
        "errors": dict(errors),
        "scenarios": {sid: r.to_json() for sid, r in results.items()},
    }


def load_results(report: Mapping[str, Any]) -> dict[str, ScenarioResult]:
    """The scenarios of a saved report (what :func:`report_json` wrote), in their order.

    Enough for :func:`markdown_table`: ids, titles, figures and targets (``met`` is
    recomputed from the value). Any scenario id is accepted.
    """
    results = {}
    for sid, scenario in report.get("scenarios", {}).items():
        figures = []
        for figure in scenario.get("figures", ()):
            target = figure.get("target")
            figures.append(
                Figure(
                    key=figure["key"],
                    label=figure["label"],
                    value=figure.get("value"),
                    unit=figure.get("unit", ""),
                    target=None
                    if target is None
                    else Target(
                        op=target["op"],
                        threshold=target["threshold"],
                        note=target.get("note", ""),
                    ),
                )
            )
        results[sid] = ScenarioResult(
            id=scenario.get("id", sid),
            title=scenario.get("title", ""),
            figures=tuple(figures),
            params=scenario.get("params", {}),
            notes=tuple(scenario.get("notes", ())),
            wall_s=scenario.get("wall_s", 0.0),
        )
    return results


def _finite(value: Any) -> Any:
    """``value`` with every NaN/infinity replaced by None (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(report: Mapping[str, Any], directory: Path, timestamp: str) -> Path:
    """Write ``<timestamp>.json`` and ``latest.json`` (same content) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(report), indent=1, allow_nan=False, default=str) + "\n"
    path = directory / f"{timestamp}.json"
    path.write_text(text, encoding="utf-8")
    (directory / "latest.json").write_text(text, encoding="utf-8")
    return path


def _value(result: ScenarioResult | None, key: str) -> float:
    if result is not None:
        for figure in result.figures:
            if figure.key == key and figure.value is not None:
                return figure.value
    return math.nan


def _threshold(result: ScenarioResult | None, key: str) -> float:
    if result is not None:
        for figure in result.figures:
            if figure.key == key and figure.target is not None:
                return figure.target.threshold
    return math.nan


def plot(results: Mapping[str, ScenarioResult], path: Path, caption: str) -> Path:
    """Draw ``path`` (PNG): S1 latency CDFs, S2 writes per item and items/s, read latencies.

    Imports matplotlib here, with the Agg backend: nothing else in the benchmarks needs it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    ax_cdf, ax_writes, ax_rate, ax_reads = axes[0][0], axes[0][1], axes[1][0], axes[1][1]

    s1 = results.get("S1")
    if s1 is not None and s1.series:
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, label in enumerate(s1.series["append_ms"]):
            color = colors[i % len(colors)]
            name = "no projector" if label == "none" else f"{label} projector"
            for kind, style, tag in (
                ("append_ms", "-", "append"),
                ("write_through_ms", "--", "write-through"),
            ):
                values = s1.series[kind].get(label, [])
                if values:
                    ys = [100 * j / max(1, len(values) - 1) for j in range(len(values))]
                    ax_cdf.plot(values, ys, style, color=color, label=f"{tag}, {name}")
        ax_cdf.set_xscale("log")
        ax_cdf.set_xlabel("caller latency (ms, log)")
        ax_cdf.set_ylabel("percentile")
        ax_cdf.axhline(99, color="grey", linewidth=0.5)
        ax_cdf.legend(fontsize=7)
    ax_cdf.set_title("S1: append (solid) vs append_and_flush (dashed)")

    s2 = results.get("S2")
    durabilities = ["normal", "full"]
    width = 0.35
    xs = list(range(len(durabilities)))
    proj = [_value(s2, f"projection_writes_per_item.{d}") for d in durabilities]
    commits = [_value(s2, f"log_commits_per_item.{d}") for d in durabilities]
    ax_writes.bar([x - width / 2 for x in xs], proj, width, label="projection writes / item")
    ax_writes.bar([x + width / 2 for x in xs], commits, width, label="log commits / item")
    ax_writes.axhline(0.1, color="C0", linestyle=":", label="target projection <= 0.1")
    ax_writes.axhline(0.25, color="C1", linestyle=":", label="target commits <= 0.25")
    ax_writes.set_xticks(xs, durabilities)
    ax_writes.set_ylabel("writes per appended item")
    ax_writes.set_title("S2: writes per item in a 100 x 100 burst")
    ax_writes.legend(fontsize=7)

    ours = [_value(s2, f"items_per_s.{d}") for d in durabilities]
    bare = [_value(s2, f"bare_items_per_s.{d}") for d in durabilities]
    ax_rate.bar([x - width / 2 for x in xs], ours, width, label="threadstore")
    ax_rate.bar([x + width / 2 for x in xs], bare, width, label="bare group-commit loop")
    for x, floor in zip(xs, (50_000, 40_000), strict=True):
        ax_rate.hlines(floor, x - 0.45, x + 0.45, colors="red", linestyles=":")
    ax_rate.set_xticks(xs, durabilities)
    ax_rate.set_ylabel("items/s (red: target)")
    ax_rate.set_title("S2: burst throughput")
    ax_rate.legend(fontsize=7)

    s3, s4 = results.get("S3"), results.get("S4")
    reads = [
        ("S3 listed\nidle", s3, "listed_p50_ms.idle", "listed_p99_ms.idle"),
        ("S3 listed\nload", s3, "listed_p50_ms.under_load", "listed_p99_ms.under_load"),
        ("S4 list\nidle", s4, "list_p50_ms.idle", "list_p99_ms.idle"),
        ("S4 list\nload", s4, "list_p50_ms.load", "list_p99_ms.load"),
        ("S4 get\nidle", s4, "get_p50_ms.idle", "get_p99_ms.idle"),
        ("S4 read\nidle", s4, "read_items_p50_ms.idle", "read_items_p99_ms.idle"),
    ]
    rx = list(range(len(reads)))
    ax_reads.bar(
        [x - width / 2 for x in rx], [_value(r, p50) for _, r, p50, _ in reads], width, label="p50"
    )
    ax_reads.bar(
        [x + width / 2 for x in rx], [_value(r, p99) for _, r, _, p99 in reads], width, label="p99"
    )
    for x, (_, result, _, p99) in zip(rx, reads, strict=True):
        target = _threshold(result, p99)  # the figure's own (S4's depends on the scale)
        if not math.isnan(target):
            ax_reads.hlines(target, x - 0.45, x + 0.45, colors="red", linestyles=":")
    ax_reads.set_xticks(rx, [r[0] for r in reads], fontsize=8)
    ax_reads.set_yscale("log")
    ax_reads.set_ylabel("ms (log; red: p99 target)")
    ax_reads.set_title("S3/S4: read-path latency")
    ax_reads.legend(fontsize=7)

    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
