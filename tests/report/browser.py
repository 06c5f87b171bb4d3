"""Open a report page in headless Chromium and say what a reader's browser would see.

Uses the Python ``playwright`` package (sync API) driving the system Chromium (no ``playwright install``): the
first existing of ``$KDLENS_CHROMIUM``, ``/usr/bin/chromium``, ``/usr/bin/chromium-browser``. Locally a test
needing the browser skips when it is missing; under CI (``$CI`` set) it fails, so the check cannot silently vanish.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LOCAL_SCHEMES = ("file:", "data:", "about:")  # everything else is a network request a self-contained page never makes
HOW_TO_ENABLE = ("apt-get install chromium; pip install playwright (in the dev extra: pip install -e '.[dev]'); "
                 "or point KDLENS_CHROMIUM at a Chromium binary. Do not run `playwright install`: the system "
                 "Chromium is used.")


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None when none is installed."""
    candidates = [os.environ["KDLENS_CHROMIUM"]] if os.environ.get("KDLENS_CHROMIUM") else []
    return next((c for c in [*candidates, *CANDIDATES] if Path(c).is_file()), None)


def browser_available() -> tuple[bool, str]:
    """(True, path to Chromium) when a page can be checked, else (False, what is missing and how to enable it)."""
    if importlib.util.find_spec("playwright") is None:
        return False, f"The Python package playwright is not installed. To enable: {HOW_TO_ENABLE}"
    path = chromium_path()
    if path is None:
        return False, f"No Chromium at {', '.join(CANDIDATES)} or $KDLENS_CHROMIUM. To enable: {HOW_TO_ENABLE}"
    return True, path


def require_browser() -> str:
    """Path to Chromium; otherwise skip the calling test, or fail it when ``$CI`` is set."""
    ok, detail = browser_available()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the browser check must run. {detail}", pytrace=False)
        pytest.skip(detail)
    return detail


def check_page(html_path: Path, screenshot_path: Path, timeout_ms: int = 20_000) -> dict:
    """Load ``html_path`` in headless Chromium, screenshot the full page, and report what went wrong.

    Network requests are recorded and then aborted, so a page that wrongly reaches out fails fast and offline.

    Returns
    -------
    dict
        ``console_errors`` (text of console messages of type error), ``page_errors`` (uncaught exceptions),
        ``requests`` (URLs not ``file:``, ``data:`` or ``about:``), ``section_ids`` (ids of every
        ``<section id=...>`` in document order) and ``title`` (the document title).
    """
    from playwright.sync_api import sync_playwright  # imported here: collecting this module must not need it

    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError(f"No Chromium found. To enable: {HOW_TO_ENABLE}")
    console_errors: list[str] = []
    page_errors: list[str] = []
    requests: list[str] = []

    def on_route(route) -> None:
        url = route.request.url
        if url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            requests.append(url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(timeout_ms)
            page.on("console", lambda message: console_errors.append(message.text) if message.type == "error"
                    else None)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.route("**/*", on_route)
            page.goto(Path(html_path).resolve().as_uri(), wait_until="load")
            page.screenshot(path=str(screenshot_path), full_page=True)
            section_ids = page.eval_on_selector_all("section[id]", "sections => sections.map(s => s.id)")
            title = page.title()
        finally:
            browser.close()
    return {"console_errors": console_errors, "page_errors": page_errors, "requests": requests,
            "section_ids": section_ids, "title": title}
