"""The real Uppy 6 (`@uppy/core` + `@uppy/aws-s3` 6.3.1, pinned in tests/e2e/uppy6) running the
page code of docs/uppy/ in headless Chromium, against the live server and a moto S3 server.

Same-origin mode: the harness page is served at the live server's own origin (Playwright
answers its URLs from the bundle; every /api/ request goes to the real server) with a Django
session cookie, and Uppy runs with `companionEndpoint` only, as docs/uppy.md shows. Token mode:
the page is on another loopback origin and signs through `signRequest`. Every test ends by
reading the MediaUpload row (and the object at moto).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from django.test import Client, override_settings

from tests.e2e import uppy_harness
from tests.e2e.conftest import make_png
from tests.fixtures.providers import MOTO_SERVER_BUCKET, use_provider

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HARNESS = Path(__file__).resolve().parent / "uppy6"
MiB = 1024 * 1024
PAGE_PATH = "/uppy6-harness/"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return uppy_harness.build(HARNESS, tmp_path_factory.mktemp("uppy6-site"))


@pytest.fixture(scope="module")
def other_origin(site: Path) -> Iterator[str]:
    with uppy_harness.serve(site) as origin:
        yield origin


class Harness:
    def __init__(self, page: Any, site: Path, base: str) -> None:
        self.page, self.site, self.base = page, site, base
        self.api, self.token = "", ""
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("requestfailed", lambda r: self.console.append(f"failed {r.url}: {r.failure}"))
        self.requests: list[tuple[str, str]] = []
        self.responses: list[tuple[str, str, int, str]] = []
        page.on("request", lambda r: self.requests.append((r.method, r.url)))
        page.on(
            "response",
            lambda r: self.responses.append((r.request.method, r.url, r.status, r.status_text)),
        )

    def start(self, mode: str, **options: Any) -> None:
        self.page.evaluate(
            "([mode, options]) => { window.harness = window.uppyHarness.start(mode, options) }",
            [mode, options],
        )

    def file(self, name: str, data: bytes) -> str:
        stored = f"f{len(list(self.site.iterdir()))}.bin"
        (self.site / stored).write_bytes(data)
        return f"{self.base}{stored}"

    def add(self, name: str, content_type: str, data: bytes) -> str:
        return str(
            self.page.evaluate(
                "([url, name, type]) => window.harness.add(url, name, type)",
                [self.file(name, data), name, content_type],
            )
        )

    def begin(self) -> None:
        self.page.evaluate("window.harness.begin()")

    def finish(self) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate("window.harness.done")
        return result

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.page.evaluate("window.harness.events") if e["type"] == kind]

    def wait_for_event(self, kind: str, count: int = 1) -> None:
        self.page.wait_for_function(
            "([kind, count]) => window.harness.events.filter((e) => e.type === kind).length"
            " >= count",
            arg=[kind, count],
        )

    def api_calls(self) -> list[tuple[str, str]]:
        return [
            (m, urlsplit(u).path.split("/api/v1", 1)[1])
            for m, u in self.requests
            if "/api/v1/" in u
        ]


def _new_context(browser: Any) -> Any:
    context = browser.new_context()
    context.set_default_timeout(30_000)
    return context


@pytest.fixture
def same_origin(
    browser: Any, live_server: Any, site: Path, s3_server_storage: Any, demo_user: Any
) -> Iterator[Harness]:
    """The harness at the live server's origin, signed in with a session cookie."""
    use_provider("s3")
    client = Client()
    client.force_login(demo_user)
    context = _new_context(browser)
    context.add_cookies(
        [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
    )

    def from_bundle(route: Any) -> None:
        name = urlsplit(route.request.url).path.removeprefix(PAGE_PATH) or "index.html"
        route.fulfill(path=str(site / name))

    context.route(f"{live_server.url}{PAGE_PATH}**", from_bundle)
    page = context.new_page()
    # A document the live server itself answers (so Chromium places it in the loopback
    # address space, like the moto server), with the bundle added as the page's script.
    page.goto(f"{live_server.url}/healthz")
    page.add_script_tag(url=f"{PAGE_PATH}uppy-harness.js")
    page.wait_for_function("window.uppyHarnessReady === true")
    try:
        yield Harness(page, site, PAGE_PATH)
    finally:
        context.close()


@pytest.fixture
def token_page(
    browser: Any,
    live_server: Any,
    site: Path,
    other_origin: str,
    s3_server_storage: Any,
    demo_user: Any,
) -> Iterator[Harness]:
    """The harness page on another origin, Uppy signing through the user's API token."""
    from rest_framework.authtoken.models import Token

    use_provider("s3")
    token = Token.objects.create(user=demo_user)
    with override_settings(CORS_ALLOWED_ORIGINS=[other_origin]):
        context = _new_context(browser)
        page = context.new_page()
        page.goto(f"{other_origin}/index.html")
        page.wait_for_function("window.uppyHarnessReady === true")
        harness = Harness(page, site, "/")
        harness.api, harness.token = f"{live_server.url}/api/v1", token.key
        try:
            yield harness
        finally:
            context.close()


def _row(**filters: Any) -> Any:
    from backend.uploads.models import MediaUpload

    return MediaUpload.objects.get(**filters)


def _stored(moto_server: str, key: str) -> bytes:
    from devtools.moto_s3 import admin_client

    body: bytes = (
        admin_client(moto_server).get_object(Bucket=MOTO_SERVER_BUCKET, Key=key)["Body"].read()
    )
    return body


def _assert_uploaded(h: Harness, name: str, data: bytes, moto_server: str, user: Any) -> Any:
    # The page confirms on `upload-success`; Uppy's own result does not wait for that.
    h.page.wait_for_function(
        "(name) => window.harness.events.some((e) => e.type === 'uploaded' && e.name === name)",
        arg=name,
    )
    row = _row(original_filename=name)
    assert (row.owner_id, row.status, row.provider) == (user.id, "uploaded", "s3")
    assert row.declared_size == row.stored_size == len(data)
    assert _stored(moto_server, row.key) == data
    (uploaded,) = [e for e in h.events("uploaded") if e["name"] == name]
    assert uploaded["upload"]["id"] == str(row.id)
    assert uploaded["upload"]["status"] == "uploaded"
    (success,) = [e for e in h.events("upload-success") if e["name"] == name]
    # What Uppy keeps is the key it wrote: a multipart upload's own key, or the staging key of
    # a single POST form, which confirm promoted to the row's key (and removed).
    written = row.key if row.multipart_upload_id else _staged(row.key)
    assert success["body"]["key"] == written
    return row


def _staged(key: str) -> str:
    from backend.storage.factory import CloudStorageFactory

    return CloudStorageFactory.for_provider("s3").staged_key(key)


def test_uppy6_default_options_send_a_50_kb_file_in_one_request(
    same_origin: Harness, moto_server: str, demo_user: Any
) -> None:
    h = same_origin
    h.start("same-origin")  # docs/uppy/same-origin.js as is: `companionEndpoint` only
    data = make_png(128, 128, seed=3)
    assert 45_000 < len(data) < 55_000
    h.add("small.png", "image/png", data)
    h.begin()
    assert h.finish() == {"successful": ["small.png"], "failed": []}, "\n".join(h.console)

    row = _assert_uploaded(h, "small.png", data, moto_server, demo_user)
    assert row.multipart_upload_id == ""
    assert row.metadata["verified_by"] == "client"
    calls = h.api_calls()
    assert calls[0] == ("GET", "/s3/params")
    assert calls[-1] == ("POST", "/s3/confirm")
    assert not [c for c in calls if c[1].startswith("/s3/multipart")]
    posts = [u for m, u in h.requests if m == "POST" and u.startswith(moto_server)]
    assert len(posts) == 1  # the POST form straight to S3
    # What Uppy asked for carries no size: the server did not need one.
    (params,) = [u for m, u in h.requests if "/api/v1/s3/params" in u]
    assert "size" not in "".join(parse_qs(urlsplit(params).query))


def test_uppy6_multipart_upload_of_12_mib(
    same_origin: Harness, moto_server: str, demo_user: Any, live_server: Any
) -> None:
    h = same_origin
    h.start("same-origin", awsS3Options={"shouldUseMultipart": True})
    data = make_png(2048, 2048, seed=11)
    assert 12 * MiB <= len(data) < 13 * MiB
    h.add("big.png", "image/png", data)
    h.begin()
    assert h.finish() == {"successful": ["big.png"], "failed": []}

    row = _assert_uploaded(h, "big.png", data, moto_server, demo_user)
    assert row.multipart_part_size is None  # no size declared: sized from S3's part list
    assert row.metadata["etag"].strip('"').endswith("-3")
    upload_id = row.multipart_upload_id
    calls = h.api_calls()
    assert calls[0] == ("POST", "/s3/multipart")
    assert sorted(p for m, p in calls if m == "GET") == [
        f"/s3/multipart/{upload_id}/{n}" for n in (1, 2, 3)
    ]
    assert ("POST", f"/s3/multipart/{upload_id}/complete") in calls
    assert [e["part"]["PartNumber"] for e in h.events("part-uploaded")] == [1, 2, 3]
    (success,) = h.events("upload-success")
    assert success["uploadURL"] == f"{live_server.url}/api/v1/uploads/{row.id}/"


def test_uppy6_pause_and_resume_lists_the_parts_s3_holds(
    same_origin: Harness, moto_server: str, demo_user: Any
) -> None:
    h = same_origin
    h.start("same-origin", awsS3Options={"shouldUseMultipart": True})
    data = make_png(2048, 2048, seed=12)
    file_id = h.add("resumed.png", "image/png", data)
    h.begin()
    h.wait_for_event("part-uploaded")
    assert h.page.evaluate("(id) => window.harness.uppy.pauseResume(id)", file_id) is True
    h.page.wait_for_timeout(300)
    assert _row(original_filename="resumed.png").status == "pending"
    assert h.page.evaluate("(id) => window.harness.uppy.pauseResume(id)", file_id) is False
    h.wait_for_event("uploaded")

    row = _assert_uploaded(h, "resumed.png", data, moto_server, demo_user)
    listed = [p for m, p in h.api_calls() if p == f"/s3/multipart/{row.multipart_upload_id}"]
    assert listed, "resuming did not list the parts (GET /s3/multipart/{uploadId}?key=)"
    numbers = [e["part"]["PartNumber"] for e in h.events("part-uploaded")]
    assert sorted(set(numbers)) == [1, 2, 3] and numbers.count(1) == 1  # part 1 not sent again


def test_uppy6_cancel_aborts_the_multipart_upload(
    same_origin: Harness, moto_server: str, demo_user: Any
) -> None:
    from devtools.moto_s3 import admin_client

    h = same_origin
    h.start("same-origin", awsS3Options={"shouldUseMultipart": True})
    h.add("cancelled.png", "image/png", make_png(2048, 2048, seed=13))
    h.begin()
    h.wait_for_event("part-uploaded")
    with h.page.expect_response(lambda r: r.request.method == "DELETE") as aborted:
        h.page.evaluate("window.harness.uppy.cancelAll()")
    assert aborted.value.status == 200

    row = _row(original_filename="cancelled.png")
    assert row.status == "deleted"
    assert row.metadata["deleted_reason"] == "aborted by client"
    assert urlsplit(aborted.value.url).path.endswith(f"/s3/multipart/{row.multipart_upload_id}")
    s3 = admin_client(moto_server)
    assert s3.list_multipart_uploads(Bucket=MOTO_SERVER_BUCKET).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=MOTO_SERVER_BUCKET, Prefix=row.key).get("KeyCount") == 0
    assert h.events("uploaded") == []


