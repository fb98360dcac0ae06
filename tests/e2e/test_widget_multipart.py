"""The upload widget's S3 multipart path in a real headless Chromium against the moto S3 server.

The widget on the demo page is replaced by one with `multipart-threshold` of 6 MiB, so a ~12 MiB
file goes up in three real parts (5, 5 and ~2 MiB: moto enforces S3's 5 MiB minimum) through
our /api/v1/uploads/{id}/multipart/ endpoints instead of the single presigned POST.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.e2e.conftest import answer_slow_down, item, make_png, pick_files
from tests.fixtures.providers import MOTO_SERVER_BUCKET, use_provider

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

MiB = 1024 * 1024
THRESHOLD = 6 * MiB
PART_PUT = re.compile(r"[?&]partNumber=(\d+)(&|$)")


@pytest.fixture
def s3_live(s3_server_storage: Any, moto_server: str, transactional_db: None) -> Any:
    use_provider("s3")
    return s3_server_storage


@pytest.fixture
def big_png() -> bytes:
    data = make_png(2048, 2048, seed=21)  # noise: three parts of 5, 5 and ~2 MiB
    assert 12 * MiB <= len(data) < 13 * MiB
    return data


@pytest.fixture
def mp_page(s3_live: Any, signed_in_page: Any) -> Any:
    """The demo page with its widget re-created with a 6 MiB multipart threshold."""
    page = signed_in_page
    page.evaluate(
        """(threshold) => {
            const old = document.querySelector("upload-widget");
            const widget = document.createElement("upload-widget");
            widget.setAttribute("api-base", old.getAttribute("api-base"));
            widget.setAttribute("csrf-token", old.getAttribute("csrf-token"));
            widget.setAttribute("multipart-threshold", String(threshold));
            old.replaceWith(widget);
            window.recordWidgetEvents(widget);
        }""",
        THRESHOLD,
    )
    page.locator("upload-widget .uw-zone").wait_for()
    assert page.evaluate("document.querySelector('upload-widget').options.multipartThreshold") == (
        THRESHOLD
    )
    page.requests = []  # type: ignore[attr-defined]
    page.on("request", lambda r: page.requests.append((r.method, r.url)))  # type: ignore[attr-defined]
    return page


def api_calls(page: Any) -> list[tuple[str, str]]:
    return [
        (method, url.split("/api/v1", 1)[1].split("?")[0])
        for method, url in page.requests
        if "/api/v1/" in url
    ]


def part_puts(page: Any, moto_server: str) -> list[int]:
    return [
        int(PART_PUT.search(url).group(1))  # type: ignore[union-attr]
        for method, url in page.requests
        if method == "PUT" and url.startswith(moto_server) and PART_PUT.search(url)
    ]


def events(page: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in page.evaluate("window.widgetEvents") if e["type"] == kind]


def multipart_uploads(moto_server: str, key: str) -> list[dict[str, Any]]:
    from devtools.moto_s3 import admin_client

    listed = admin_client(moto_server).list_multipart_uploads(Bucket=MOTO_SERVER_BUCKET, Prefix=key)
    return list(listed.get("Uploads", []))


def wait_until(page: Any, condition: Any, message: str) -> None:
    """Poll a Python-side condition (route handlers run while Playwright waits)."""
    for _ in range(400):
        if condition():
            return
        page.wait_for_timeout(50)
    raise AssertionError(message)


def test_large_file_goes_up_in_parts(mp_page: Any, moto_server: str, big_png: bytes) -> None:
    from backend.uploads.models import MediaUpload
    from devtools.moto_s3 import admin_client

    page = mp_page
    pick_files(page, [("big.png", "image/png", big_png)])
    row_ui = item(page, "big.png")
    row_ui.and_(page.locator("[data-state=done]")).wait_for()
    assert row_ui.get_by_role("progressbar").get_attribute("value") == "100"

    progress = events(page, "upload:progress")
    assert progress and progress[-1]["percent"] == 100
    assert progress[-1]["loaded"] == progress[-1]["total"] == len(big_png)
    assert [e["percent"] for e in progress] == sorted(e["percent"] for e in progress)
    (done,) = events(page, "upload:done")
    assert done["upload"]["status"] == "uploaded"
    assert events(page, "upload:error") == []

    row = MediaUpload.objects.get(original_filename="big.png")
    assert (row.status, row.provider, row.declared_size) == ("uploaded", "s3", len(big_png))
    assert row.multipart_part_size == 5 * MiB
    assert done["upload"]["id"] == str(row.id)
    stored = admin_client(moto_server).get_object(Bucket=MOTO_SERVER_BUCKET, Key=row.key)
    assert stored["Body"].read() == big_png
    assert stored["ETag"].strip('"').endswith("-3")

    # Our multipart endpoints, not the single presigned POST; parts signed in one batch.
    base = f"/uploads/{row.id}/multipart"
    calls = api_calls(page)
    assert ("POST", "/uploads/multipart/") in calls
    assert calls.count(("POST", f"{base}/parts/")) == 1
    assert calls[-1] == ("POST", f"{base}/complete/")
    assert ("POST", "/uploads/") not in calls
    assert not [c for c in calls if c[1].endswith("/confirm/")]
    assert sorted(part_puts(page, moto_server)) == [1, 2, 3]
    assert not page.console_errors, page.console_errors


def test_cancel_aborts_the_multipart_upload(mp_page: Any, moto_server: str, big_png: bytes) -> None:
    from backend.uploads.models import MediaUpload

    page = mp_page
    held: list[Any] = []
    # Part 1 reaches S3; parts 2 and 3 are held open (a slow network) so Cancel hits them.
    page.route(
        lambda url: bool(PART_PUT.search(url)) and PART_PUT.search(url).group(1) != "1",  # type: ignore[union-attr]
        lambda route: held.append(route),
    )
    with page.expect_response(
        lambda r: r.request.method == "PUT" and PART_PUT.search(r.url) is not None
    ) as first_part:
        pick_files(page, [("cancel.png", "image/png", big_png)])
    assert first_part.value.ok
    wait_until(page, lambda: len(held) == 2, "parts 2 and 3 never reached the provider")

    row = MediaUpload.objects.get(original_filename="cancel.png")
    (pending,) = multipart_uploads(moto_server, row.key)
    assert pending["UploadId"] == row.multipart_upload_id

    row_ui = item(page, "cancel.png")
    with page.expect_response(
        lambda r: r.request.method == "DELETE" and r.url.endswith(f"/uploads/{row.id}/multipart/")
    ) as aborted:
        row_ui.get_by_role("button", name="Cancel upload of cancel.png").click()
    assert aborted.value.status == 204
    row_ui.and_(page.locator("[data-state=cancelled]")).wait_for()
    assert row_ui.get_by_role("button", name="Retry upload of cancel.png").is_visible()
    assert len(events(page, "upload:cancel")) == 1
    assert events(page, "upload:error") == []

    row.refresh_from_db()
    assert row.status == "deleted"
    assert multipart_uploads(moto_server, row.key) == []
    assert ("POST", "/uploads/") not in api_calls(page)


def test_retry_sends_only_the_missing_part(mp_page: Any, moto_server: str, big_png: bytes) -> None:
    from backend.uploads.models import MediaUpload
    from devtools.moto_s3 import admin_client

    page = mp_page
    failures = {"left": 1}

    def flaky(route: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            answer_slow_down(route)
        else:
            route.continue_()

    page.route(
        lambda url: bool(PART_PUT.search(url)) and PART_PUT.search(url).group(1) == "2",  # type: ignore[union-attr]
        flaky,
    )
    pick_files(page, [("resume.png", "image/png", big_png)])
    row_ui = item(page, "resume.png")
    row_ui.and_(page.locator("[data-state=error]")).wait_for()
    assert "Please reduce your request rate." in row_ui.locator(".uw-status").inner_text()
    assert sorted(part_puts(page, moto_server)) == [1, 2, 3]
    row = MediaUpload.objects.get(original_filename="resume.png")
    assert row.status == "pending"

    page.requests.clear()
    row_ui.get_by_role("button", name="Retry upload of resume.png").click()
    row_ui.and_(page.locator("[data-state=done]")).wait_for()
    # Resumed: S3 was asked what it holds, and only part 2 went up again.
    base = f"/uploads/{row.id}/multipart"
    calls = api_calls(page)
    assert calls[0] == ("GET", f"{base}/parts/")
    assert calls[-1] == ("POST", f"{base}/complete/")
    assert part_puts(page, moto_server) == [2]
    assert ("POST", "/uploads/multipart/") not in calls

    row.refresh_from_db()
    assert row.status == "uploaded"
    assert MediaUpload.objects.count() == 1
    stored = admin_client(moto_server).get_object(Bucket=MOTO_SERVER_BUCKET, Key=row.key)
    assert stored["Body"].read() == big_png
