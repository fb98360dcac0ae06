"""A small local stand-in of Cloudinary, for the demo and the test suite (no account needed).

    python -m devtools.cloudinary_standin --port 9100 [--cloud-name demo --api-key K --api-secret S]

Then set CLOUDINARY_UPLOAD_PREFIX and CLOUDINARY_DELIVERY_PREFIX to http://127.0.0.1:9100.

What it does, like Cloudinary:
- POST /v1_1/<cloud>/<resource_type>/upload (multipart form): checks the signature with the
  official SDK's `api_sign_request` over every parameter except file, cloud_name, resource_type,
  api_key and signature (v2, v1 also accepted), refuses a timestamp older than one hour, refuses
  non-image bytes for resource type image, stores the bytes in memory and answers Cloudinary's JSON
  (public_id, version, signature over public_id+version, bytes, format, width/height ...).
  An existing public_id is overwritten (Cloudinary's default) unless `overwrite` is false: then
  nothing is stored and the answer is 200 with the existing asset and `"existing": true`.
  With `notification_url` it POSTs a signed upload notification there (X-Cld-Timestamp/Signature).
- GET/HEAD /<cloud>/<resource_type>/upload[/s--sig--][/v<version>]/<public_id>[.<ext>]: the
  original, with Content-Length, Content-Type, ETag and Range support.
- Admin API (basic auth): GET /v1_1/<cloud>/ping, GET /v1_1/<cloud>/resources/<rt>/upload
  (prefix, max_results, next_cursor), DELETE /v1_1/<cloud>/resources/<rt>/upload (public_ids).
- CORS on every answer. Errors are JSON {"error": {"message": ...}} with Cloudinary's statuses.
It is not Cloudinary: no transformations, no chunked uploads, no remote fetch.
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import gzip
import hashlib
import json
import logging
import mimetypes
import re
import secrets
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cloudinary.utils import api_sign_request, compute_hex_hash

logger = logging.getLogger(__name__)

UNSIGNED_PARAMS = frozenset({"file", "cloud_name", "resource_type", "api_key", "signature"})
SIGNED_UPLOAD_VALIDITY = 3600  # Cloudinary accepts signed parameters for one hour
RESOURCE_TYPES = ("image", "video", "raw")

_UPLOAD_RE = re.compile(r"^/v1_1/(?P<cloud>[^/]+)/(?P<rt>image|video|raw|auto)/upload/?$")
_PING_RE = re.compile(r"^/v1_1/(?P<cloud>[^/]+)/ping/?$")
_RESOURCES_RE = re.compile(
    r"^/v1_1/(?P<cloud>[^/]+)/resources/(?P<rt>image|video|raw)(/upload)?/?$"
)
_DELIVERY_RE = re.compile(
    r"^/(?P<cloud>[^/]+)/(?P<rt>image|video|raw)/upload/(?:s--[A-Za-z0-9_-]+--/)?"
    r"(?:v(?P<version>\d+)/)?(?P<rest>.+)$"
)


@dataclass
class StoredAsset:
    public_id: str
    resource_type: str
    data: bytes
    version: int
    format: str
    content_type: str
    created_at: str
    width: int | None = None
    height: int | None = None
    original_filename: str = ""

    @property
    def etag(self) -> str:
        return hashlib.md5(self.data, usedforsecurity=False).hexdigest()


@dataclass
class Notification:
    url: str
    body: bytes
    timestamp: str
    signature: str
    status: int | None = None
    error: str | None = None


def _as_bool(value: str | None, *, default: bool) -> bool:
    """A boolean upload parameter as Cloudinary reads it ("true"/"false", "1"/"0")."""
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("false", "0", "no")


def sniff_image(data: bytes) -> tuple[str, int | None, int | None] | None:
    """(format, width, height) for PNG/JPEG/GIF/WEBP/BMP/SVG bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return "gif", int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data.startswith(b"\xff\xd8\xff"):
        width, height = _jpeg_size(data)
        return "jpg", width, height
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", None, None
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp", int.from_bytes(data[18:22], "little"), int.from_bytes(data[22:26], "little")
    if b"<svg" in data[:512].lower():
        return "svg", None, None
    return None


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None, None
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    return None, None


def parse_form(content_type: str, body: bytes) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """Fields and the `file` part (filename, bytes) of a multipart or urlencoded form."""
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    if content_type.startswith("multipart/form-data"):
        raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str):
                continue
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            filename = part.get_filename()
            if name == "file" and filename is not None:
                upload = (filename, data)
            else:
                fields[name] = data.decode("utf-8")
    else:
        for name, values in parse_qs(body.decode("utf-8"), keep_blank_values=True).items():
            fields[name] = values[-1]
    if upload is None and fields.get("file", "").startswith("data:"):
        header, _, encoded = fields.pop("file").partition(",")
        upload = ("file", base64.b64decode(encoded) if ";base64" in header else encoded.encode())
    return fields, upload


