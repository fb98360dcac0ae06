"""Browser fixtures: a real headless Chromium (system package) driven by Playwright.

Never downloads a browser: the system Chromium is used, or the tests skip (fail under CI strict
mode, see tests/conftest.py).
"""

from __future__ import annotations

import base64
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from random import Random
from typing import Any

import pytest

from tests.conftest import skip_or_fail

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
DEMO_PASSWORD = "e2e-demo-password-1"
# Generous for a loaded CI machine; a healthy run takes well under a second per upload.
UI_TIMEOUT_MS = 20_000


def make_png(width: int, height: int, seed: int = 7) -> bytes:
    """A valid RGB PNG of noise (incompressible, so the byte size is about width*height*3)."""
    rng = Random(seed)
    raw = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 1))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def browser(django_db_setup: None) -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(f"Chromium is not installed at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright (Python) is not installed")
    # Playwright's sync API keeps an asyncio loop running in this thread for as long as it is
    # started, and Django refuses ORM calls in a thread with a running loop. Here the test
    # thread only sets up rows and reads them back (and pytest-django flushes them); the
    # application code runs in the live server thread, which has no loop. Scoped to the
    # module so nothing outside the browser tests runs with the check relaxed.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        manager = sync_playwright().start()
        try:
            chromium = manager.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            yield chromium
            chromium.close()
        finally:
            manager.stop()


@pytest.fixture
def demo_user(transactional_db: None) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username="demo", password=DEMO_PASSWORD)


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.on(
        "console",
        lambda msg: msg.type == "error" and page.console_errors.append(msg.text),  # type: ignore[attr-defined]
    )
    yield page
    context.close()


@pytest.fixture
def signed_in_page(page: Any, demo_user: Any) -> Any:
    """The demo page, signed in as the demo user, with the widget mounted."""
    page.goto("/")
    assert "/login/" in page.url  # login required
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    page.locator("upload-widget .uw-zone").wait_for()
    # Record the widget's events so tests can assert on what an integrator would receive.
    page.evaluate(
        """() => {
            window.announcements = [];
            const live = document.querySelector("upload-widget .uw-live");
            new MutationObserver(() => window.announcements.push(live.textContent))
                .observe(live, { childList: true, characterData: true, subtree: true });
            // Also for a widget a test creates itself (records into a fresh list).
            window.recordWidgetEvents = (widget) => {
                window.widgetEvents = [];
                const types = ["upload:progress", "upload:done", "upload:error", "upload:cancel"];
                for (const type of types) {
                    widget.addEventListener(type, (e) => window.widgetEvents.push({
                        type, percent: e.detail.percent, loaded: e.detail.loaded,
                        total: e.detail.total, message: e.detail.message,
                        upload: e.detail.upload || null, uploadId: e.detail.uploadId || null,
                    }));
                }
            };
            window.recordWidgetEvents(document.querySelector("upload-widget"));
        }"""
    )
    return page


def answer_slow_down(route: Any) -> None:
    """Answer a request to the S3 emulator as S3 does when throttling (503 SlowDown)."""
    route.fulfill(
        status=503,
        headers={"Access-Control-Allow-Origin": "*", "Content-Type": "application/xml"},
        body=(
            "<Error><Code>SlowDown</Code>"
            "<Message>Please reduce your request rate.</Message></Error>"
        ),
    )


def drop_files(page: Any, files: list[tuple[str, str, bytes]]) -> None:
    """Drop files on the widget's zone exactly as a drag from the desktop does (DataTransfer)."""
    payload = [
        {"name": n, "type": t, "b64": base64.b64encode(data).decode()} for n, t, data in files
    ]
    transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, { type: f.type }));
            }
            return dt;
        }""",
        payload,
    )
    zone = page.locator("upload-widget .uw-zone")
    zone.dispatch_event("dragenter", {"dataTransfer": transfer})
    zone.dispatch_event("drop", {"dataTransfer": transfer})


def pick_files(page: Any, files: list[tuple[str, str, bytes]]) -> None:
    """Choose files through the labelled file input (what the keyboard path opens)."""
    page.get_by_label("Drop files here or choose files").set_input_files(
        [{"name": n, "mimeType": t, "buffer": data} for n, t, data in files]
    )


def item(page: Any, filename: str) -> Any:
    return page.locator("li.uw-item", has_text=filename)


def save_screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
