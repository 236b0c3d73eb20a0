"""docs/performance.md shows the latest results: its tables are generated, never hand-edited.

``make bench`` and ``make bench-peers`` regenerate them (``python -m benchmarks.docs``); a
results file committed without the page it feeds fails here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package: import it from the checkout (as ``python -m`` does).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import docs


def test_performance_page_tables_match_the_latest_results() -> None:
    text = docs.DOC.read_text(encoding="utf-8")
    assert docs.render(text, docs.blocks()) == text, (
        "docs/performance.md differs from benchmarks/results/: run python -m benchmarks.docs"
    )


def test_the_table_lists_whatever_scenarios_the_results_hold(tmp_path: Path) -> None:
    report = json.loads((docs.RESULTS / "latest.json").read_text(encoding="utf-8"))
    report["scenarios"]["S9"] = {
        "id": "S9",
        "title": "a scenario added later",
        "figures": [
            {"key": "k", "label": "new figure", "value": 2.5, "unit": "ms"},
            {
                "key": "t",
                "label": "new target",
                "value": 3,
                "unit": "",
                "target": {"op": "<=", "threshold": 2},
                "met": False,
            },
        ],
    }
    (tmp_path / "latest.json").write_text(json.dumps(report), encoding="utf-8")
    doc = tmp_path / "performance.md"
    doc.write_text(docs.DOC.read_text(encoding="utf-8"), encoding="utf-8")

    assert docs.update(doc, tmp_path)
    text = doc.read_text(encoding="utf-8")
    assert "| S9 | new figure | 2.5 ms |  |  |" in text
    assert "| S9 | new target | 3 | <= 2 | **missed** |" in text
    assert "No `peers-latest.json` yet: run `make bench-peers`." in text
    assert not docs.update(doc, tmp_path)  # a second run changes nothing


def test_a_page_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="markers"):
        docs.render("# Performance\n", docs.blocks())