class CloudinaryStandin:
    """The stand-in server. `start()` binds a loopback port (free one unless given)."""

    def __init__(
        self,
        *,
        cloud_name: str = "demo",
        api_key: str = "111111111111111",
        api_secret: str = "standin-secret",
        signature_algorithm: str = "sha1",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.cloud_name = cloud_name
        self.api_key = api_key
        self.api_secret = api_secret
        self.signature_algorithm = signature_algorithm
        self.host = host
        self.port = port
        self.objects: dict[tuple[str, str], StoredAsset] = {}
        self.notifications: list[Notification] = []
        #: Admin API calls seen, as (method, path): the real one is rate-limited (500/h).
        self.admin_calls: list[tuple[str, str]] = []
        #: Set to an HTTP status (e.g. 500) to make every request fail: simulates an outage.
        self.fail_with: int | None = None
        self.lock = threading.Lock()
        self._last_version = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> CloudinaryStandin:
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.standin = self  # type: ignore[attr-defined]
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- behaviour -------------------------------------------------------------------------
    def next_version(self) -> int:
        with self.lock:
            self._last_version = max(self._last_version + 1, int(time.time()))
            return self._last_version

    def sign(self, params: dict[str, Any], signature_version: int = 2) -> str:
        return str(
            api_sign_request(params, self.api_secret, self.signature_algorithm, signature_version)
        )

    def delivery_url(self, asset: StoredAsset) -> str:
        suffix = f".{asset.format}" if asset.resource_type != "raw" and asset.format else ""
        return (
            f"{self.url}/{self.cloud_name}/{asset.resource_type}/upload/"
            f"v{asset.version}/{asset.public_id}{suffix}"
        )

    def describe(self, asset: StoredAsset) -> dict[str, Any]:
        body: dict[str, Any] = {
            "asset_id": hashlib.md5(
                f"{asset.resource_type}/{asset.public_id}".encode(), usedforsecurity=False
            ).hexdigest(),
            "public_id": asset.public_id,
            "version": asset.version,
            "version_id": secrets.token_hex(16),
            "resource_type": asset.resource_type,
            "type": "upload",
            "created_at": asset.created_at,
            "bytes": len(asset.data),
            "etag": asset.etag,
            "placeholder": False,
            "url": self.delivery_url(asset),
            "secure_url": self.delivery_url(asset),
            "asset_folder": "",
            "display_name": asset.public_id.rsplit("/", 1)[-1],
            "original_filename": asset.original_filename,
            "tags": [],
        }
        if asset.resource_type != "raw":
            body["format"] = asset.format
        if asset.width is not None and asset.height is not None:
            body["width"], body["height"] = asset.width, asset.height
        return body

    def handle_upload(
        self, resource_type: str, fields: dict[str, str], upload: tuple[str, bytes] | None
    ) -> tuple[int, dict[str, Any]]:
        if fields.get("api_key") != self.api_key:
            return 401, {"error": {"message": f"Unknown API key {fields.get('api_key', '')}"}}
        signature = fields.get("signature", "")
        to_sign = {k: v for k, v in fields.items() if k not in UNSIGNED_PARAMS}
        if not signature or signature not in (self.sign(to_sign, 2), self.sign(to_sign, 1)):
            return 400, {"error": {"message": f"Invalid Signature {signature}."}}
        try:
            timestamp = int(fields.get("timestamp", ""))
        except ValueError:
            return 400, {"error": {"message": "Missing required parameter - timestamp"}}
        if timestamp < time.time() - SIGNED_UPLOAD_VALIDITY:
            return 400, {
                "error": {
                    "message": f"Stale request - reported time is {timestamp} which is more "
                    "than 1 hour ago"
                }
            }
        if upload is None:
            return 400, {"error": {"message": "Missing required parameter - file"}}
        filename, data = upload
        sniffed = sniff_image(data)
        if resource_type == "auto":
            resource_type = "image" if sniffed else "raw"
        public_id = fields.get("public_id") or secrets.token_hex(10)
        if fields.get("folder"):
            public_id = f"{fields['folder'].strip('/')}/{public_id}"
        if not _as_bool(fields.get("overwrite"), default=True):
            # Like Cloudinary: an asset with this public_id is answered at once, unchanged.
            with self.lock:
                existing = self.objects.get((resource_type, public_id))
            if existing is not None:
                response = self.describe(existing)
                response["existing"] = True
                response["signature"] = self.sign(
                    {"public_id": existing.public_id, "version": existing.version},
                    signature_version=1,
                )
                return 200, response
        if resource_type == "image" and sniffed is None:
            return 400, {"error": {"message": "Invalid image file"}}
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        fmt, width, height = sniffed if sniffed else (ext, None, None)
        if resource_type == "raw":
            ext_for_type = public_id.rsplit(".", 1)[-1] if "." in public_id else ext
            guessed = mimetypes.guess_type(f"x.{ext_for_type}")[0] if ext_for_type else None
        else:
            guessed = mimetypes.guess_type(f"x.{fmt}")[0] if fmt else None
        asset = StoredAsset(
            public_id=public_id,
            resource_type=resource_type,
            data=data,
            version=self.next_version(),
            format=fmt,
            content_type=guessed or "application/octet-stream",
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            width=width,
            height=height,
            original_filename=filename.rsplit(".", 1)[0],
        )
        with self.lock:
            self.objects[(resource_type, public_id)] = asset
        response = self.describe(asset)
        response["signature"] = self.sign(
            {"public_id": asset.public_id, "version": asset.version}, signature_version=1
        )
        if fields.get("notification_url"):
            self._notify(
                fields["notification_url"], {**self.describe(asset), "notification_type": "upload"}
            )
        return 200, response

    def _notify(self, url: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        timestamp = str(int(time.time()))
        signature = compute_hex_hash(
            body.decode() + timestamp + self.api_secret, self.signature_algorithm
        )
        note = Notification(url=url, body=body, timestamp=timestamp, signature=signature)
        with self.lock:
            self.notifications.append(note)

        def deliver() -> None:
            request = urllib.request.Request(
                url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "X-Cld-Timestamp": timestamp,
                    "X-Cld-Signature": signature,
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    note.status = answer.status
            except Exception as exc:  # delivery is best effort, like a webhook
                note.error = str(exc)

        threading.Thread(target=deliver, daemon=True).start()

    def find(self, resource_type: str, rest: str) -> StoredAsset | None:
        rest = unquote(rest)
        with self.lock:
            asset = self.objects.get((resource_type, rest))
            if asset is None and resource_type != "raw" and "." in rest:
                asset = self.objects.get((resource_type, rest.rsplit(".", 1)[0]))
        return asset

    def list_resources(self, resource_type: str, query: dict[str, list[str]]) -> dict[str, Any]:
        prefix = query.get("prefix", [""])[-1]
        max_results = max(1, min(int(query.get("max_results", ["10"])[-1]), 500))
        offset = int(query.get("next_cursor", ["0"])[-1] or 0)
        with self.lock:
            matching = sorted(
                (
                    a
                    for (rt, pid), a in self.objects.items()
                    if rt == resource_type and pid.startswith(prefix)
                ),
                key=lambda a: a.public_id,
            )
        chunk = matching[offset : offset + max_results]
        result: dict[str, Any] = {"resources": [self.describe(a) for a in chunk]}
        if offset + max_results < len(matching):
            result["next_cursor"] = str(offset + max_results)
        return result

    def delete_resources(
        self, resource_type: str, public_ids: list[str]
    ) -> tuple[int, dict[str, Any]]:
        if len(public_ids) > 100:
            return 400, {"error": {"message": "Too many public_ids (max 100)"}}
        deleted: dict[str, str] = {}
        with self.lock:
            for pid in public_ids:
                found = self.objects.pop((resource_type, pid), None)
                deleted[pid] = "deleted" if found else "not_found"
        return 200, {"deleted": deleted, "partial": False}


class _Handler(BaseHTTPRequestHandler):
    server_version = "CloudinaryStandin/1.0"

    @property
    def standin(self) -> CloudinaryStandin:
        return self.server.standin  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    # --- plumbing --------------------------------------------------------------------------
    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin") or "*")
        self.send_header("Vary", "Origin")
        self.send_header(
            "Access-Control-Expose-Headers", "Content-Length, Content-Range, Content-Type, ETag"
        )

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self._cors()
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _failing(self) -> bool:
        if self.standin.fail_with is None:
            return False
        self._body()
        self._json(self.standin.fail_with, {"error": {"message": "Simulated outage"}})
        return True

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        expected = base64.b64encode(
            f"{self.standin.api_key}:{self.standin.api_secret}".encode()
        ).decode()
        if header == f"Basic {expected}":
            return True
        self._json(401, {"error": {"message": "Invalid credentials"}})
        return False

    def _cloud_ok(self, cloud: str) -> bool:
        if cloud == self.standin.cloud_name:
            return True
        self._json(404, {"error": {"message": f"Unknown cloud name {cloud}"}})
        return False

    # --- verbs -----------------------------------------------------------------------------
    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, POST, OPTIONS")
        self.send_header(
            "Access-Control-Allow-Headers",
            self.headers.get("Access-Control-Request-Headers") or "*",
        )
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        if self._failing():
            return
        path = urlsplit(self.path).path
        match = _UPLOAD_RE.match(path)
        if not match:
            self._body()
            self._json(404, {"error": {"message": f"No route for POST {path}"}})
            return
        body = self._body()
        if not self._cloud_ok(match["cloud"]):
            return
        try:
            fields, upload = parse_form(self.headers.get("Content-Type", ""), body)
        except (ValueError, UnicodeDecodeError) as exc:
            self._json(400, {"error": {"message": f"Malformed form: {exc}"}})
            return
        status, answer = self.standin.handle_upload(match["rt"], fields, upload)
        self._json(status, answer)

    def do_DELETE(self) -> None:
        if self._failing():
            return
        parts = urlsplit(self.path)
        body = self._body()
        match = _RESOURCES_RE.match(parts.path)
        if not match:
            self._json(404, {"error": {"message": f"No route for DELETE {parts.path}"}})
            return
        if not (self._cloud_ok(match["cloud"]) and self._authorised()):
            return
        self.standin.admin_calls.append(("DELETE", parts.path))
        public_ids: list[str] = []
        if body.strip().startswith(b"{"):
            public_ids = list(json.loads(body).get("public_ids") or [])
        else:
            query = parse_qs(parts.query or body.decode())
            public_ids = query.get("public_ids[]", []) + query.get("public_ids", [])
        status, answer = self.standin.delete_resources(match["rt"], public_ids)
        self._json(status, answer)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if self._failing():
            return
        parts = urlsplit(self.path)
        if match := _PING_RE.match(parts.path):
            if self._cloud_ok(match["cloud"]) and self._authorised():
                self.standin.admin_calls.append(("GET", parts.path))
                self._json(200, {"status": "ok"})
            return
        if match := _RESOURCES_RE.match(parts.path):
            if self._cloud_ok(match["cloud"]) and self._authorised():
                self.standin.admin_calls.append(("GET", parts.path))
                query = parse_qs(parts.query)
                self._json(200, self.standin.list_resources(match["rt"], query))
            return
        if match := _DELIVERY_RE.match(parts.path):
            if not self._cloud_ok(match["cloud"]):
                return
            asset = self.standin.find(match["rt"], match["rest"])
            if asset is None:
                self._json(404, {"error": {"message": "Resource not found"}})
                return
            self._serve(asset)
            return
        self._json(404, {"error": {"message": f"No route for {self.command} {parts.path}"}})

    def _serve(self, asset: StoredAsset) -> None:
        data = asset.data
        status = 200
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{asset.etag}"'}
        range_header = self.headers.get("Range", "")
        if range_header:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            start: int | None = None
            end: int | None = None
            if match and (match[1] or match[2]):
                if match[1]:
                    start = int(match[1])
                    end = int(match[2]) if match[2] else len(data) - 1
                else:
                    start = max(0, len(data) - int(match[2]))
                    end = len(data) - 1
            if start is None or end is None or start >= len(data) or start > end:
                self.send_response(416)
                self._cors()
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(end, len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start : end + 1]
            status = 206
        accepts_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
        if status == 200 and accepts_gzip and asset.content_type.startswith("text/"):
            # Like a CDN: text goes out compressed when the client accepts it, and the
            # lengths then describe the compressed bytes.
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        self.send_response(status)
        self._cors()
        self.send_header("Content-Type", asset.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Cloudinary stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--cloud-name", default="demo")
    parser.add_argument("--api-key", default="111111111111111")
    parser.add_argument("--api-secret", default="standin-secret")
    parser.add_argument("--signature-algorithm", choices=["sha1", "sha256"], default="sha1")
    args = parser.parse_args(argv)
    standin = CloudinaryStandin(
        cloud_name=args.cloud_name,
        api_key=args.api_key,
        api_secret=args.api_secret,
        signature_algorithm=args.signature_algorithm,
        host=args.host,
        port=args.port,
    ).start()
    print(f"Cloudinary stand-in listening on {standin.url} (cloud {standin.cloud_name!r})")
    print(
        f"CLOUDINARY_URL=cloudinary://{standin.api_key}:<secret>@{standin.cloud_name} "
        f"CLOUDINARY_UPLOAD_PREFIX={standin.url} CLOUDINARY_DELIVERY_PREFIX={standin.url}"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":
    main()
