"""The stand-in server: a WSGI app (Werkzeug) on a threaded loopback server.

Each behaviour names the Cloudinary documentation or SDK code it follows; the package docstring
(`devtools/cloudinary_standin/__init__.py`) lists the wire shapes in one place.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import io
import json
import logging
import mimetypes
import os
import re
import secrets
import socket
import string
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, unquote

from cloudinary.utils import api_sign_request, compute_hex_hash, smart_escape
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestedRangeNotSatisfiable
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import wrap_file

from .formats import HEAD_BYTES, Detected, canonical_format, detect
from .store import ChunkedUpload, FileArea, StoredAsset, copy_stream, hash_file, read_head, write_at

logger = logging.getLogger("devtools.cloudinary_standin")

# Upload API signature: every parameter except these
# (https://cloudinary.com/documentation/authentication_signatures).
UNSIGNED_PARAMS = frozenset({"file", "cloud_name", "resource_type", "api_key", "signature"})
# "the signature is valid for one hour" after its timestamp (same page).
SIGNED_UPLOAD_VALIDITY = 3600
RESOURCE_TYPES = ("image", "video", "raw")
# Delivery (storage) types: public, signed-URL only, and private (original via the private
# download URL only): https://cloudinary.com/documentation/control_access_to_media
DELIVERY_TYPES = ("upload", "authenticated", "private")
# Chunked uploads: "Each chunk must be larger than 5mb except the last one"
# (support article 208263735, "Guidelines for self implementing chunked upload to Cloudinary");
# the Node SDK's integration test expects the answer "All parts except EOF-chunk must be larger
# than 5mb", its docs call 5 * 1024 * 1024 the minimum, and the Android SDK's tests use chunks of
# 5 243 000 bytes, just above 5 MiB.
MIN_CHUNK_SIZE = 5 * 1024 * 1024
MIN_CHUNK_MESSAGE = "All parts except EOF-chunk must be larger than 5mb"
# "[Chunked upload] is required for any files that are larger than 100 MB" (Upload API schema,
# operation uploadChunk). Cloudinary's size error reads "File size too large. Got N. Maximum is M."
MAX_SINGLE_UPLOAD_SIZE = 100 * 1024 * 1024
# Text goes out gzip-compressed to clients that accept it, like a CDN, up to this size.
GZIP_MAX_BYTES = 10 * 1024 * 1024
# Parameters of a chunk that do not describe the asset (they change from chunk to chunk in the
# SDKs: pycloudinary and the Node SDK sign every chunk with a fresh timestamp).
PER_CHUNK_PARAMS = frozenset({"timestamp", "signature", "api_key", "file"})
# Cloudinary does not document how long an unfinished chunked upload is kept; the stand-in drops
# one left untouched for a day (its temporary file with it).
CHUNKED_UPLOAD_IDLE = 24 * 3600
# Headers a browser sends on a chunk; allowed on every preflight.
CORS_ALLOW_HEADERS = (
    "Content-Type, Content-Range, X-Unique-Upload-Id, X-Requested-With, "
    "X-Upload-Part-Number, X-Upload-Total-Parts"
)
CORS_EXPOSE_HEADERS = "Content-Length, Content-Range, Content-Type, ETag, X-Cld-Error"

_CLOUD = r"(?P<cloud>[^/]+)"
_UPLOAD_RE = re.compile(rf"^/v1_1/{_CLOUD}/(?P<rt>image|video|raw|auto)/upload(?:_chunked)?/?$")
_PING_RE = re.compile(rf"^/v1_1/{_CLOUD}/ping/?$")
_RESOURCES_RE = re.compile(
    rf"^/v1_1/{_CLOUD}/resources/(?P<rt>image|video|raw)(?:/(?P<type>upload|authenticated|private))?/?$"
)
_RESOURCE_RE = re.compile(
    rf"^/v1_1/{_CLOUD}/resources/(?P<rt>image|video|raw)/(?P<type>upload|authenticated|private)/"
    r"(?P<public_id>.+)$"
)
_DOWNLOAD_RE = re.compile(rf"^/v1_1/{_CLOUD}/(?P<rt>image|video|raw)/download/?$")
# /<cloud>/<resource_type>/<type>/[s--SIG--/][v<version>/]<public_id>[.<format>], as built by
# cloudinary.utils.cloudinary_url (no transformations: the stand-in serves originals only).
_DELIVERY_RE = re.compile(
    rf"^/{_CLOUD}/(?P<rt>image|video|raw)/(?P<type>upload|authenticated|private)/"
    r"(?:s--(?P<sig>[A-Za-z0-9_-]+)--/)?(?:(?P<version>v\d+)/)?(?P<rest>.+)$"
)
_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|-1)")
_PUBLIC_ID_ALPHABET = string.ascii_lowercase + string.digits


class _Request(Request):
    # A `file` field may be a base64 data URI: let it be as large as a single upload may be.
    max_form_memory_size = MAX_SINGLE_UPLOAD_SIZE * 2


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        logger.debug("%s " + message, self.address_string(), *args)


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    """Cloudinary's API error shape: {"error": {"message": ...}}."""
    return status, {"error": {"message": message}}


