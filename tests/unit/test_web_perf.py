"""The Lighthouse report writer (ops/loadtest/web_perf.py): each run adds a dated section, newest
first, and earlier runs stay as they were. No browser, no service."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from ops.loadtest.web_perf import HEADER, RUNS_MARKER, add_run, render, write_report

RUN_0650 = "## 2026-12-06 06:50 UTC, preset mobile\n\nscores of 06:50\n"
RUN_2106 = "## 2026-12-06 21:06 UTC, preset mobile\n\nscores of 21:06\n"
NOTES = "## Before / after, 2026-12-06 06:41 UTC\n\nA hand-written comparison.\n"


def result(name: str, performance: float) -> dict[str, Any]:
    return {"name": name, "path": f"/{name}", "failed_a11y": [], "runtime_error": None,
            "scores": {"performance": performance, "accessibility": 1.0, "best-practices": 1.0},
            "metrics": {"first-contentful-paint": 700.0, "largest-contentful-paint": 1500.0,
                        "total-blocking-time": 60.0, "cumulative-layout-shift": 0.0}}


def section(when: dt.datetime, performance: float = 0.97) -> str:
    return render("12.2.3", "mobile", [result("editor", performance)], {"total": 2048, "files": [("index.js", 2048)]},
                  (1.5, 2.5), now=when)


def test_a_run_section_is_headed_by_its_date_and_preset() -> None:
    text = section(dt.datetime(2026, 12, 6, 23, 5, tzinfo=dt.UTC))
    assert text.startswith("## 2026-12-06 23:05 UTC, preset mobile\n")
    assert "| editor | `/editor` | 97 | 100 | 100 | 700 | 1500 | 60 | 0.000 |" in text
    assert "Load average (1 min) before / after: 1.5 / 2.5" in text
    assert "# Web app performance" not in text  # the title belongs to the file, not to each run


def test_the_first_run_makes_the_report_with_its_header() -> None:
    assert add_run(None, RUN_2106) == f"{HEADER}\n\n{RUNS_MARKER}\n\n{RUN_2106}"


def test_a_new_run_goes_first_and_every_earlier_run_stays_as_it_was() -> None:
    existing = f"{HEADER}\n\n{RUNS_MARKER}\n\n{RUN_2106}\n{RUN_0650}\n{NOTES}"
    new = section(dt.datetime(2026, 12, 6, 23, 5, tzinfo=dt.UTC))
    report = add_run(existing, new)
    assert report == f"{HEADER}\n\n{RUNS_MARKER}\n\n{new.strip()}\n\n{RUN_2106}\n{RUN_0650}\n{NOTES}"
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings == ["## 2026-12-06 23:05 UTC, preset mobile", "## 2026-12-06 21:06 UTC, preset mobile",
                        "## 2026-12-06 06:50 UTC, preset mobile", "## Before / after, 2026-12-06 06:41 UTC"]


def test_a_report_without_the_marker_keeps_all_its_text_under_the_new_run() -> None:
    old = "# Web app performance (Lighthouse)\n\nthe run the writer used to overwrite\n\n## Earlier runs\n\nolder\n"
    report = add_run(old, RUN_2106)
    assert report == (f"# Web app performance (Lighthouse)\n\n{RUNS_MARKER}\n\n{RUN_2106}\n"
                      "the run the writer used to overwrite\n\n## Earlier runs\n\nolder\n")
    # The next run goes under the marker, above the one before it.
    assert add_run(report, RUN_0650).index(RUN_0650) < add_run(report, RUN_0650).index(RUN_2106)


def test_write_report_adds_runs_to_the_file_one_after_another(tmp_path: Path) -> None:
    path = tmp_path / "WEB_PERF.md"
    first = section(dt.datetime(2026, 12, 6, 21, 6, tzinfo=dt.UTC), performance=0.91)
    second = section(dt.datetime(2026, 12, 6, 23, 5, tzinfo=dt.UTC), performance=0.99)
    write_report(path, first)
    write_report(path, second)
    text = path.read_text()
    assert text.startswith(HEADER)
    assert text.count(RUNS_MARKER) == 1
    assert text.index("## 2026-12-06 23:05 UTC") < text.index("## 2026-12-06 21:06 UTC")
    assert "| editor | `/editor` | 91 |" in text and "| editor | `/editor` | 99 |" in text
