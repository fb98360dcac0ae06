"""The real Uppy 5 (`@uppy/core` + `@uppy/aws-s3` 5.x, as docs/uppy.md shows it, pinned exactly in
tests/e2e/uppy/package-lock.json) in headless Chromium against our Companion-shaped endpoints.

The page is served from another origin (a tiny static server on loopback) and authenticates
with a token, as docs/uppy.md describes for other origins: so the API's CORS preflight, the
bucket's CORS rule (PUT, exposed ETag) and the contract itself are all exercised by Uppy's own
code. The harness is bundled with esbuild at test time into a temporary directory; it needs
`npm ci --prefix tests/e2e/uppy` (.ci/run does it), otherwise the test skips (fails under CI's
strict mode).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from tests.e2e import uppy_harness
from tests.e2e.conftest import make_png
from tests.fixtures.providers import MOTO_SERVER_BUCKET, use_provider

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

HARNESS = Path(__file__).resolve().parent / "uppy"
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def uppy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the test page and the esbuild bundle of tests/e2e/uppy/entry.js."""
    return uppy_harness.build(HARNESS, tmp_path_factory.mktemp("uppy-site"))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def uppy_origin(uppy_site: Path) -> Iterator[str]:
    """The harness page on its own loopback origin (not the API's: a cross-origin integrator)."""
    handler = functools.partial(_QuietHandler, directory=str(uppy_site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def uppy_page(
    browser: Any,
    live_server: Any,
    uppy_origin: str,
    s3_server_storage: Any,
    moto_server: str,
    demo_user: Any,
) -> Iterator[Any]:
    """The harness page, Uppy started with `endpoint` = our /api/v1 and the user's token."""
    from rest_framework.authtoken.models import Token

    use_provider("s3")
    token = Token.objects.create(user=demo_user)
    assert not live_server.url.startswith(uppy_origin)
    with override_settings(CORS_ALLOWED_ORIGINS=[uppy_origin]):
        context = browser.new_context()
        context.set_default_timeout(20_000)
        page = context.new_page()
        page.console_errors = []  # type: ignore[attr-defined]
        page.on(
            "console",
            lambda msg: msg.type == "error" and page.console_errors.append(msg.text),  # type: ignore[attr-defined]
        )
        page.goto(f"{uppy_origin}/index.html")
        page.wait_for_function("window.uppyHarnessReady === true")
        page.evaluate(
            "([endpoint, token]) => {"
            " window.harness = window.uppyHarness.start({ endpoint, token }) }",
            [f"{live_server.url}/api/v1", token.key],
        )
        try:
            yield page
        finally:
            context.close()


def _upload(page: Any, path: str, name: str, content_type: str) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        "([url, name, type]) => window.harness.upload(url, name, type)", [path, name, content_type]
    )
    return result


def _events(page: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in page.evaluate("window.harness.events") if e["type"] == kind]


def test_uppy_multipart_upload_of_a_12_mib_file(
    uppy_page: Any, uppy_site: Path, moto_server: str, demo_user: Any
) -> None:
    from backend.uploads.models import MediaUpload
    from devtools.moto_s3 import admin_client

    page = uppy_page
    data = make_png(2048, 2048, seed=11)  # ~12 MiB of noise: three parts of 5, 5 and ~2 MiB
    assert 12 * MiB <= len(data) < 13 * MiB
    (uppy_site / "big.png").write_bytes(data)

    requests: list[tuple[str, str]] = []
    page.on("request", lambda r: requests.append((r.method, r.url)))
    result = _upload(page, "/big.png", "big.png", "image/png")

    assert result["successful"] == ["big.png"], result
    assert result["failed"] == []
    row = MediaUpload.objects.get(original_filename="big.png")
    assert (row.owner_id, row.status, row.provider) == (demo_user.id, "uploaded", "s3")
    assert (row.declared_size, row.stored_size, row.content_type) == (
        len(data),
        len(data),
        "image/png",
    )
    assert row.multipart_part_size == 5 * MiB

    # The object S3 holds is the file, assembled from three real parts.
    s3 = admin_client(moto_server)
    stored = s3.get_object(Bucket=MOTO_SERVER_BUCKET, Key=row.key)
    assert stored["Body"].read() == data
    assert stored["ContentType"] == "image/png"
    assert stored["ETag"].strip('"').endswith("-3")
    # The row's metadata came from S3 (HEAD after completing).
    assert row.metadata["bytes"] == len(data)
    assert row.metadata["content_type"] == "image/png"
    assert row.metadata["etag"].strip('"') == stored["ETag"].strip('"')
    assert row.metadata["key"] == row.key

    # Uppy said so: upload-success with our complete answer, every part's ETag read by Uppy.
    (success,) = _events(page, "upload-success")
    assert success["name"] == "big.png" and success["status"] == 200
    assert success["body"]["id"] == str(row.id)
    assert success["body"]["key"] == row.key
    # `location` (Uppy's uploadURL) is this upload in our API.
    assert success["uploadURL"] == success["body"]["location"]
    assert success["uploadURL"].endswith(f"/api/v1/uploads/{row.id}/")
    parts = sorted(_events(page, "part-uploaded"), key=lambda e: e["part"]["PartNumber"])
    assert [p["part"]["PartNumber"] for p in parts] == [1, 2, 3]
    assert all(p["part"]["ETag"] for p in parts), "Uppy could not read ETag (bucket CORS)"
    assert _events(page, "upload-error") == []

    # Exactly Companion's contract, driven by Uppy: create, sign x3, PUT x3 to S3, complete.
    api = [(m, u.split("/api/v1", 1)[1].split("?")[0]) for m, u in requests if "/api/v1/" in u]
    upload_id = row.multipart_upload_id
    assert api[0] == ("POST", "/s3/multipart")
    assert sorted(p for m, p in api if m == "GET") == [
        f"/s3/multipart/{upload_id}/{n}" for n in (1, 2, 3)
    ]
    assert api[-1] == ("POST", f"/s3/multipart/{upload_id}/complete")
    puts = [u for m, u in requests if m == "PUT" and u.startswith(moto_server)]
    assert len(puts) == 3
    assert not page.console_errors, page.console_errors


def test_uppy_shows_our_message_for_a_refused_type(uppy_page: Any, uppy_site: Path) -> None:
    from backend.uploads.models import MediaUpload

    page = uppy_page
    (uppy_site / "page.html").write_bytes(b"<html><script>alert(1)</script></html>")
    with page.expect_response(
        lambda r: r.url.endswith("/api/v1/s3/multipart") and r.request.method == "POST"
    ) as answer:
        result = _upload(page, "/page.html", "page.html", "text/html")
    response = answer.value
    assert 400 <= response.status < 500
    message = response.json()["message"]
    assert message and message == response.json()["error"]["message"]

    assert result["successful"] == []
    assert result["failed"] == [{"name": "page.html", "error": message}]
    assert [e["message"] for e in _events(page, "upload-error")] == [message]
    # What Uppy's UI shows (its info bar): "Failed to upload page.html" with our message.
    infos = _events(page, "info")
    assert infos and infos[-1]["level"] == "error"
    assert infos[-1]["message"] == "Failed to upload page.html"
    assert infos[-1]["details"] == message
    assert not MediaUpload.objects.exists()