def test_uppy6_filename_with_spaces_and_non_ascii(
    same_origin: Harness, moto_server: str, demo_user: Any
) -> None:
    h = same_origin
    h.start("same-origin")
    name = "Été à Zürich – 日本 photo.png"  # noqa: RUF001 (an en dash, on purpose)
    data = make_png(64, 64, seed=5)
    h.add(name, "image/png", data)
    h.begin()
    assert h.finish()["successful"] == [name]

    row = _assert_uploaded(h, name, data, moto_server, demo_user)
    assert row.original_filename == name
    assert row.key.endswith("/Ete-a-Zurich-photo.png") and row.key.isascii()
    (success,) = h.events("upload-success")
    # Uppy 6 builds `location` from the bucket URL and the URL-escaped (staging) key.
    assert unquote(success["uploadURL"]).endswith(_staged(row.key))


def test_uppy6_shows_our_message_for_a_refused_type(same_origin: Harness) -> None:
    from backend.uploads.models import MediaUpload

    h = same_origin
    h.start("same-origin")
    h.add("page.html", "text/html", b"<html><script>alert(1)</script></html>")
    h.begin()
    result = h.finish()
    message = "Content type text/html is not allowed."
    (answer,) = [r for r in h.responses if "/api/v1/s3/params" in r[1]]
    assert answer[2:] == (400, message)  # our message as the status text: all 6.x reads

    assert result["successful"] == []
    assert result["failed"] == [
        {"name": "page.html", "error": f"Companion request failed: {message}"}
    ]
    infos = h.events("info")
    assert infos[-1]["level"] == "error"
    assert infos[-1]["message"] == "Failed to upload page.html"
    assert infos[-1]["details"] == f"Companion request failed: {message}"
    assert not MediaUpload.objects.exists()


