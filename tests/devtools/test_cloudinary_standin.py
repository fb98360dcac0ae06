"""The Cloudinary stand-in over real HTTP, driven where possible by the official SDK (pycloudinary):
chunked uploads, truncated bodies, allowed_formats, delivery types and the private download URL.

No Django here: the stand-in is a devtool and these tests are about what it does on the wire.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import cloudinary.api
import cloudinary.exceptions
import cloudinary.uploader
import cloudinary.utils
import pytest
import requests

from devtools.cloudinary_standin import MIN_CHUNK_SIZE, CloudinaryStandin

CLOUD = "standin-cloud"
KEY = "987654321098765"
SECRET = "standin-test-secret"
SMALL_CHUNK = 64 * 1024  # the fixture's minimum chunk, so most tests move little data
SDK = {"cloud_name": CLOUD, "api_key": KEY, "api_secret": SECRET}

PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64
GIF = b"GIF89a\x02\x00\x03\x00\x80\x00\x00" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32
SVG = b'<?xml version="1.0"?>\n<!-- drawn -->\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"


@pytest.fixture
def standin() -> Any:
    server = CloudinaryStandin(
        cloud_name=CLOUD, api_key=KEY, api_secret=SECRET, min_chunk_size=SMALL_CHUNK
    ).start()
    try:
        yield server
    finally:
        server.stop()


def upload_url(standin: CloudinaryStandin, resource_type: str = "raw") -> str:
    return f"{standin.url}/v1_1/{CLOUD}/{resource_type}/upload"


def signed(standin: CloudinaryStandin, **params: Any) -> dict[str, str]:
    """Signed upload fields, as the backend hands them to a client."""
    fields = {"timestamp": str(int(time.time())), **{k: str(v) for k, v in params.items()}}
    return {**fields, "api_key": KEY, "signature": standin.sign(fields)}


def post(
    standin: CloudinaryStandin,
    fields: dict[str, str],
    data: bytes,
    *,
    resource_type: str = "raw",
    filename: str = "file.bin",
    headers: dict[str, str] | None = None,
) -> requests.Response:
    return requests.post(
        upload_url(standin, resource_type),
        data=fields,
        files={"file": (filename, data, "application/octet-stream")},
        headers=headers or {},
        timeout=30,
    )


def chunk(
    standin: CloudinaryStandin,
    fields: dict[str, str],
    data: bytes,
    start: int,
    end: int,
    total: int | str,
    upload_id: str = "upload-1",
    resource_type: str = "raw",
) -> requests.Response:
    return post(
        standin,
        fields,
        data[start : end + 1],
        resource_type=resource_type,
        headers={"X-Unique-Upload-Id": upload_id, "Content-Range": f"bytes {start}-{end}/{total}"},
    )


def blob(size: int, seed: int = 1) -> bytes:
    return hashlib.shake_256(f"blob-{seed}".encode()).digest(size)


def error_message(answer: requests.Response) -> str:
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message"}, body
    return str(body["error"]["message"])


def cdn_url(standin: CloudinaryStandin, public_id: str, **options: Any) -> str:
    """cloudinary.utils.cloudinary_url pointed at the stand-in (its host is the CDN's)."""
    url, _ = cloudinary.utils.cloudinary_url(
        public_id,
        secure=True,
        private_cdn=False,
        cname=None,
        secure_distribution=None,
        **SDK,
        **options,
    )
    parts = urlsplit(str(url))
    return f"{standin.url}{parts.path}"


def send_truncated(
    standin: CloudinaryStandin, request: requests.PreparedRequest, keep: int
) -> None:
    """Send a request's headers and only `keep` bytes of its body, then hang up."""
    body = request.body if isinstance(request.body, bytes) else str(request.body).encode()
    target = urlsplit(str(request.url))
    head = f"POST {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    seen = standin.incomplete_requests
    with socket.create_connection((standin.host, standin.port)) as sock:
        sock.sendall(head.encode() + b"\r\n" + body[:keep])
    # The stand-in notices the hang-up on its next read: wait until it has discarded the request.
    deadline = time.monotonic() + 5
    while standin.incomplete_requests == seen:
        assert time.monotonic() < deadline, "the stand-in never saw the request end early"
        time.sleep(0.02)


# --- chunked uploads -------------------------------------------------------------------------


def test_sdk_upload_large_with_cloudinary_minimum_chunks(standin: CloudinaryStandin) -> None:
    """pycloudinary's upload_large, unchanged, against the real 5 MiB minimum: the last answer is
    the upload response, with a signature the SDK's own check accepts."""
    standin.min_chunk_size = MIN_CHUNK_SIZE
    data = blob(2 * 5_243_000 + 1234)
    answer = cloudinary.uploader.upload_large(
        io.BytesIO(data),
        chunk_size=5_243_000,
        public_id="big/archive.bin",
        resource_type="raw",
        upload_prefix=standin.url,
        **SDK,
    )

    assert answer["bytes"] == len(data)
    assert answer["etag"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert answer["public_id"] == "big/archive.bin" and answer["resource_type"] == "raw"
    expected = cloudinary.utils.api_sign_request(
        {"public_id": answer["public_id"], "version": answer["version"]}, SECRET
    )
    assert answer["signature"] == expected
    asset = standin.find("raw", "big/archive.bin")
    assert asset is not None and asset.sha256 == hashlib.sha256(data).hexdigest()
    assert standin.pending_uploads() == []


def test_sdk_chunk_below_the_minimum_is_refused_with_cloudinarys_message(
    standin: CloudinaryStandin,
) -> None:
    standin.min_chunk_size = MIN_CHUNK_SIZE
    with pytest.raises(cloudinary.exceptions.BadRequest, match="larger than 5mb"):
        cloudinary.uploader.upload_large(
            io.BytesIO(blob(300_000)), chunk_size=100_000, upload_prefix=standin.url, **SDK
        )
    assert standin.assets == {}


def test_non_final_answers_and_the_final_upload_response(standin: CloudinaryStandin) -> None:
    data = blob(3 * SMALL_CHUNK + 10)
    fields = signed(standin, public_id="docs/report.pdf", overwrite="false")
    total = len(data)
    first = chunk(standin, fields, data, 0, SMALL_CHUNK - 1, total)
    second = chunk(standin, fields, data, SMALL_CHUNK, 2 * SMALL_CHUNK - 1, total)
    third = chunk(standin, fields, data, 2 * SMALL_CHUNK, 3 * SMALL_CHUNK - 1, total)
    last = chunk(standin, fields, data, 3 * SMALL_CHUNK, total - 1, total)

    # Cloudinary's non_final_chunk_upload_response (Upload API schema).
    assert first.json() == {
        "done": False,
        "bytes": SMALL_CHUNK,
        "kind": "upload",
        "resource_type": "raw",
        "public_id": "docs/report.pdf",
    }
    assert second.json()["bytes"] == 2 * SMALL_CHUNK and third.json()["done"] is False
    final = last.json()
    assert last.status_code == 200 and "done" not in final
    assert (final["public_id"], final["bytes"], final["type"], final["resource_type"]) == (
        "docs/report.pdf",
        total,
        "upload",
        "raw",
    )
    assert standin.find("raw", "docs/report.pdf").data == data  # type: ignore[union-attr]


def test_node_sdk_style_unknown_total_until_the_last_chunk(standin: CloudinaryStandin) -> None:
    """cloudinary_npm sends `bytes a-b/-1` for every chunk but the last."""
    data = blob(2 * SMALL_CHUNK + 5)
    fields = signed(standin, public_id="node.bin")
    assert chunk(standin, fields, data, 0, SMALL_CHUNK - 1, -1).json()["done"] is False
    assert chunk(standin, fields, data, SMALL_CHUNK, 2 * SMALL_CHUNK - 1, -1).status_code == 200
    last = chunk(standin, fields, data, 2 * SMALL_CHUNK, len(data) - 1, len(data))
    assert last.json()["bytes"] == len(data)
    assert standin.find("raw", "node.bin").data == data  # type: ignore[union-attr]


def test_auto_resource_type_is_decided_at_the_end(standin: CloudinaryStandin) -> None:
    data = PNG_1X1 + blob(SMALL_CHUNK)
    fields = signed(standin, public_id="pic")
    first = chunk(standin, fields, data, 0, SMALL_CHUNK - 1, len(data), resource_type="auto")
    assert "resource_type" not in first.json()  # "may be omitted ... when using auto detection"
    last = chunk(standin, fields, data, SMALL_CHUNK, len(data) - 1, len(data), resource_type="auto")
    assert (last.json()["resource_type"], last.json()["format"]) == ("image", "png")


def test_middle_chunks_in_any_order_and_in_parallel(standin: CloudinaryStandin) -> None:
    parts = 6
    data = blob(parts * SMALL_CHUNK + 99)
    total = len(data)
    fields = signed(standin, public_id="parallel.bin")
    # The first chunk opens the upload; the middle ones go in parallel, in reverse order.
    assert chunk(standin, fields, data, 0, SMALL_CHUNK - 1, total).status_code == 200
    answers: list[int] = []

    def send(index: int) -> None:
        start = index * SMALL_CHUNK
        answers.append(
            chunk(standin, fields, data, start, start + SMALL_CHUNK - 1, total).status_code
        )

    threads = [threading.Thread(target=send, args=(i,)) for i in reversed(range(1, parts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * (parts - 1)
    last = chunk(standin, fields, data, parts * SMALL_CHUNK, total - 1, total)
    assert last.json()["etag"] == hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_last_chunk_before_the_others_is_refused_and_the_upload_can_still_finish(
    standin: CloudinaryStandin,
) -> None:
    data = blob(2 * SMALL_CHUNK + 1)
    total = len(data)
    fields = signed(standin, public_id="order.bin")
    chunk(standin, fields, data, 0, SMALL_CHUNK - 1, total)
    early = chunk(standin, fields, data, 2 * SMALL_CHUNK, total - 1, total)
    assert early.status_code == 400 and "last chunk arrived before" in error_message(early)
    chunk(standin, fields, data, SMALL_CHUNK, 2 * SMALL_CHUNK - 1, total)
    last = chunk(standin, fields, data, 2 * SMALL_CHUNK, total - 1, total)
    assert last.status_code == 200 and standin.find("raw", "order.bin").data == data  # type: ignore[union-attr]


def test_a_resent_range_replaces_the_first_copy(standin: CloudinaryStandin) -> None:
    """An SDK retry resends the same Content-Range with the same X-Unique-Upload-Id."""
    data = blob(SMALL_CHUNK + 7)
    garbled = bytes(len(data))
    fields = signed(standin, public_id="retry.bin")
    chunk(standin, fields, garbled, 0, SMALL_CHUNK - 1, len(data))
    chunk(standin, fields, data, 0, SMALL_CHUNK - 1, len(data))
    chunk(standin, fields, data, SMALL_CHUNK, len(data) - 1, len(data))
    assert standin.find("raw", "retry.bin").data == data  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("content_range", "message"),
    [
        ("bytes=0-99/200", "Invalid Content-Range header"),
        ("0-99/200", "Invalid Content-Range header"),
        ("bytes 10-5/200", "empty, or beyond its total"),
        ("bytes 0-200/200", "empty, or beyond its total"),
    ],
)
def test_malformed_content_range_is_refused(
    standin: CloudinaryStandin, content_range: str, message: str
) -> None:
    answer = post(
        standin,
        signed(standin, public_id="bad.bin"),
        b"x" * 100,
        headers={"X-Unique-Upload-Id": "u", "Content-Range": content_range},
    )
    assert answer.status_code == 400 and message in error_message(answer)
    assert standin.assets == {} and standin.find("raw", "bad.bin") is None


def test_inconsistent_chunks_are_refused(standin: CloudinaryStandin) -> None:
    data = blob(3 * SMALL_CHUNK)
    total = len(data)
    fields = signed(standin, public_id="strict.bin")
    assert chunk(standin, fields, data, 0, SMALL_CHUNK - 1, total).status_code == 200

    overlapping = chunk(standin, fields, data, SMALL_CHUNK - 10, 2 * SMALL_CHUNK - 1, total)
    changed_total = chunk(standin, fields, data, SMALL_CHUNK, 2 * SMALL_CHUNK - 1, total + 1)
    beyond = chunk(standin, fields, blob(4 * SMALL_CHUNK), 3 * SMALL_CHUNK, 4 * SMALL_CHUNK - 1, -1)
    short_body = post(
        standin,
        fields,
        b"y" * 10,
        headers={"X-Unique-Upload-Id": "upload-1", "Content-Range": f"bytes 0-99/{total}"},
    )
    small_middle = chunk(standin, fields, data, SMALL_CHUNK, SMALL_CHUNK + 99, total)
    other_params = chunk(
        standin,
        signed(standin, public_id="elsewhere.bin"),
        data,
        SMALL_CHUNK,
        2 * SMALL_CHUNK - 1,
        total,
    )
    no_id = post(standin, fields, b"z" * 10, headers={"Content-Range": "bytes 0-9/10"})

    assert "overlaps bytes 0-65535" in error_message(overlapping)
    assert "differs from" in error_message(changed_total)
    assert "beyond the total" in error_message(beyond)
    assert "does not match Content-Range" in error_message(short_body)
    assert error_message(small_middle) == "All parts except EOF-chunk must be larger than 5mb"
    assert "differ from the first chunk" in error_message(other_params)
    assert "X-Unique-Upload-Id" in error_message(no_id)
    # None of that harmed the upload: it completes with the right bytes.
    chunk(standin, fields, data, SMALL_CHUNK, 2 * SMALL_CHUNK - 1, total)
    done = chunk(standin, fields, data, 2 * SMALL_CHUNK, total - 1, total)
    assert done.status_code == 200 and standin.find("raw", "strict.bin").data == data  # type: ignore[union-attr]


def test_signed_parameters_expire_an_hour_after_their_timestamp_for_chunks_too(
    standin: CloudinaryStandin,
) -> None:
    data = blob(3 * SMALL_CHUNK)
    fields = signed(standin, public_id="slow.bin")
    assert chunk(standin, fields, data, 0, SMALL_CHUNK - 1, len(data)).status_code == 200
    issued = int(fields["timestamp"])
    standin.clock = lambda: issued + 3599
    assert chunk(standin, fields, data, SMALL_CHUNK, 2 * SMALL_CHUNK - 1, -1).status_code == 200
    standin.clock = lambda: issued + 3601
    late = chunk(standin, fields, data, 2 * SMALL_CHUNK, len(data) - 1, len(data))
    assert late.status_code == 400 and error_message(late).startswith("Stale request")
    assert standin.find("raw", "slow.bin") is None
    single = post(standin, fields, b"single")
    assert single.status_code == 400 and error_message(single).startswith("Stale request")


def test_an_unfinished_upload_is_invisible_and_can_be_finished_later(
    standin: CloudinaryStandin,
) -> None:
    data = blob(2 * SMALL_CHUNK + 3)
    fields = signed(standin, public_id="later.bin")
    chunk(standin, fields, data, 0, SMALL_CHUNK - 1, len(data), upload_id="resumable")

    assert standin.find("raw", "later.bin") is None
    assert (
        requests.get(cdn_url(standin, "later.bin", resource_type="raw"), timeout=5).status_code
        == 404
    )
    listing = cloudinary.api.resources(resource_type="raw", upload_prefix=standin.url, **SDK)
    assert listing["resources"] == []
    assert standin.pending_uploads() == [
        {
            "upload_id": "resumable",
            "public_id": "later.bin",
            "received": SMALL_CHUNK,
            "total": len(data),
        }
    ]
    # A "reloaded page" resumes: new connections, same upload id, the remaining chunks.
    chunk(standin, fields, data, SMALL_CHUNK, 2 * SMALL_CHUNK - 1, len(data), upload_id="resumable")
    chunk(standin, fields, data, 2 * SMALL_CHUNK, len(data) - 1, len(data), upload_id="resumable")
    assert standin.find("raw", "later.bin").data == data  # type: ignore[union-attr]


def test_an_upload_left_alone_for_a_day_is_dropped(standin: CloudinaryStandin) -> None:
    data = blob(2 * SMALL_CHUNK)
    fields = signed(standin, public_id="abandoned.bin")
    chunk(standin, fields, data, 0, SMALL_CHUNK - 1, len(data), upload_id="old")
    issued = int(fields["timestamp"])
    standin.clock = lambda: issued + 24 * 3600 + 1
    fresh = {**fields, "timestamp": str(issued + 24 * 3600)}
    fresh["signature"] = standin.sign(
        {k: v for k, v in fresh.items() if k not in ("api_key", "signature")}
    )
    chunk(standin, fresh, data, 0, SMALL_CHUNK - 1, len(data), upload_id="new")
    assert [u["upload_id"] for u in standin.pending_uploads()] == ["new"]


# --- truncated bodies ------------------------------------------------------------------------


def test_an_aborted_upload_stores_nothing_and_a_retry_stores_the_whole_file(
    standin: CloudinaryStandin,
) -> None:
    data = blob(300_000)
    fields = signed(standin, public_id="cut.bin", overwrite="false")
    request = requests.Request(
        "POST", upload_url(standin), data=fields, files={"file": ("cut.bin", data)}
    ).prepare()
    send_truncated(standin, request, keep=150_000)
    assert standin.assets == {}

    retry = post(standin, fields, data)
    assert retry.status_code == 200 and "existing" not in retry.json()
    assert retry.json()["bytes"] == len(data)
    assert standin.find("raw", "cut.bin").data == data  # type: ignore[union-attr]


def test_an_aborted_chunk_leaves_its_range_missing(standin: CloudinaryStandin) -> None:
    data = blob(2 * SMALL_CHUNK)
    total = len(data)
    fields = signed(standin, public_id="cut-chunk.bin")
    chunk(standin, fields, data, 0, SMALL_CHUNK - 1, total)
    request = requests.Request(
        "POST",
        upload_url(standin),
        data=fields,
        files={"file": ("f", data[SMALL_CHUNK:])},
        headers={
            "X-Unique-Upload-Id": "upload-1",
            "Content-Range": f"bytes {SMALL_CHUNK}-{total - 1}/{total}",
        },
    ).prepare()
    send_truncated(standin, request, keep=SMALL_CHUNK // 2)
    assert standin.find("raw", "cut-chunk.bin") is None
    assert standin.pending_uploads()[0]["received"] == SMALL_CHUNK
    chunk(standin, fields, data, SMALL_CHUNK, total - 1, total)
    assert standin.find("raw", "cut-chunk.bin").data == data  # type: ignore[union-attr]


def test_one_request_carries_at_most_the_single_upload_limit(standin: CloudinaryStandin) -> None:
    standin.max_single_upload_size = 1000
    answer = post(standin, signed(standin, public_id="huge.bin"), b"x" * 1001)
    assert answer.status_code == 400
    assert error_message(answer) == "File size too large. Got 1001. Maximum is 1000."
    # The same bytes in one chunk of a chunked upload are fine.
    fields = signed(standin, public_id="huge.bin")
    assert chunk(standin, fields, b"x" * 1001, 0, 1000, 1001).status_code == 200


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "resource_type", "fmt"),
    [
        (PNG_1X1, "image", "png"),
        (JPEG, "image", "jpg"),
        (GIF, "image", "gif"),
        (WEBP, "image", "webp"),
        (SVG, "image", "svg"),
        (PDF, "image", "pdf"),
        (MP4, "video", "mp4"),
    ],
)
def test_format_is_detected_from_the_bytes(
    standin: CloudinaryStandin, data: bytes, resource_type: str, fmt: str
) -> None:
    allowed = post(
        standin,
        signed(standin, public_id=f"ok-{fmt}", allowed_formats=f"{fmt},gif"),
        data,
        resource_type=resource_type,
        filename="misnamed.txt",
    )
    auto = post(standin, signed(standin, public_id=f"auto-{fmt}"), data, resource_type="auto")
    refused = post(
        standin,
        signed(standin, public_id=f"no-{fmt}", allowed_formats="bmp,tiff"),
        data,
        resource_type=resource_type,
    )

    assert allowed.status_code == 200 and allowed.json()["format"] == fmt
    assert (auto.json()["resource_type"], auto.json()["format"]) == (resource_type, fmt)
    assert error_message(refused) == f"{resource_type.capitalize()} file format {fmt} not allowed"
    assert standin.find(resource_type, f"no-{fmt}") is None


def test_svg_bytes_for_a_png_instruction_are_refused(standin: CloudinaryStandin) -> None:
    answer = post(
        standin,
        signed(standin, public_id="avatar", allowed_formats="png"),
        SVG,
        resource_type="image",
        filename="avatar.png",
    )
    assert answer.status_code == 400
    assert error_message(answer) == "Image file format svg not allowed"
    assert answer.headers["X-Cld-Error"] == "Image file format svg not allowed"
    assert standin.assets == {}


def test_jpeg_and_jpg_name_one_format(standin: CloudinaryStandin) -> None:
    answer = post(
        standin,
        signed(standin, public_id="photo", allowed_formats="jpeg"),
        JPEG,
        resource_type="image",
    )
    assert answer.status_code == 200 and answer.json()["format"] == "jpg"


def test_raw_format_is_the_public_id_extension(standin: CloudinaryStandin) -> None:
    html_as_txt = post(
        standin,
        signed(standin, public_id="notes.txt", allowed_formats="txt"),
        HTML,
        filename="page.html",
    )
    html = post(
        standin,
        signed(standin, public_id="page.html", allowed_formats="txt"),
        HTML,
        filename="notes.txt",
    )
    assert html_as_txt.status_code == 200
    assert error_message(html) == "Raw file format html not allowed"


def test_non_video_bytes_are_refused_as_video(standin: CloudinaryStandin) -> None:
    answer = post(standin, signed(standin, public_id="clip"), HTML, resource_type="video")
    assert error_message(answer) == "Unsupported video format or file"


def test_chunked_upload_checks_allowed_formats_on_the_whole_file(
    standin: CloudinaryStandin,
) -> None:
    data = SVG + b" " * SMALL_CHUNK
    fields = signed(standin, public_id="big-avatar", allowed_formats="png")
    chunk(standin, fields, data, 0, SMALL_CHUNK - 1, len(data), resource_type="image")
    last = chunk(
        standin, fields, data, SMALL_CHUNK, len(data) - 1, len(data), resource_type="image"
    )
    assert error_message(last) == "Image file format svg not allowed"
    assert standin.assets == {} and standin.pending_uploads() == []


# --- delivery --------------------------------------------------------------------------------


def test_raw_content_type_follows_the_public_id_extension(standin: CloudinaryStandin) -> None:
    post(standin, signed(standin, public_id="site/page.html"), HTML, filename="page.txt")
    post(standin, signed(standin, public_id="site/blob"), HTML, filename="page.html")
    page = requests.get(cdn_url(standin, "site/page.html", resource_type="raw"), timeout=5)
    plain = requests.get(cdn_url(standin, "site/blob", resource_type="raw"), timeout=5)
    assert page.headers["Content-Type"] == "text/html" and page.content == HTML
    assert plain.headers["Content-Type"] == "application/octet-stream"


def test_public_delivery_ranges_and_head(standin: CloudinaryStandin) -> None:
    data = blob(5000)
    version = post(standin, signed(standin, public_id="range.bin"), data).json()["version"]
    url = cdn_url(standin, "range.bin", resource_type="raw", version=version)
    ranged = requests.get(url, headers={"Range": "bytes=0-9"}, timeout=5)
    tail = requests.get(url, headers={"Range": "bytes=-5"}, timeout=5)
    head = requests.head(url, timeout=5)
    unsatisfiable = requests.get(url, headers={"Range": "bytes=9000-"}, timeout=5)

    assert (ranged.status_code, ranged.content) == (206, data[:10])
    assert ranged.headers["Content-Range"] == "bytes 0-9/5000"
    assert (tail.status_code, tail.content) == (206, data[-5:])
    assert (head.status_code, head.headers["Content-Length"], head.content) == (200, "5000", b"")
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == "bytes */5000"


def test_authenticated_assets_need_a_signed_url(standin: CloudinaryStandin) -> None:
    answer = post(
        standin,
        signed(standin, public_id="secret/cat", type="authenticated"),
        PNG_1X1,
        resource_type="image",
    ).json()
    version = answer["version"]
    assert answer["type"] == "authenticated" and "/image/authenticated/s--" in answer["url"]
    options = {"resource_type": "image", "type": "authenticated", "format": "png"}
    short = cdn_url(standin, "secret/cat", sign_url=True, version=version, **options)
    long = cdn_url(standin, "secret/cat", sign_url=True, long_url_signature=True, **options)
    sha256 = cdn_url(standin, "secret/cat", sign_url=True, signature_algorithm="sha256", **options)
    unsigned = cdn_url(standin, "secret/cat", version=version, **options)
    as_public = cdn_url(standin, "secret/cat", resource_type="image", format="png")
    tampered = short.replace("/s--", "/s--A")

    assert len(urlsplit(long).path.split("/s--")[1].split("--")[0]) == 32
    for url in (short, long, sha256, answer["url"]):
        got = requests.get(url, timeout=5)
        assert (got.status_code, got.content, got.headers["Content-Type"]) == (
            200,
            PNG_1X1,
            "image/png",
        ), url
    assert requests.get(unsigned, timeout=5).status_code == 401
    assert requests.get(tampered, timeout=5).status_code == 401
    missing = requests.get(as_public, timeout=5)
    assert missing.status_code == 404 and missing.headers["X-Cld-Error"] == "Resource not found"
    ranged = requests.get(short, headers={"Range": "bytes=0-7"}, timeout=5)
    assert (ranged.status_code, ranged.content) == (206, PNG_1X1[:8])
    assert requests.head(short, timeout=5).headers["Content-Length"] == str(len(PNG_1X1))


def test_private_download_url(standin: CloudinaryStandin) -> None:
    post(
        standin,
        signed(standin, public_id="private/doc.html", type="authenticated"),
        HTML,
    )

    def url(**options: Any) -> str:
        return str(
            cloudinary.utils.private_download_url(
                "private/doc.html",
                "",
                resource_type="raw",
                type="authenticated",
                upload_prefix=standin.url,
                **SDK,
                **options,
            )
        )

    now = int(time.time())
    inline = requests.get(url(expires_at=now + 300), timeout=5)
    attached = requests.get(url(expires_at=now + 300, attachment=True), timeout=5)
    expired = requests.get(url(expires_at=now - 1), timeout=5)
    default_lifetime = url()
    tampered = url(expires_at=now + 300).replace("expires_at=", "expires_at=9")
    head = requests.head(
        url(expires_at=now + 300), headers={"Accept-Encoding": "identity"}, timeout=5
    )
    ranged = requests.get(url(expires_at=now + 300), headers={"Range": "bytes=0-14"}, timeout=5)

    assert urlsplit(url()).path == f"/v1_1/{CLOUD}/raw/download"
    assert (inline.status_code, inline.content) == (200, HTML)
    assert inline.headers["Content-Type"] == "text/html"
    assert "Content-Disposition" not in inline.headers
    assert attached.headers["Content-Disposition"] == "attachment; filename=doc.html"
    assert expired.status_code == 401 and "expired" in error_message(expired)
    assert requests.get(tampered, timeout=5).status_code == 401
    assert requests.get(default_lifetime, timeout=5).status_code == 200
    # No expires_at: one hour after its timestamp (taken when the URL was built, a little after
    # `now` on a loaded machine: stay well past the hour).
    standin.clock = lambda: now + 3700
    assert requests.get(default_lifetime, timeout=5).status_code == 401
    assert (head.status_code, head.headers["Content-Length"]) == (200, str(len(HTML)))
    assert (ranged.status_code, ranged.content) == (206, HTML[:15])


def test_private_download_of_an_image_names_its_format(standin: CloudinaryStandin) -> None:
    post(
        standin,
        signed(standin, public_id="a/b", type="authenticated"),
        PNG_1X1,
        resource_type="image",
    )
    url = cloudinary.utils.private_download_url(
        "a/b",
        "png",
        resource_type="image",
        type="authenticated",
        attachment=True,
        expires_at=int(time.time()) + 60,
        upload_prefix=standin.url,
        **SDK,
    )
    got = requests.get(url, timeout=5)
    assert (
        got.content == PNG_1X1
        and got.headers["Content-Disposition"] == "attachment; filename=b.png"
    )
    wrong_type = url.replace("type=authenticated", "type=upload")
    assert requests.get(wrong_type, timeout=5).status_code == 401  # no longer what was signed


# --- overwrite, delete, Admin API ------------------------------------------------------------


def test_overwrite_false_existing_then_delete_then_the_same_params_recreate(
    standin: CloudinaryStandin,
) -> None:
    fields = signed(standin, public_id="once", type="authenticated", overwrite="false")
    first = post(standin, fields, PNG_1X1, resource_type="image").json()
    again = post(standin, fields, GIF, resource_type="image").json()
    assert again["existing"] is True and again["version"] == first["version"]
    assert standin.find("image", "once", "authenticated").data == PNG_1X1  # type: ignore[union-attr]

    listed = cloudinary.api.resources(
        resource_type="image", type="authenticated", upload_prefix=standin.url, **SDK
    )
    assert [r["public_id"] for r in listed["resources"]] == ["once"]
    assert (
        cloudinary.api.resources(
            resource_type="image", type="upload", upload_prefix=standin.url, **SDK
        )["resources"]
        == []
    )
    one = cloudinary.api.resource(
        "once", resource_type="image", type="authenticated", upload_prefix=standin.url, **SDK
    )
    assert one["type"] == "authenticated"
    wrong_type = cloudinary.api.delete_resources(
        ["once"], resource_type="image", upload_prefix=standin.url, **SDK
    )
    assert wrong_type["deleted"] == {"once": "not_found"}
    deleted = cloudinary.api.delete_resources(
        ["once"], resource_type="image", type="authenticated", upload_prefix=standin.url, **SDK
    )
    assert deleted["deleted"] == {"once": "deleted"} and standin.assets == {}

    recreated = post(standin, fields, GIF, resource_type="image").json()
    assert "existing" not in recreated and recreated["version"] > first["version"]
    assert standin.find("image", "once", "authenticated").data == GIF  # type: ignore[union-attr]


def test_preflight_allows_the_chunk_headers(standin: CloudinaryStandin) -> None:
    answer = requests.options(
        upload_url(standin),
        headers={
            "Origin": "http://127.0.0.1:21001",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-range,x-unique-upload-id",
        },
        timeout=5,
    )
    allowed = {h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert answer.status_code == 204
    assert {"content-range", "x-unique-upload-id"} <= allowed
    assert answer.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:21001"
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
