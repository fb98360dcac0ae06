"""Chunked uploads through the widget in a real headless Chromium: a 120 MB file to the
Cloudinary stand-in (above one request's 100 MB), chunk by chunk.

Checked beyond the screen: the MediaUpload row, and the bytes the stand-in stored on disk
(SHA-256 against the file's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import item
from tests.fixtures.large_files import sha256_of, write_large_mp4
from tests.fixtures.providers import use_provider

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MB = 1000 * 1000
FILE_SIZE = 120 * MB
CHUNK = 20 * 1024 * 1024
CHUNKS = 6
NAME = "holiday.mp4"
PICKER = "Drop files here or choose files"


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("widget-chunked") / NAME
    return path, write_large_mp4(path, FILE_SIZE)


@pytest.fixture
def chunked_page(signed_in_page: Any, cloudinary_standin: Any, transactional_db: None) -> Any:
    from backend.core.config import clear_app_config_cache
    from backend.core.models import AppConfig

    use_provider("cloudinary")
    AppConfig.objects.update(max_upload_size=200 * MB, max_bytes_per_user_per_day=10 * 1024**3)
    clear_app_config_cache()
    page = signed_in_page
    page.reload()
    page.locator("upload-widget .uw-zone").wait_for()
    record_events(page)
    return page


def record_events(page: Any) -> None:
    """Record the widget's events in window.widgetEvents (again after a reload)."""
    page.evaluate(
        """() => {
            window.widgetEvents = [];
            const widget = document.querySelector("upload-widget");
            const types = ["upload:progress", "upload:done", "upload:error", "upload:cancel"];
            for (const type of types) {
                widget.addEventListener(type, (e) => window.widgetEvents.push({
                    type, percent: e.detail.percent, loaded: e.detail.loaded,
                    message: e.detail.message,
                }));
            }
        }"""
    )


