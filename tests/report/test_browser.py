"""The browser check itself: a clean self-contained page passes, a page with a console error is caught.

Skips locally when Chromium or playwright is missing; fails under CI (``$CI`` set). See ``tests/report/browser.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlens.report.plots import line_chart
from tests.report import browser
from tests.report.browser import check_page, require_browser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_page(path: Path, body: str, title: str = "kdlens check") -> Path:
    path.write_text(f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
                    f"<body>{body}</body></html>\n", encoding="utf-8")
    return path


def test_self_contained_page_loads_cleanly(tmp_path):
    require_browser()
    svg = line_chart([0.0, 0.1], {"<b>teacher</b>": [0.9, 0.4]}, "epsilon", "accuracy", title="Robustness")
    page = write_page(tmp_path / "report.html",
                      f'<section id="summary"><h1>Summary</h1><p>All good.</p></section>'
                      f'<section id="robustness"><h2>Robustness</h2>{svg}</section>', title="Report &amp; check")
    shot = tmp_path / "report.png"
    result = check_page(page, shot)
    assert result["console_errors"] == [] and result["page_errors"] == [] and result["requests"] == []
    assert result["section_ids"] == ["summary", "robustness"]
    assert result["title"] == "Report & check"
    assert shot.read_bytes()[:8] == PNG_SIGNATURE


def test_console_errors_page_errors_and_requests_are_reported(tmp_path):
    require_browser()
    page = write_page(tmp_path / "broken.html",
                      '<section id="only"><script>console.error("kdlens: deliberate");'
                      'console.log("not an error");</script>'
                      '<script>undefinedFunction();</script>'
                      '<img src="https://example.invalid/beacon.png" alt=""></section>')
    result = check_page(page, tmp_path / "broken.png")
    assert "kdlens: deliberate" in result["console_errors"]
    assert "not an error" not in result["console_errors"]
    assert any("undefinedFunction" in error for error in result["page_errors"])
    assert result["requests"] == ["https://example.invalid/beacon.png"]  # recorded, then aborted: no network
    assert result["section_ids"] == ["only"]


def test_missing_browser_skips_locally_and_fails_under_ci(monkeypatch):
    monkeypatch.setattr(browser, "CANDIDATES", ("/nonexistent/chromium",))
    monkeypatch.delenv("KDLENS_CHROMIUM", raising=False)
    ok, how = browser.browser_available()
    assert not ok and "apt-get install chromium" in how
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        browser.require_browser()
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        browser.require_browser()