class Refused(Exception):
    """An upload refused with Cloudinary's status and error message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def answer(self) -> tuple[int, dict[str, Any]]:
        return _error(self.status, self.message)


def _header_safe(text: str) -> str:
    return " ".join(text.encode("ascii", "replace").decode().split())


def _as_bool(value: str | None, *, default: bool) -> bool:
    """A boolean parameter as Cloudinary reads it ("true"/"false", "1"/"0")."""
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("false", "0", "no")


def _stream_length(stream: IO[bytes]) -> int:
    stream.seek(0, io.SEEK_END)
    length = stream.tell()
    stream.seek(0)
    return length


def _extension(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[-1].lower() if "." in last else ""


class CloudinaryStandin:
    """The stand-in server. `start()` binds a loopback port (a free one unless given).

    What it stores: `assets` keyed by (resource_type, type, public_id); `objects` is the same
    keyed by (resource_type, public_id) (the fixtures' view). Chunked uploads in progress are in
    `uploads` (by X-Unique-Upload-Id) and are not assets until their last chunk.
    `clock` (default time.time) is what "now" is for signature lifetimes: tests move it.
    """

    def __init__(
        self,
        *,
        cloud_name: str = "demo",
        api_key: str = "111111111111111",
        api_secret: str = "standin-secret",
        signature_algorithm: str = "sha1",
        host: str = "127.0.0.1",
        port: int = 0,
        min_chunk_size: int = MIN_CHUNK_SIZE,
        max_single_upload_size: int = MAX_SINGLE_UPLOAD_SIZE,
        max_file_size: int | None = None,
    ) -> None:
        self.cloud_name = cloud_name
        self.api_key = api_key
        self.api_secret = api_secret
        self.signature_algorithm = signature_algorithm
        self.host = host
        self.port = port
        self.min_chunk_size = min_chunk_size
        self.max_single_upload_size = max_single_upload_size
        #: The account's largest file (chunked or not); None: no limit.
        self.max_file_size = max_file_size
        self.assets: dict[tuple[str, str, str], StoredAsset] = {}
        self.uploads: dict[str, ChunkedUpload] = {}
        self.notifications: list[Notification] = []
        #: Admin API calls seen, as (method, path): the real one is rate-limited (500/h).
        self.admin_calls: list[tuple[str, str]] = []
        #: Requests whose body ended before its Content-Length (nothing of them was stored).
        self.incomplete_requests = 0
        #: Set to an HTTP status (e.g. 500) to make every request fail: simulates an outage.
        self.fail_with: int | None = None
        self.clock: Callable[[], float] = time.time
        self.lock = threading.Lock()
        self.files = FileArea()
        self._last_version = 0
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> CloudinaryStandin:
        server = make_server(
            self.host, self.port, self.wsgi_app, threaded=True, request_handler=_QuietHandler
        )
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
        with self.lock:
            for upload in self.uploads.values():
                upload.close()
            self.uploads.clear()
        self.files.close()

    # --- what is stored --------------------------------------------------------------------
    @property
    def objects(self) -> dict[tuple[str, str], StoredAsset]:
        """Assets keyed by (resource_type, public_id), every delivery type (type "upload" wins
        when the same public_id exists under two types)."""
        with self.lock:
            items = sorted(self.assets.items(), key=lambda kv: kv[0][1] == "upload")
        return {(rt, pid): asset for (rt, _type, pid), asset in items}

    def find(
        self, resource_type: str, public_id: str, delivery_type: str = "upload"
    ) -> StoredAsset | None:
        with self.lock:
            return self.assets.get((resource_type, delivery_type, public_id))

    def pending_uploads(self) -> list[dict[str, Any]]:
        """Chunked uploads started and not complete (invisible to delivery and the Admin API)."""
        with self.lock:
            return [upload.describe() for upload in self.uploads.values()]

    # --- signatures --------------------------------------------------------------------------
    def next_version(self) -> int:
        with self.lock:
            self._last_version = max(self._last_version + 1, int(self.clock()))
            return self._last_version

    def sign(self, params: dict[str, Any], signature_version: int = 2) -> str:
        return str(
            api_sign_request(params, self.api_secret, self.signature_algorithm, signature_version)
        )

    def _signature_matches(self, params: dict[str, str], signature: str) -> bool:
        if not signature:
            return False
        return any(hmac.compare_digest(signature, self.sign(params, version)) for version in (2, 1))

    def url_signature(self, to_sign: str, *, long: bool = False, algorithm: str = "") -> str:
        """The `s--SIGNATURE--` of a delivery URL, as cloudinary.utils.cloudinary_url computes it:
        URL-safe base64 of SHA(to_sign + api_secret), first 8 characters (SHA-1, or the account's
        algorithm), or 32 characters of SHA-256 with `long_url_signature`
        (https://cloudinary.com/documentation/delivery_url_signatures)."""
        if long:
            digest, length = hashlib.sha256, 32
        else:
            digest = hashlib.sha256 if (algorithm or "sha1") == "sha256" else hashlib.sha1
            length = 8
        raw = digest((to_sign + self.api_secret).encode()).digest()
        return base64.urlsafe_b64encode(raw)[:length].decode()

    def _url_signature_valid(self, signature: str, candidates: Iterable[str]) -> bool:
        for to_sign in candidates:
            expected = (
                [self.url_signature(to_sign, long=True)]
                if len(signature) == 32
                else [self.url_signature(to_sign, algorithm=alg) for alg in ("sha1", "sha256")]
            )
            if any(hmac.compare_digest(signature, e) for e in expected):
                return True
        return False

    # --- answers -----------------------------------------------------------------------------
    def delivery_url(self, asset: StoredAsset) -> str:
        suffix = f".{asset.format}" if asset.resource_type != "raw" and asset.format else ""
        source = smart_escape(asset.public_id) + suffix
        signature = ""
        if asset.delivery_type == "authenticated":
            signature = f"s--{self.url_signature(source, algorithm=self.signature_algorithm)}--/"
        return (
            f"{self.url}/{self.cloud_name}/{asset.resource_type}/{asset.delivery_type}/"
            f"{signature}v{asset.version}/{source}"
        )

    def describe(self, asset: StoredAsset) -> dict[str, Any]:
        """An asset as the Upload API answers it (and the Admin API lists it)."""
        body: dict[str, Any] = {
            "asset_id": hashlib.md5(
                f"{asset.resource_type}/{asset.delivery_type}/{asset.public_id}".encode(),
                usedforsecurity=False,
            ).hexdigest(),
            "public_id": asset.public_id,
            "version": asset.version,
            "version_id": secrets.token_hex(16),
            "resource_type": asset.resource_type,
            "type": asset.delivery_type,
            "created_at": asset.created_at,
            "bytes": asset.size,
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

    def upload_answer(self, asset: StoredAsset, *, existing: bool = False) -> dict[str, Any]:
        """The upload response: the asset plus `signature` = SHA(public_id=..&version=.. + secret)
        (https://cloudinary.com/documentation/authentication_signatures#verifying_signatures_in_the_json_response)."""
        answer = self.describe(asset)
        if existing:
            answer["existing"] = True
        answer["signature"] = self.sign(
            {"public_id": asset.public_id, "version": asset.version}, signature_version=1
        )
        return answer

    # --- Upload API --------------------------------------------------------------------------
    def _check_request(self, fields: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        """API key, signature and its one-hour lifetime; None when the request may proceed."""
        if fields.get("api_key") != self.api_key:
            return _error(401, f"Unknown API key {fields.get('api_key', '')}")
        to_sign = {k: v for k, v in fields.items() if k not in UNSIGNED_PARAMS}
        signature = fields.get("signature", "")
        if not self._signature_matches(to_sign, signature):
            return _error(400, f"Invalid Signature {signature}.")
        try:
            timestamp = int(fields.get("timestamp", ""))
        except ValueError:
            return _error(400, "Missing required parameter - timestamp")
        if timestamp < self.clock() - SIGNED_UPLOAD_VALIDITY:
            return _error(
                400,
                f"Stale request - reported time is {timestamp} which is more than 1 hour ago",
            )
        return None

    @staticmethod
    def _file_source(fields: dict[str, str], upload: FileStorage | None) -> tuple[str, IO[bytes]]:
        """(file name, stream) of the `file` parameter: a file part or a data URI."""
        if upload is not None:
            return upload.filename or "file", upload.stream
        value = fields.get("file", "")
        if value.startswith("data:"):
            header, _, encoded = value.partition(",")
            data = base64.b64decode(encoded) if ";base64" in header else unquote(encoded).encode()
            return "file", io.BytesIO(data)
        if re.match(r"^(https?|ftp|s3|gs)://", value):
            raise Refused(400, "Remote file URLs are not supported by the stand-in")
        raise Refused(400, "Missing required parameter - file")

    def _public_id(self, params: dict[str, str]) -> str:
        # Cloudinary's generated public IDs are 20 lowercase letters and digits.
        public_id = params.get("public_id") or "".join(
            secrets.choice(_PUBLIC_ID_ALPHABET) for _ in range(20)
        )
        if params.get("folder"):
            public_id = f"{params['folder'].strip('/')}/{public_id}"
        return public_id

    def handle_upload(
        self, resource_type: str, fields: dict[str, str], upload: FileStorage | None
    ) -> tuple[int, dict[str, Any]]:
        """One request carries the whole file (POST .../<resource_type>/upload)."""
        refused = self._check_request(fields)
        if refused:
            return refused
        try:
            filename, stream = self._file_source(fields, upload)
        except Refused as exc:
            return exc.answer
        path = self.files.new_path(".upload")
        try:
            with path.open("wb") as out:
                size = copy_stream(stream, out)
            if size > self.max_single_upload_size:
                return _error(
                    400,
                    f"File size too large. Got {size}. Maximum is {self.max_single_upload_size}.",
                )
            return self._finish(resource_type, fields, path, size, filename)
        finally:
            self.files.discard(path)

    def handle_chunk(
        self,
        resource_type: str,
        fields: dict[str, str],
        upload: FileStorage | None,
        content_range: str,
        upload_id: str,
    ) -> tuple[int, dict[str, Any]]:
        """One chunk of a chunked upload (same URL, `X-Unique-Upload-Id` + `Content-Range`).

        Followed: support article 208263735 (same X-Unique-Upload-Id on every part; Content-Range
        `bytes start-end/total`; the last chunk must arrive after all others were answered; every
        chunk but the last larger than 5 MB), the SDKs (pycloudinary/Java send the total, the Node
        SDK sends `/-1` until the last chunk; every chunk is signed, pycloudinary and Node with a
        fresh timestamp; a retry resends the same range) and the Upload API schema
        (non-final answer {"done": false, "bytes", "kind", "resource_type", "public_id"}).
        """
        refused = self._check_request(fields)
        if refused:
            return refused
        if not upload_id:
            return _error(400, "Missing X-Unique-Upload-Id header for a chunked upload")
        match = _CONTENT_RANGE_RE.fullmatch(content_range.strip())
        if not match:
            return _error(
                400,
                f"Invalid Content-Range header {content_range!r}: expected 'bytes start-end/total'",
            )
        start, end = int(match[1]), int(match[2])
        total = None if match[3] == "-1" else int(match[3])
        if end < start or (total is not None and end >= total):
            return _error(
                400, f"Invalid Content-Range {content_range!r}: empty, or beyond its total"
            )
        try:
            filename, stream = self._file_source(fields, upload)
        except Refused as exc:
            return exc.answer
        length = _stream_length(stream)
        if length != end - start + 1:
            return _error(
                400, f"Chunk of {length} bytes does not match Content-Range {content_range!r}"
            )
        params = {k: v for k, v in fields.items() if k not in PER_CHUNK_PARAMS}
        session = self._session(upload_id, resource_type, params, filename)
        with session.lock:
            refused = self._chunk_refusal(session, resource_type, params, start, end, total, length)
            if refused:
                return refused
            known_total = total if total is not None else session.total
            final = known_total is not None and end == known_total - 1
            write_at(session.fd, start, stream)
            session.ranges[start] = end
            if total is not None:
                session.total = total
            if not final:
                answer: dict[str, Any] = {
                    "done": False,
                    "bytes": session.received,
                    "kind": params.get("type") or "upload",
                    "public_id": session.public_id,
                }
                if resource_type != "auto":
                    answer["resource_type"] = resource_type
                return 200, answer
            session.finished = True
        # The last chunk: the file is whole; it becomes an asset (or is refused) like a single
        # upload, under the first chunk's parameters.
        with self.lock:
            self.uploads.pop(upload_id, None)
        session.close()
        try:
            return self._finish(
                resource_type,
                session.params,
                session.path,
                int(known_total or 0),
                session.filename,
                public_id=session.public_id,
            )
        finally:
            self.files.discard(session.path)

    def _session(
        self, upload_id: str, resource_type: str, params: dict[str, str], filename: str
    ) -> ChunkedUpload:
        now = self.clock()
        with self.lock:
            for idle_id in [
                uid for uid, up in self.uploads.items() if now - up.touched > CHUNKED_UPLOAD_IDLE
            ]:
                idle = self.uploads.pop(idle_id)
                idle.close()
                self.files.discard(idle.path)
            session = self.uploads.get(upload_id)
            if session is None:
                path = self.files.new_path(".chunks")
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                session = ChunkedUpload(
                    upload_id=upload_id,
                    resource_type=resource_type,
                    params=params,
                    public_id=self._public_id(params),
                    path=path,
                    fd=fd,
                    filename=filename,
                )
                self.uploads[upload_id] = session
            session.touched = now
            return session

    def _chunk_refusal(
        self,
        session: ChunkedUpload,
        resource_type: str,
        params: dict[str, str],
        start: int,
        end: int,
        total: int | None,
        length: int,
    ) -> tuple[int, dict[str, Any]] | None:
        upload_id = session.upload_id
        if session.finished:
            return _error(400, f"Chunked upload {upload_id} is already complete")
        if session.resource_type != resource_type:
            return _error(400, f"Chunked upload {upload_id} was started as {session.resource_type}")
        if not self._same_asset_params(session, params):
            # Not documented: Cloudinary keeps one set of upload parameters per upload id; the
            # stand-in refuses a chunk that would change them (only the per-chunk timestamp and
            # signature, and pycloudinary's echo of the assigned public_id, may differ).
            return _error(
                400, f"Chunk parameters differ from the first chunk of upload {upload_id}"
            )
        if total is not None and session.total is not None and total != session.total:
            return _error(
                400,
                f"Content-Range total {total} differs from {session.total} declared by an "
                "earlier chunk",
            )
        known_total = total if total is not None else session.total
        if known_total is not None and max([end, *session.ranges.values()]) >= known_total:
            return _error(
                400, f"Content-Range bytes {start}-{end} is beyond the total {known_total}"
            )
        overlap = session.overlapping(start, end)
        if overlap:
            return _error(
                400,
                f"Content-Range bytes {start}-{end} overlaps bytes {overlap[0]}-{overlap[1]} "
                "already received",
            )
        final = known_total is not None and end == known_total - 1
        if not final and length < self.min_chunk_size:
            return _error(400, MIN_CHUNK_MESSAGE)
        if final:
            gaps = session.missing(start)
            if gaps:
                listed = ", ".join(f"{a}-{b}" for a, b in gaps[:5])
                return _error(
                    400,
                    f"The last chunk arrived before bytes {listed}: send it after every other "
                    "chunk was answered",
                )
        return None

    @staticmethod
    def _same_asset_params(session: ChunkedUpload, params: dict[str, str]) -> bool:
        first = dict(session.params)
        this = dict(params)
        first_id = first.pop("public_id", None)
        this_id = this.pop("public_id", None)
        if first != this:
            return False
        return this_id == first_id or (first_id is None and this_id == session.public_id)

    def _finish(
        self,
        resource_type: str,
        params: dict[str, str],
        path: Path,
        size: int,
        filename: str,
        *,
        public_id: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Turn a complete file into an asset, with Cloudinary's checks, and answer for it."""
        if self.max_file_size is not None and size > self.max_file_size:
            return _error(400, f"File size too large. Got {size}. Maximum is {self.max_file_size}.")
        detected = detect(read_head(path, HEAD_BYTES))
        if resource_type == "auto":
            resource_type = detected.kind if detected else "raw"
        delivery_type = params.get("type") or "upload"
        if delivery_type not in DELIVERY_TYPES:
            return _error(400, f"Invalid type {delivery_type}: one of {', '.join(DELIVERY_TYPES)}")
        public_id = public_id or self._public_id(params)
        overwrite = _as_bool(params.get("overwrite"), default=True)
        key = (resource_type, delivery_type, public_id)
        if not overwrite:
            # Cloudinary answers an existing public_id at once, unchanged, with "existing": true
            # (https://cloudinary.com/documentation/image_upload_api_reference#upload, overwrite).
            existing = self.find(resource_type, public_id, delivery_type)
            if existing is not None:
                return 200, self.upload_answer(existing, existing=True)
        refused, fmt = self._format_refusal(resource_type, detected, params, public_id, filename)
        if refused:
            return refused
        md5, sha256 = hash_file(path)
        final_path = self.files.new_path(".asset")
        os.replace(path, final_path)
        if resource_type == "raw":
            # The CDN's Content-Type follows the public_id's extension for raw files.
            guessed = mimetypes.guess_type(f"x.{_extension(public_id)}")[0]
        else:
            guessed = mimetypes.guess_type(f"x.{fmt}")[0] if fmt else None
        asset = StoredAsset(
            public_id=public_id,
            resource_type=resource_type,
            path=final_path,
            size=size,
            version=self.next_version(),
            format=fmt,
            content_type=guessed or "application/octet-stream",
            created_at=datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            etag=md5,
            sha256=sha256,
            delivery_type=delivery_type,
            width=detected.width if detected else None,
            height=detected.height if detected else None,
            original_filename=filename.rsplit(".", 1)[0],
        )
        with self.lock:
            existing = self.assets.get(key)
            if existing is not None and not overwrite:
                # Another request stored it meanwhile: same rule, checked where it is atomic.
                self.files.discard(final_path)
                return 200, self.upload_answer(existing, existing=True)
            self.assets[key] = asset
        if existing is not None:
            self.files.discard(existing.path)
        if params.get("notification_url"):
            self._notify(
                params["notification_url"],
                {**self.describe(asset), "notification_type": "upload"},
            )
        return 200, self.upload_answer(asset)

    def _format_refusal(
        self,
        resource_type: str,
        detected: Detected | None,
        params: dict[str, str],
        public_id: str,
        filename: str,
    ) -> tuple[tuple[int, dict[str, Any]] | None, str]:
        """(refusal or None, the asset's format). Image and video formats come from the bytes;
        a raw file's format is its extension (the public_id's, else the uploaded file name's)."""
        if resource_type == "image" and (detected is None or detected.kind != "image"):
            return _error(400, "Invalid image file"), ""
        if resource_type == "video" and (detected is None or detected.kind != "video"):
            return _error(400, "Unsupported video format or file"), ""
        if resource_type == "raw":
            fmt = _extension(public_id) or _extension(filename)
        else:
            fmt = detected.format if detected else ""
        allowed = params.get("allowed_formats", "")
        if allowed:
            # allowed_formats: "Files of other types will be rejected" (Upload API reference);
            # the answer reads e.g. "Raw file format txt not allowed" (pycloudinary issue #266).
            names = {canonical_format(name) for name in allowed.split(",") if name.strip()}
            if canonical_format(fmt) not in names:
                kind = resource_type.capitalize()
                return _error(400, f"{kind} file format {fmt} not allowed"), fmt
        return None, fmt

    def _notify(self, url: str, payload: dict[str, Any]) -> None:
        """A signed upload notification: X-Cld-Signature = SHA(body + X-Cld-Timestamp + secret)
        (https://cloudinary.com/documentation/notifications#verifying_notification_signatures)."""
        body = json.dumps(payload).encode()
        timestamp = str(int(self.clock()))
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

    # --- Admin API ---------------------------------------------------------------------------
    def list_resources(
        self, resource_type: str, query: dict[str, list[str]], delivery_type: str | None = None
    ) -> dict[str, Any]:
        """GET resources/<rt>[/<type>] (https://cloudinary.com/documentation/admin_api#get_resources):
        without a type every delivery type is listed."""
        delivery_type = delivery_type or query.get("type", [""])[-1] or None
        prefix = query.get("prefix", [""])[-1]
        max_results = max(1, min(int(query.get("max_results", ["10"])[-1]), 500))
        offset = int(query.get("next_cursor", ["0"])[-1] or 0)
        with self.lock:
            matching = sorted(
                (
                    asset
                    for (rt, dtype, pid), asset in self.assets.items()
                    if rt == resource_type
                    and (delivery_type is None or dtype == delivery_type)
                    and pid.startswith(prefix)
                ),
                key=lambda asset: (asset.public_id, asset.delivery_type),
            )
        chunk = matching[offset : offset + max_results]
        result: dict[str, Any] = {"resources": [self.describe(a) for a in chunk]}
        if offset + max_results < len(matching):
            result["next_cursor"] = str(offset + max_results)
        return result

    def delete_resources(
        self, resource_type: str, public_ids: list[str], delivery_type: str = "upload"
    ) -> tuple[int, dict[str, Any]]:
        """DELETE resources/<rt>/<type> with public_ids[] (at most 100 a call)."""
        if len(public_ids) > 100:
            return _error(400, "Too many public_ids (max 100)")
        deleted: dict[str, str] = {}
        removed: list[StoredAsset] = []
        with self.lock:
            for pid in public_ids:
                found = self.assets.pop((resource_type, delivery_type, pid), None)
                deleted[pid] = "deleted" if found else "not_found"
                if found:
                    removed.append(found)
        for asset in removed:
            self.files.discard(asset.path)
        return 200, {"deleted": deleted, "partial": False}

    # --- WSGI --------------------------------------------------------------------------------
    def wsgi_app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = _Request(environ)
        try:
            response = self._dispatch(request)
        except ClientDisconnected:
            # The body ended before its Content-Length: nothing was stored, and nobody listens.
            with self.lock:
                self.incomplete_requests += 1
            response = self._json(400, _error(400, "Request body incomplete")[1])
        except HTTPException as exc:
            status = exc.code or 400
            response = self._json(status, _error(status, exc.description or exc.name)[1])
        self._drain(request)
        self._cors(request, response)
        return response(environ, start_response)

    @staticmethod
    def _drain(request: Request) -> None:
        # An unread body would be taken for the next request on a kept-alive connection.
        try:
            while request.stream.read(1024 * 1024):
                pass
        except (ClientDisconnected, OSError, ValueError):
            pass

    @staticmethod
    def _cors(request: Request, response: Response) -> None:
        response.headers["Access-Control-Allow-Origin"] = request.headers.get("Origin") or "*"
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS

    @staticmethod
    def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
        response = Response(
            json.dumps(body), status=status, content_type="application/json; charset=utf-8"
        )
        if status >= 400 and isinstance(body.get("error"), dict):
            # Cloudinary repeats an error's message in X-Cld-Error
            # (https://cloudinary.com/documentation/ts_troubleshooting_failed_upload_requests).
            message = str(body["error"].get("message", ""))
            response.headers["X-Cld-Error"] = _header_safe(message)
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response

    def _cdn_error(self, status: int, message: str) -> Response:
        # Delivery errors carry their reason in X-Cld-Error
        # (https://cloudinary.com/documentation/diagnosing_error_codes_tutorial).
        return self._json(status, _error(status, message)[1])

    def _authorised(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        return hmac.compare_digest(request.headers.get("Authorization", ""), f"Basic {expected}")

    def _dispatch(self, request: Request) -> Response:
        path = request.path
        method = request.method
        if method == "OPTIONS":
            return self._preflight(request)
        if self.fail_with is not None:
            return self._json(self.fail_with, _error(self.fail_with, "Simulated outage")[1])
        for pattern in (_UPLOAD_RE, _PING_RE, _RESOURCE_RE, _RESOURCES_RE, _DOWNLOAD_RE):
            match = pattern.match(path)
            if match:
                break
        else:
            match = None
        if match is not None and match["cloud"] != self.cloud_name:
            return self._json(404, _error(404, f"Unknown cloud name {match['cloud']}")[1])
        if match is not None and match.re is _UPLOAD_RE and method == "POST":
            return self._upload(request, match["rt"])
        if match is not None and match.re is _DOWNLOAD_RE and method in ("GET", "HEAD"):
            return self._private_download(request, match["rt"])
        if match is not None and match.re in (_PING_RE, _RESOURCE_RE, _RESOURCES_RE):
            return self._admin(request, match)
        if method in ("GET", "HEAD"):
            raw_path = str(request.environ.get("RAW_URI") or request.full_path).split("?", 1)[0]
            delivery = _DELIVERY_RE.match(raw_path)
            if delivery:
                return self._deliver(request, delivery)
        return self._json(404, _error(404, f"No route for {method} {path}")[1])

    def _preflight(self, request: Request) -> Response:
        response = Response(status=204)
        requested = request.headers.get("Access-Control-Request-Headers", "")
        allowed = CORS_ALLOW_HEADERS + (f", {requested}" if requested else "")
        response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, POST, DELETE, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = allowed
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    def _upload(self, request: Request, resource_type: str) -> Response:
        # The whole body is parsed (spooled to disk) before anything is stored: a request that
        # ends early raises ClientDisconnected here and leaves nothing behind.
        fields = {name: request.form.getlist(name)[-1] for name in request.form}
        upload = request.files.get("file")
        content_range = request.headers.get("Content-Range")
        if content_range:
            status, body = self.handle_chunk(
                resource_type,
                fields,
                upload,
                content_range,
                request.headers.get("X-Unique-Upload-Id", ""),
            )
        else:
            status, body = self.handle_upload(resource_type, fields, upload)
        return self._json(status, body)

    def _admin(self, request: Request, match: re.Match[str]) -> Response:
        if not self._authorised(request):
            return self._json(401, _error(401, "Invalid credentials")[1])
        method = request.method
        self.admin_calls.append((method, request.path))
        if match.re is _PING_RE and method == "GET":
            return self._json(200, {"status": "ok"})
        if match.re is _RESOURCE_RE and method == "GET":
            asset = self.find(match["rt"], unquote(match["public_id"]), match["type"])
            if asset is None:
                return self._json(404, _error(404, f"Resource not found - {match['public_id']}")[1])
            return self._json(200, self.describe(asset))
        if match.re is _RESOURCES_RE and method == "GET":
            query = parse_qs(request.query_string.decode())
            return self._json(200, self.list_resources(match["rt"], query, match["type"]))
        if match.re is _RESOURCES_RE and method == "DELETE":
            body = request.get_data()
            if body.strip().startswith(b"{"):
                payload = json.loads(body)
                public_ids = list(payload.get("public_ids") or [])
            else:
                query = parse_qs(request.query_string.decode() or body.decode())
                public_ids = query.get("public_ids[]", []) + query.get("public_ids", [])
            status, answer = self.delete_resources(
                match["rt"], public_ids, match["type"] or "upload"
            )
            return self._json(status, answer)
        return self._json(404, _error(404, f"No route for {method} {request.path}")[1])

    def _deliver(self, request: Request, match: re.Match[str]) -> Response:
        """The CDN: originals under /<cloud>/<rt>/<type>/[s--SIG--/][v<version>/]<public_id>."""
        if match["cloud"] != self.cloud_name:
            return self._cdn_error(404, f"Unknown cloud name {match['cloud']}")
        resource_type, delivery_type, rest = match["rt"], match["type"], match["rest"]
        signature = match["sig"]
        if signature is not None:
            # What cloudinary_url signs: everything after the signature except the version
            # (https://cloudinary.com/documentation/delivery_url_signatures); the version-
            # inclusive form is accepted too.
            candidates = [rest, smart_escape(unquote(rest))]
            if match["version"]:
                candidates.append(f"{match['version']}/{rest}")
            if not self._url_signature_valid(signature, candidates):
                return self._cdn_error(401, "Invalid signature")
        elif delivery_type == "authenticated":
            return self._cdn_error(401, "Authenticated delivery needs a signed URL")
        if delivery_type == "private":
            # Private originals are delivered only through the private download URL.
            return self._cdn_error(401, "Private originals need a private download URL")
        public_id = unquote(rest)
        asset = self.find(resource_type, public_id, delivery_type)
        if asset is None and resource_type != "raw" and "." in public_id.rsplit("/", 1)[-1]:
            asset = self.find(resource_type, public_id.rsplit(".", 1)[0], delivery_type)
        if asset is None:
            return self._cdn_error(404, "Resource not found")
        return self._serve(request, asset)

    def _private_download(self, request: Request, resource_type: str) -> Response:
        """GET /v1_1/<cloud>/<rt>/download?... as cloudinary.utils.private_download_url builds it:
        public_id, format, type, attachment, expires_at, timestamp, api_key, signature (an Upload
        API signature over every parameter but api_key and signature). The Upload API schema
        (operation downloadAsset) documents expires_at, attachment, target_filename.
        """
        params = {name: request.args.getlist(name)[-1] for name in request.args}
        if params.get("api_key") != self.api_key:
            return self._json(401, _error(401, f"Unknown API key {params.get('api_key', '')}")[1])
        to_sign = {k: v for k, v in params.items() if k not in UNSIGNED_PARAMS}
        if not self._signature_matches(to_sign, params.get("signature", "")):
            signature = params.get("signature", "")
            return self._json(401, _error(401, f"Invalid Signature {signature}.")[1])
        try:
            timestamp = int(params.get("timestamp", ""))
            expires_at = int(params["expires_at"]) if params.get("expires_at") else None
        except ValueError:
            return self._json(400, _error(400, "timestamp and expires_at must be integers")[1])
        # Without expires_at the URL lives as long as any signed request: one hour.
        deadline = expires_at if expires_at is not None else timestamp + SIGNED_UPLOAD_VALIDITY
        if self.clock() > deadline:
            return self._json(401, _error(401, f"Download URL expired at {deadline}")[1])
        public_id = params.get("public_id", "")
        if not public_id:
            return self._json(400, _error(400, "Missing required parameter - public_id")[1])
        delivery_type = params.get("type") or "upload"
        asset = self.find(resource_type, public_id, delivery_type)
        if asset is None:
            return self._json(404, _error(404, f"Resource not found - {public_id}")[1])
        wanted = params.get("format", "")
        same = canonical_format(wanted) == canonical_format(asset.format)
        if wanted and asset.resource_type != "raw" and not same:
            return self._json(
                400, _error(400, "The stand-in does not convert formats on download")[1]
            )
        response = self._serve(request, asset)
        if _as_bool(params.get("attachment"), default=False):
            name = params.get("target_filename") or asset.public_id.rsplit("/", 1)[-1]
            if asset.resource_type != "raw" and asset.format and "." not in name:
                name = f"{name}.{asset.format}"
            response.headers.set("Content-Disposition", "attachment", filename=name)
        return response

    def _serve(self, request: Request, asset: StoredAsset) -> Response:
        """The original's bytes: HEAD, Range (206 + Content-Range, 416), ETag, and gzip for text
        when the client accepts it (lengths then describe the compressed bytes, as from a CDN)."""
        accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
        if (
            accepts_gzip
            and "Range" not in request.headers
            and asset.content_type.startswith("text/")
            and asset.size <= GZIP_MAX_BYTES
        ):
            compressed = gzip.compress(asset.data)
            response = Response(compressed, status=200, content_type=asset.content_type)
            response.headers["Content-Encoding"] = "gzip"
            response.headers["Accept-Ranges"] = "bytes"
            response.set_etag(asset.etag)
            return response
        handle = asset.open()
        response = Response(
            wrap_file(request.environ, handle),
            status=200,
            content_type=asset.content_type,
            direct_passthrough=True,
        )
        response.content_length = asset.size
        response.set_etag(asset.etag)
        try:
            response.make_conditional(request, accept_ranges=True, complete_length=asset.size)
        except RequestedRangeNotSatisfiable:
            handle.close()
            refused = Response(b"", status=416)
            refused.headers["Content-Range"] = f"bytes */{asset.size}"
            return refused
        if request.method == "HEAD":
            handle.close()  # no body is sent; the lengths stay
            response.response = []
        return response


@dataclass
class Notification:
    """An upload notification the stand-in sent (or tried to)."""

    url: str
    body: bytes
    timestamp: str
    signature: str
    status: int | None = None
    error: str | None = None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