def throttle_uploads(page: Any, *, bytes_per_second: int) -> Any:
    """Chromium's own upload throttling (DevTools network conditions); returns the session."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.conditions = {  # type: ignore[attr-defined]
        "offline": False,
        "latency": 0,
        "downloadThroughput": -1,
        "uploadThroughput": bytes_per_second,
    }
    cdp.send("Network.emulateNetworkConditions", cdp.conditions)  # type: ignore[attr-defined]
    return cdp


def set_offline(cdp: Any, offline: bool) -> None:
    cdp.conditions["offline"] = offline
    cdp.send("Network.emulateNetworkConditions", cdp.conditions)


def events(page: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in page.evaluate("window.widgetEvents") if e["type"] == kind]


def chunks_acknowledged(page: Any) -> int:
    """What the widget kept for a resume (localStorage): chunks the provider answered."""
    record = page.evaluate(
        """() => {
            const key = Object.keys(localStorage)
                .find((k) => k.startsWith("upload-widget:chunked:"));
            return key ? localStorage.getItem(key) : null;
        }"""
    )
    return int(json.loads(record)["chunksDone"]) if record else 0


def chunk_ranges(requests_seen: list[Any]) -> list[str]:
    return [r.headers.get("content-range", "") for r in requests_seen if r.method == "POST"]


def test_120_mb_through_the_widget_in_chunks(
    chunked_page: Any, cloudinary_standin: Any, large_file: tuple[Path, str]
) -> None:
    from backend.uploads.models import MediaUpload

    page = chunked_page
    path, sha256 = large_file
    upload_url = f"{cloudinary_standin.url}/v1_1/"
    sent: list[Any] = []
    page.on("request", lambda r: sent.append(r) if r.url.startswith(upload_url) else None)
    network = throttle_uploads(page, bytes_per_second=40 * MB)
    page.get_by_label(PICKER).set_input_files(str(path))
    page.wait_for_function(
        """() => Object.keys(localStorage).some((k) => k.startsWith("upload-widget:chunked:")
                && JSON.parse(localStorage.getItem(k)).chunksDone >= 2)""",
        timeout=60_000,
        polling=50,
    )
    # The network drops mid-way: the chunk in flight fails; the widget backs off and sends that
    # chunk again once the network is back (the status line says it is retrying).
    set_offline(network, True)
    row_ui = item(page, NAME)
    row_ui.locator(".uw-status", has_text="Retrying").wait_for(timeout=30_000)
    set_offline(network, False)
    row_ui.and_(page.locator("[data-state=done]")).wait_for(timeout=120_000)

    ranges = chunk_ranges(sent)
    expected = [
        f"bytes {i * CHUNK}-{min(FILE_SIZE, (i + 1) * CHUNK) - 1}/{FILE_SIZE}"
        for i in range(CHUNKS)
    ]
    # Every chunk, in order; the one cut off by the outage again (possibly more than once).
    assert sorted(set(ranges), key=expected.index) == expected, ranges
    assert [expected.index(r) for r in ranges] == sorted(expected.index(r) for r in ranges)
    assert len(ranges) > CHUNKS, "no chunk was retried"
    assert len({r.headers["x-unique-upload-id"] for r in sent if r.method == "POST"}) == 1

    progress = [e["loaded"] for e in events(page, "upload:progress")]
    assert progress == sorted(progress), "progress went backwards"
    assert progress[-1] == FILE_SIZE
    assert len({p for p in progress if 0 < p < FILE_SIZE}) >= CHUNKS - 1  # one bar across chunks
    assert row_ui.get_by_role("progressbar").get_attribute("value") == "100"

    row = MediaUpload.objects.get(original_filename=NAME)
    assert (row.status, row.provider, row.declared_size) == ("uploaded", "cloudinary", FILE_SIZE)
    stored = cloudinary_standin.objects[("video", row.key)]
    assert stored.size == FILE_SIZE
    assert sha256_of(stored.path) == sha256
    assert chunks_acknowledged(page) == 0  # nothing left to resume
    assert events(page, "upload:error") == []


def test_cancel_mid_way_deletes_the_row_and_leaves_no_asset(
    chunked_page: Any, cloudinary_standin: Any, large_file: tuple[Path, str]
) -> None:
    from backend.uploads import tasks
    from backend.uploads.models import MediaUpload

    page = chunked_page
    path, _ = large_file
    throttle_uploads(page, bytes_per_second=25 * MB)
    page.get_by_label(PICKER).set_input_files(str(path))
    page.wait_for_function(
        """() => (window.widgetEvents || [])
            .some((e) => e.type === "upload:progress" && e.percent >= 25)""",
        timeout=60_000,
    )
    assert chunks_acknowledged(page) >= 1
    row = MediaUpload.objects.get(original_filename=NAME)
    row_ui = item(page, NAME)
    with page.expect_response(
        lambda r: r.request.method == "DELETE" and r.url.endswith(f"/uploads/{row.id}/")
    ) as deleted:
        row_ui.get_by_role("button", name=f"Cancel upload of {NAME}").click()
    assert deleted.value.status == 202
    row_ui.and_(page.locator("[data-state=cancelled]")).wait_for()
    assert chunks_acknowledged(page) == 0  # a retry starts a new upload

    row.refresh_from_db()
    assert row.status == "deleting"
    tasks.delete_upload(str(row.id))  # what the delete job runs
    row.refresh_from_db()
    assert row.status == "deleted"
    assert not MediaUpload.objects.filter(status="uploaded").exists()
    # No asset under the key; the chunks received are an unfinished upload, not an asset
    # (Cloudinary discards those itself; the stand-in after a day idle).
    assert ("video", row.key) not in cloudinary_standin.objects
    for delivery_type in ("upload", "authenticated", "private"):
        assert cloudinary_standin.standin.find("video", row.key, delivery_type) is None


def test_reload_mid_way_resumes_from_the_first_unacknowledged_chunk(
    chunked_page: Any, cloudinary_standin: Any, large_file: tuple[Path, str]
) -> None:
    from backend.uploads.models import MediaUpload

    page = chunked_page
    path, sha256 = large_file
    throttle_uploads(page, bytes_per_second=25 * MB)
    page.get_by_label(PICKER).set_input_files(str(path))
    page.wait_for_function(
        """() => Object.keys(localStorage).some((k) => k.startsWith("upload-widget:chunked:")
                && JSON.parse(localStorage.getItem(k)).chunksDone >= 2)""",
        timeout=60_000,
        polling=100,
    )
    first = MediaUpload.objects.get(original_filename=NAME)

    page.reload()  # mid-way: the chunk in flight is cut off (the stand-in keeps none of it)
    page.locator("upload-widget .uw-zone").wait_for()
    done_before = chunks_acknowledged(page)  # what survived the reload
    assert 2 <= done_before < CHUNKS
    record_events(page)
    sent: list[Any] = []
    page.on("request", lambda r: sent.append(r) if r.method == "POST" else None)
    page.get_by_label(PICKER).set_input_files(str(path))  # the user picks the same file again
    row_ui = item(page, NAME)
    row_ui.and_(page.locator("[data-state=done]")).wait_for(timeout=120_000)

    # No new upload: the same row, and only the chunks not acknowledged before the reload.
    assert MediaUpload.objects.filter(original_filename=NAME).count() == 1
    assert not [r for r in sent if r.url.endswith("/api/v1/uploads/")]
    ranges = [r.headers.get("content-range") for r in sent if "content-range" in r.headers]
    assert ranges[0] == f"bytes {done_before * CHUNK}-{(done_before + 1) * CHUNK - 1}/{FILE_SIZE}"
    assert len(ranges) == CHUNKS - done_before
    progress = [e["loaded"] for e in events(page, "upload:progress")]
    assert progress == sorted(progress) and progress[0] >= done_before * CHUNK

    first.refresh_from_db()
    assert first.status == "uploaded"
    stored = cloudinary_standin.objects[("video", first.key)]
    assert sha256_of(stored.path) == sha256
