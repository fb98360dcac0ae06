"""The upload widget in a real headless Chromium, on the demo page, against real providers:
a moto S3 server (real HTTP, CORS) and the local Cloudinary stand-in.

Each test drives the page like a user (drop, pick, cancel, retry) and then checks the two
places that matter beyond the screen: the MediaUpload row and the object at the provider.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tests.e2e.conftest import (
    answer_slow_down,
    drop_files,
    item,
    make_png,
    pick_files,
    save_screenshot,
)
from tests.fixtures.providers import MOTO_SERVER_BUCKET, use_provider

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "demo.png"


@pytest.fixture
def s3_live(s3_server_storage: Any, moto_server: str, transactional_db: None) -> Any:
    use_provider("s3")
    return s3_server_storage


def s3_object(endpoint: str, key: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    from devtools.moto_s3 import admin_client

    try:
        return admin_client(endpoint).get_object(Bucket=MOTO_SERVER_BUCKET, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in {"404", "NoSuchKey"}:
            return None
        raise


def throttle_uploads(page: Any, *, bytes_per_second: int) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": bytes_per_second,
        },
    )


def upload_row(filename: str) -> Any:
    from backend.uploads.models import MediaUpload

    return MediaUpload.objects.get(original_filename=filename)


def events(page: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in page.evaluate("window.widgetEvents") if e["type"] == kind]


def test_s3_drop_upload_progress_confirm_and_list(
    s3_live: Any, moto_server: str, signed_in_page: Any
) -> None:
    page = signed_in_page
    png = make_png(480, 480)  # ~690 KB
    assert page.get_by_test_id("provider").inner_text() == "s3"
    # On loopback the whole body leaves at once and the browser reports only 100 %; Chromium's
    # own upload throttling (DevTools network conditions) makes it report real steps.
    throttle_uploads(page, bytes_per_second=1_500_000)

    drop_files(page, [("holiday.png", "image/png", png)])

    row_ui = item(page, "holiday.png")
    # The bar visibly moves: caught between 0 and 100 while the XHR is still sending.
    page.wait_for_function(
        """() => {
            const bar = document.querySelector("upload-widget li.uw-item progress");
            return bar && bar.value > 0 && bar.value < 100;
        }""",
        polling="raf",
    )
    row_ui.and_(page.locator("[data-state=done]")).wait_for()
    progress = row_ui.get_by_role("progressbar", name="Upload progress of holiday.png")
    assert progress.get_attribute("value") == "100"
    assert row_ui.locator(".uw-status").inner_text().startswith("Uploaded")
    assert row_ui.get_by_role("link", name="Open holiday.png").get_attribute("href")
    assert row_ui.locator("img.uw-thumb-img").count() == 1

    progress_events = events(page, "upload:progress")
    assert progress_events, "no upload:progress event: progress is not wired to XHR"
    assert progress_events[-1]["percent"] == 100
    assert progress_events[-1]["loaded"] == progress_events[-1]["total"] == len(png)
    percents = [e["percent"] for e in progress_events]
    assert percents == sorted(percents)
    assert len([p for p in percents if 0 < p < 100]) >= 2, percents
    done = events(page, "upload:done")
    assert len(done) == 1 and done[0]["upload"]["status"] == "uploaded"
    announced = page.evaluate("window.announcements")
    assert announced[-1] == "holiday.png uploaded"
    for milestone in (25, 50, 75):  # screen readers hear the progress, not every step
        assert announced.count(f"holiday.png: {milestone} percent uploaded") == 1, announced

    row = upload_row("holiday.png")
    assert (row.status, row.provider, row.declared_size) == ("uploaded", "s3", len(png))
    assert done[0]["upload"]["id"] == str(row.id)
    stored = s3_object(moto_server, row.key)
    assert stored is not None and stored["Body"].read() == png
    assert stored["ContentType"] == "image/png"

    # The server-rendered list refreshes on upload:done.
    listed = page.locator(f'#uploads tr[data-upload-id="{row.id}"]')
    listed.wait_for()
    assert listed.get_attribute("data-status") == "uploaded"
    assert not page.console_errors

    shot = save_screenshot(page, "demo-s3-upload.png")
    if not DOCS_SCREENSHOT.exists():
        # docs/img/demo.png is committed once from this run; later runs leave it alone.
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)


def test_several_files_chosen_with_the_keyboard(
    s3_live: Any, moto_server: str, signed_in_page: Any
) -> None:
    page = signed_in_page
    # Listening first makes Playwright intercept the chooser before any key is pressed.
    page.on("filechooser", lambda _: None)
    picker = page.get_by_label("Drop files here or choose files")
    picker.focus()  # reachable by keyboard: a real, labelled file input
    assert page.evaluate("document.activeElement.type") == "file"
    files = [
        ("a.png", "image/png", make_png(40, 40, seed=1)),
        ("b.png", "image/png", make_png(60, 30, seed=2)),
        ("notes.txt", "text/plain", b"plain text notes\n" * 50),
    ]
    # Enter on the focused input opens the system file chooser, as for a keyboard user.
    with page.expect_file_chooser() as chooser_info:
        page.keyboard.press("Enter")
    chooser = chooser_info.value
    assert chooser.is_multiple()
    chooser.set_files([{"name": n, "mimeType": t, "buffer": d} for n, t, d in files])
    for name, _, _ in files:
        item(page, name).and_(page.locator("[data-state=done]")).wait_for()
    for name, content_type, data in files:
        row = upload_row(name)
        assert (row.status, row.content_type) == ("uploaded", content_type)
        stored = s3_object(moto_server, row.key)
        assert stored is not None and stored["Body"].read() == data
    # The picker's accept hint comes from GET /api/v1/config/.
    assert "image/png" in (picker.get_attribute("accept") or "")


@pytest.mark.parametrize(
    ("filename", "content_type", "size_limit"),
    [
        ("page.html", "text/html", None),  # type not on the allow-list
        ("big.png", "image/png", 1000),  # larger than AppConfig.max_upload_size
    ],
)
def test_refused_file_shows_the_servers_message(
    s3_live: Any,
    signed_in_page: Any,
    filename: str,
    content_type: str,
    size_limit: int | None,
) -> None:
    from backend.core.models import AppConfig
    from backend.uploads.models import MediaUpload

    page = signed_in_page
    if size_limit:
        config = AppConfig.load()
        config.max_upload_size = size_limit
        config.save()
    data = (
        b"<html><script>alert(1)</script></html>"
        if content_type == "text/html"
        else make_png(50, 50)
    )

    with page.expect_response(
        lambda r: r.url.endswith("/api/v1/uploads/") and r.request.method == "POST"
    ) as answer:
        pick_files(page, [(filename, content_type, data)])
    response = answer.value
    assert response.status in (400, 413, 415, 422)
    server_message = response.json()["error"]["message"]
    assert server_message

    row_ui = item(page, filename)
    row_ui.and_(page.locator("[data-state=error]")).wait_for()
    assert row_ui.locator(".uw-status").inner_text() == server_message
    assert row_ui.get_by_role("button", name=f"Retry upload of {filename}").is_hidden()
    assert row_ui.get_by_role("button", name=f"Remove {filename} from the list").is_visible()
    error_events = events(page, "upload:error")
    assert [e["message"] for e in error_events] == [server_message]
    assert server_message in page.locator("upload-widget .uw-live").inner_text()
    assert not MediaUpload.objects.exists()


def test_hostile_file_name_is_shown_as_text(
    s3_live: Any, moto_server: str, signed_in_page: Any
) -> None:
    page = signed_in_page
    name = '<img src=x onerror="window.pwned=1">.png'
    drop_files(page, [(name, "image/png", make_png(20, 20))])
    row_ui = page.locator("upload-widget li.uw-item").first
    row_ui.and_(page.locator("[data-state=done]")).wait_for()
    assert row_ui.locator(".uw-name").inner_text() == name
    assert page.locator("upload-widget li.uw-item img:not(.uw-thumb-img)").count() == 0
    assert page.evaluate("window.pwned") is None


def test_cancel_leaves_a_pending_row_that_cleanup_expires(
    s3_live: Any, moto_server: str, signed_in_page: Any
) -> None:
    from backend.uploads.cleanup import expire_orphans

    page = signed_in_page
    held: list[Any] = []
    # Hold the provider upload open (as a slow network would) so Cancel hits it mid-flight.
    page.route(f"{moto_server}/**", lambda route: held.append(route))

    pick_files(page, [("slow.png", "image/png", make_png(64, 64))])
    row_ui = item(page, "slow.png")
    row_ui.and_(page.locator("[data-state=uploading]")).wait_for()
    for _ in range(100):  # route handlers run while Playwright waits
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the upload never reached the provider"

    row_ui.get_by_role("button", name="Cancel upload of slow.png").click()
    row_ui.and_(page.locator("[data-state=cancelled]")).wait_for()
    assert row_ui.get_by_role("button", name="Retry upload of slow.png").is_visible()
    assert [e["type"] for e in page.evaluate("window.widgetEvents")].count("upload:cancel") == 1

    row = upload_row("slow.png")
    assert row.status == "pending"
    assert s3_object(moto_server, row.key) is None
    # The page lists the cancelled upload at once (no reload), pending and deletable.
    listed = page.locator(f'#uploads tr[data-upload-id="{row.id}"]')
    listed.wait_for()
    assert listed.get_attribute("data-status") == "pending"
    assert listed.get_by_role("button", name="Delete slow.png").is_visible()

    # The orphan cleanup takes the abandoned row once its instructions are dead.
    from django.conf import settings

    assert expire_orphans(now=timezone.now()).deleted == 0  # not before its expiry + grace
    row.refresh_from_db()
    assert row.status == "pending"
    later = row.expires_at + timedelta(seconds=settings.UPLOAD_ORPHAN_GRACE_SECONDS + 1)
    expire_orphans(now=later)
    row.refresh_from_db()
    assert row.status == "expired"


def test_provider_failure_then_retry_reuses_the_upload(
    s3_live: Any, moto_server: str, signed_in_page: Any
) -> None:
    page = signed_in_page
    failures = {"left": 1}

    def flaky(route: Any) -> None:
        if failures["left"] and route.request.method == "POST":
            failures["left"] -= 1
            answer_slow_down(route)
        else:
            route.continue_()

    page.route(f"{moto_server}/**", flaky)
    png = make_png(70, 70, seed=3)
    pick_files(page, [("retry.png", "image/png", png)])
    row_ui = item(page, "retry.png")
    row_ui.and_(page.locator("[data-state=error]")).wait_for()
    assert "Please reduce your request rate." in row_ui.locator(".uw-status").inner_text()
    first_id = upload_row("retry.png").id

    row_ui.get_by_role("button", name="Retry upload of retry.png").click()
    row_ui.and_(page.locator("[data-state=done]")).wait_for()
    row = upload_row("retry.png")  # still exactly one row: the retry reused the instructions
    assert (row.id, row.status) == (first_id, "uploaded")
    stored = s3_object(moto_server, row.key)
    assert stored is not None and stored["Body"].read() == png


def test_cloudinary_upload_against_the_standin(
    signed_in_page: Any, cloudinary_standin: Any, transactional_db: None
) -> None:
    use_provider("cloudinary")
    page = signed_in_page
    page.reload()  # the page shows the provider active at render time
    page.locator("upload-widget .uw-zone").wait_for()
    assert page.get_by_test_id("provider").inner_text() == "cloudinary"
    png = make_png(200, 150, seed=5)

    with page.expect_request(lambda r: r.url.endswith("/confirm/")) as confirm:
        drop_files(page, [("cloud.png", "image/png", png)])
    # Cloudinary's answer (with its signature) is what the widget posts to confirm.
    sent = confirm.value.post_data_json
    assert sent["public_id"] and sent["signature"] and sent["version"]

    row_ui = item(page, "cloud.png")
    row_ui.and_(page.locator("[data-state=done]")).wait_for()
    assert row_ui.get_by_role("progressbar").get_attribute("value") == "100"

    row = upload_row("cloud.png")
    assert (row.status, row.provider, row.key) == ("uploaded", "cloudinary", sent["public_id"])
    assert str(row.metadata.get("version")) == str(sent["version"])
    stored = cloudinary_standin.objects
    assert len(stored) == 1
    (((resource_type, public_id), obj),) = stored.items()
    assert (resource_type, public_id) == ("image", row.key)
    assert obj.data == png
    page.locator(f'#uploads tr[data-upload-id="{row.id}"]').wait_for()
    save_screenshot(page, "demo-cloudinary-upload.png")


def test_mount_with_a_token_and_no_session(
    s3_live: Any, moto_server: str, page: Any, demo_user: Any
) -> None:
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=demo_user)
    page.goto("/login/")  # same origin, signed out: only the token can authorise the API
    assert not [c for c in page.context.cookies() if c["name"] == "sessionid"]
    page.evaluate(
        """async (token) => {
            const { mount } = await import("/static/upload-widget/upload-widget.js");
            const host = document.createElement("div");
            host.id = "token-widget";
            document.body.append(host);
            window.done = [];
            host.addEventListener("upload:done", (e) => window.done.push(e.detail.upload));
            mount(host, { token, credentials: "omit" });
        }""",
        token.key,
    )
    png = make_png(30, 30, seed=9)
    page.locator("#token-widget input[type=file]").set_input_files(
        [{"name": "token.png", "mimeType": "image/png", "buffer": png}]
    )
    item(page, "token.png").and_(page.locator("[data-state=done]")).wait_for()
    row = upload_row("token.png")
    assert (row.owner_id, row.status) == (demo_user.id, "uploaded")
    assert page.evaluate("window.done")[0]["id"] == str(row.id)
    stored = s3_object(moto_server, row.key)
    assert stored is not None and stored["Body"].read() == png
