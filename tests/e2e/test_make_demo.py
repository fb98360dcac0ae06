"""`make demo` as a new user meets it: scripts/demo started as the Makefile starts it, then
Chromium signs in as the printed admin, switches the provider in the admin, and uploads from the
demo page as the printed demo user, once to each provider.

Nothing here runs in-process: the demo is its own process group (dev server, S3 emulator,
Cloudinary stand-in) on ports from TEST_PORT_RANGE, with its state in a temporary DEMO_DIR.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import free_port, skip_or_fail
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, UI_TIMEOUT_MS, item, make_png, pick_files

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90
#: Variables of the test run that would point the demo elsewhere; the demo starts without them.
DROPPED = re.compile(
    r"^(DJANGO_SETTINGS_MODULE|DATABASE_URL|REDIS_URL|CACHE_URL|DRAMATIQ_BROKER_URL|AWS_.*"
    r"|CLOUDINARY_.*|DEMO_.*|METRICS_.*|LOG_FORMAT|PROVIDER_.*)$"
)


@dataclass
class Demo:
    url: str
    s3_url: str
    cloudinary_url: str
    output: str
    log: Path
    users: dict[str, str]


def _credentials(output: str) -> dict[str, str]:
    """username -> password, as the demo printed them."""
    pairs = re.findall(r"username: (\S+)\s+password: (\S+)", output)
    return dict(pairs)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(f"Chromium is not installed at {CHROMIUM}")
    state = tmp_path_factory.mktemp("demo-state")
    ports = {name: free_port() for name in ("web", "s3", "cloudinary")}
    env = {k: v for k, v in os.environ.items() if not DROPPED.match(k)}
    env.update(
        DEMO_PORT=str(ports["web"]),
        DEMO_S3_PORT=str(ports["s3"]),
        DEMO_CLOUDINARY_PORT=str(ports["cloudinary"]),
        DEMO_DIR=str(state),
        # No developer .env leaks into the run.
        DJANGO_ENV_FILE=str(state / "no.env"),
    )
    log = state / "demo.out"
    with log.open("wb") as out:
        # The Makefile's `demo` target runs exactly this script.
        proc = subprocess.Popen(
            ["scripts/demo"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{ports['web']}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"scripts/demo exited:\n{log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the demo did not answer:\n{log.read_text(errors='replace')}")
            try:
                if requests.get(url + "/login/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        output = log.read_text(errors="replace")
        yield Demo(
            url=url,
            s3_url=f"http://127.0.0.1:{ports['s3']}",
            cloudinary_url=f"http://127.0.0.1:{ports['cloudinary']}",
            output=output,
            log=log,
            users=_credentials(output),
        )
    finally:
        # The script stops its emulators on TERM; the whole group goes, as Ctrl+C would.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        print(f"--- demo output ---\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="module")
def chromium(demo: Demo) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright (Python) is not installed")
    manager = sync_playwright().start()
    try:
        browser = manager.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
    finally:
        manager.stop()


def _context(chromium: Any, demo: Demo) -> Any:
    context = chromium.new_context(base_url=demo.url, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    return context


def test_the_demo_prints_both_logins_and_starts_on_cloudinary(demo: Demo) -> None:
    assert set(demo.users) == {"demo", "admin"}, demo.output
    assert "Active storage provider: cloudinary" in demo.output
    assert "Created the admin (staff) user." in demo.output
    assert f"{demo.url}/admin/core/appconfig/" in demo.output


def test_admin_switch_then_one_upload_to_each_provider_and_both_download(
    demo: Demo, chromium: Any
) -> None:
    admin = _context(chromium, demo).new_page()
    admin.goto("/admin/login/")
    admin.get_by_label("Username").fill("admin")
    admin.get_by_label("Password").fill(demo.users["admin"])
    admin.get_by_role("button", name="Log in").click()
    admin.wait_for_url("**/admin/")

    def switch(provider: str) -> None:
        admin.goto("/admin/core/appconfig/")  # the one row's change page
        admin.locator("#id_provider").select_option(provider)
        admin.locator("input[name=_save]").click()
        admin.locator(".messagelist .success").wait_for()
        assert admin.locator("#id_provider").input_value() == provider

    page = _context(chromium, demo).new_page()
    page.goto("/")
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill(demo.users["demo"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{demo.url}/")

    def shown_provider() -> str:
        page.goto("/")
        page.locator("upload-widget .uw-zone").wait_for()
        return str(page.get_by_test_id("provider").inner_text())

    assert shown_provider() == "cloudinary"  # the product's default, active from the start
    assert page.get_by_test_id("switch-provider").get_attribute("href") == "/admin/core/appconfig/"

    # Away from the default and back, each switch seen by the page without a restart.
    switch("s3")
    assert shown_provider() == "s3"
    switch("cloudinary")
    assert shown_provider() == "cloudinary"

    files = {
        "to-cloudinary.png": make_png(48, 40, seed=1),
        "to-s3.png": make_png(40, 48, seed=2),
    }

    def upload(name: str) -> None:
        pick_files(page, [(name, "image/png", files[name])])
        item(page, name).and_(page.locator("[data-state=done]")).wait_for()

    upload("to-cloudinary.png")
    switch("s3")
    assert shown_provider() == "s3"
    upload("to-s3.png")

    # Bytes that are not what they claim: verification fails, and the file shows no full bar.
    pick_files(page, [("not-a.png", "image/png", b"GIF89a" + bytes(2000))])
    failed = item(page, "not-a.png").and_(page.locator("[data-state=error]"))
    failed.wait_for()
    assert not failed.locator("progress").is_visible()

    page.goto("/")
    failed_row = page.locator("#uploads tr", has_text="not-a.png")
    assert failed_row.get_attribute("data-status") == "failed"
    assert failed_row.get_by_role("link", name="Download not-a.png").count() == 0
    rows = {}
    for name, provider, host in (
        ("to-cloudinary.png", "cloudinary", demo.cloudinary_url),
        ("to-s3.png", "s3", demo.s3_url),
    ):
        row = page.locator("#uploads tr", has_text=name)
        row.wait_for()
        assert row.get_attribute("data-status") == "uploaded"
        assert row.get_by_test_id("row-provider").inner_text() == provider
        href = row.get_by_role("link", name=f"Download {name}").get_attribute("href")
        assert href and href.startswith("/demo/uploads/")
        rows[name] = (href, host)

    for name, (href, host) in rows.items():
        # The page's own session follows the link: a redirect to the provider's short-lived URL.
        first = page.request.get(href, max_redirects=0)
        assert first.status == 302, first.status
        location = first.headers["location"]
        origin = urlsplit(location)
        assert f"{origin.scheme}://{origin.netloc}" == host, (name, location)
        body = page.request.get(href).body()
        assert body == files[name], name
    admin.context.close()
    page.context.close()