def test_uppy6_session_is_refused_from_another_origin(
    same_origin: Harness, other_origin: str, live_server: Any
) -> None:
    """A page of another origin makes the browser send the session cookie (a CSRF attempt on
    a GET that would create an upload): the API refuses, Sec-Fetch-Site is not same-origin."""
    from backend.uploads.models import MediaUpload

    context = same_origin.page.context
    attacker = context.new_page()
    # Another port of the same host: same site, so the SameSite=Lax session cookie is sent.
    attacker.goto(f"{other_origin.replace('127.0.0.1', urlsplit(live_server.url).hostname)}/")
    url = f"{live_server.url}/api/v1/s3/params?filename=x.png&type=image/png"
    with attacker.expect_response(lambda r: "/s3/params" in r.url) as answer:
        attacker.evaluate("(url) => fetch(url, { credentials: 'include', mode: 'no-cors' })", url)
    # 403, not 401: the session was recognised, and refused for where the request came from.
    assert answer.value.status == 403
    assert answer.value.status_text.startswith("This request does not come from this site")
    assert "sessionid" in answer.value.request.all_headers().get("cookie", "")
    assert not MediaUpload.objects.exists()


def test_uppy6_token_auth_through_sign_request(
    token_page: Harness, moto_server: str, demo_user: Any
) -> None:
    from backend.uploads.models import MediaUpload

    h = token_page
    h.start("token", api=h.api, token=h.token, multipartAbove=5 * MiB)
    small, big = make_png(96, 96, seed=7), make_png(1500, 1500, seed=8)
    assert 5 * MiB < len(big) < 10 * MiB
    h.add("token small.png", "image/png", small)
    h.add("token big.png", "image/png", big)
    h.add("token.html", "text/html", b"<html></html>")
    h.begin()
    result = h.finish()
    assert sorted(result["successful"]) == ["token big.png", "token small.png"]
    message = "Content type text/html is not allowed."
    assert result["failed"] == [{"name": "token.html", "error": message}]
    assert any(
        i["message"] == "Failed to upload token.html" and i["details"] == message
        for i in h.events("info")
    )

    single = _assert_uploaded(h, "token small.png", small, moto_server, demo_user)
    assert single.multipart_upload_id == ""
    multi = _assert_uploaded(h, "token big.png", big, moto_server, demo_user)
    assert multi.multipart_part_size == 5 * MiB  # the page sent the size: parts length-bound
    assert multi.metadata["etag"].strip('"').endswith("-2")
    paths = {p for _m, p in h.api_calls()}
    assert "/s3/presign" in paths and "/s3/confirm" in paths
    assert any(p.startswith("/s3/request/") for p in paths)  # create/complete in S3's XML
    assert not any(p.startswith(("/s3/params", "/s3/multipart")) for p in paths)
    assert MediaUpload.objects.filter(original_filename="token.html").count() == 0
