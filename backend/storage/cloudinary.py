"""`CloudinaryService`: Cloudinary through the official SDK (pycloudinary).

Credentials are passed explicitly to every SDK call instead of mutating the global
`cloudinary.config()`, so two configurations (tests, a runtime switch) never leak into each other.
Per-upload checks read the original through its delivery URL (CDN: HEAD for size/type, ranged GET
for the first bytes); the Admin API is rate-limited (500 calls/hour on free plans) and only used
for listing, batch deletes and the probe.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import cloudinary.api
import cloudinary.exceptions
import cloudinary.utils
import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

from backend.core.errors import ProviderUnavailable
from backend.storage import resilience
from backend.storage.base import (
    ChunkedUpload,
    CloudStorageService,
    ConfirmationRejected,
    DeleteResult,
    ListedObject,
    NotificationRejected,
    ObjectPage,
    ObjectRef,
    ProbeResult,
    ProviderCapabilities,
    ProviderNotifications,
    RangeNotSatisfiable,
    StoredObject,
    UploadInstructions,
    first_bytes_range,
    full_size,
    media_type,
    renders_as_active_content,
)
from backend.storage.calls import CallFault, Run, provider_call
from backend.storage.provider_settings import CLOUDINARY_DELIVERY_BASE, CloudinarySettings

RESOURCE_TYPES: tuple[str, ...] = ("image", "video", "raw")
# Cloudinary accepts signed upload parameters for one hour after their timestamp, whatever
# expiry we state: https://cloudinary.com/documentation/authentication_signatures
SIGNED_PARAMS_LIFETIME = 3600
#: Every upload is stored with the `authenticated` delivery type: its delivery URL needs a
#: signature, and clients only ever get the time-limited private download URL
#: (https://cloudinary.com/documentation/control_access_to_media).
DELIVERY_TYPE = "authenticated"

#: `allowed_formats` signed into an image/video upload, by declared type: Cloudinary refuses
#: any other detected format at upload ("Image file format svg not allowed"), so SVG bytes never
#: land under an image/png instruction. A type not listed signs its subtype (see
#: `allowed_formats_for`).
ALLOWED_FORMATS: dict[str, str] = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/pjpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
    "image/avif": "avif",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/x-icon": "ico",
    "image/vnd.microsoft.icon": "ico",
    "image/svg+xml": "svg",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "video/x-matroska": "mkv",
    "video/3gpp": "3gp",
    "video/ogg": "ogv",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/webm": "webm",
    "audio/flac": "flac",
    "audio/aac": "aac",
}

#: The extension a raw upload's public_id gets, by declared type. Cloudinary serves a raw file
#: with the Content-Type of its public_id's extension, so the client's own extension is never
#: used ("page.html" declared text/plain must not be served as text/html): a type listed here
#: gets its own extension, any other none (served as application/octet-stream). No type a
#: browser runs as active content (HTML, XHTML, XML, SVG, JavaScript) is listed.
RAW_EXTENSIONS: dict[str, str] = {
    "text/plain": ".txt",
    "text/csv": ".csv",
    "text/markdown": ".md",
    "application/pdf": ".pdf",
    "application/json": ".json",
    "application/zip": ".zip",
    "application/gzip": ".gz",
    "application/x-tar": ".tar",
    "application/rtf": ".rtf",
    "application/msword": ".doc",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.ms-powerpoint": ".ppt",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/epub+zip": ".epub",
}

_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
# Chunked uploads: "Each chunk must be larger than 5mb except the last one" (support article
# "Guidelines for self implementing chunked upload to Cloudinary"; the SDKs use 5 MiB as the
# minimum), and one chunk is one upload request, capped at 100 MB. 20 MiB (the SDKs' default
# chunk size) keeps the request count low and a retried chunk cheap.
MIN_CHUNK_SIZE = 5 * 1024 * 1024
MAX_SINGLE_REQUEST = 100 * 1000 * 1000
CHUNK_SIZE = 20 * 1024 * 1024

# One pooled session per process for delivery-URL reads (HEAD / ranged GET).
_session = requests.Session()
_session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=32))
_session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=32))


def resource_type_for(content_type: str) -> str:
    """Cloudinary's resource type for a MIME type (audio is stored as "video")."""
    major = content_type.split("/", 1)[0].strip().lower()
    if major == "image":
        return "image"
    if major in ("video", "audio"):
        return "video"
    return "raw"


def keeps_extension(content_type: str) -> bool:
    """No public_id keeps the client's extension: Cloudinary appends the format to image and
    video public_ids itself, and raw files get `key_extension` (from the declared type)."""
    return False


def key_extension(content_type: str) -> str:
    """The extension a public_id ends with: for raw files the declared type's safe one
    (`RAW_EXTENSIONS`, else none); image and video public_ids have none."""
    if resource_type_for(content_type) != "raw":
        return ""
    return RAW_EXTENSIONS.get(media_type(content_type), "")


def allowed_formats_for(content_type: str) -> str:
    """The `allowed_formats` an upload of this declared type is signed with ("" for raw: a raw
    file's format is its public_id's extension, which we choose)."""
    if resource_type_for(content_type) == "raw":
        return ""
    base = media_type(content_type)
    if base in ALLOWED_FORMATS:
        return ALLOWED_FORMATS[base]
    # image/x-foo+xml -> "foo": restrictive; an unknown type is refused rather than let in.
    subtype = base.split("/", 1)[-1].split("+", 1)[0]
    return subtype.removeprefix("x-") or "none"


def content_type_hint(resource_type: str, fmt: str | None) -> str:
    """A MIME type good enough to map a listed asset back to its resource type."""
    if resource_type == "image":
        return f"image/{fmt or '*'}"
    if resource_type == "video":
        return f"video/{fmt or '*'}"
    return "application/octet-stream"


def _fault(exc: BaseException) -> CallFault | None:
    """What an SDK or HTTP error means for `provider_call`.

    Outages (counted by the breaker): network errors, timeouts, unparsable answers and 5xx
    (the SDK's GeneralError; a bare Exception for a status it has no class for, e.g. 502),
    throttling. A 4xx the Admin API answered (not found, refused credentials) is not one."""
    if isinstance(exc, cloudinary.exceptions.RateLimited):
        return CallFault("RateLimited", f"rate-limited: {exc}", retry_after=60)
    if isinstance(exc, requests.RequestException | cloudinary.exceptions.GeneralError):
        return CallFault(type(exc).__name__, str(exc))
    if isinstance(exc, cloudinary.exceptions.Error):
        return CallFault(type(exc).__name__, str(exc), outage=False)
    if type(exc) is Exception:
        return CallFault("Error", str(exc))
    return None


def _encode_token(resource_type: str, cursor: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([resource_type, cursor]).encode()).decode()


def _decode_token(token: str) -> tuple[str, str]:
    try:
        resource_type, cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise ValueError("malformed Cloudinary page token") from exc
    if resource_type not in RESOURCE_TYPES:
        raise ValueError("malformed Cloudinary page token")
    return str(resource_type), str(cursor)


class CloudinaryService(CloudStorageService):
    name = "cloudinary"
    display_name = "Cloudinary"
    capabilities = ProviderCapabilities(
        # One signed upload request, which Cloudinary caps at 100 MB; above it, the same signed
        # request once per chunk (`presign_chunked_upload`), up to the account's file size limit
        # (CLOUDINARY_MAX_FILE_SIZE, see registry).
        max_single_upload=MAX_SINGLE_REQUEST,
        large_uploads="chunked",
        min_part_size=MIN_CHUNK_SIZE,
        max_part_size=MAX_SINGLE_REQUEST,
        part_size=CHUNK_SIZE,
        keeps_extension=keeps_extension,
        key_extension=key_extension,
        notifications=ProviderNotifications(
            source="cloudinary_webhook",
            verification="request_signature",
            per_upload_url=True,
        ),
    )
    delete_batch_size = 100

    def __init__(self, cfg: CloudinarySettings) -> None:
        self.cfg = cfg

    # --- plumbing --------------------------------------------------------------------------
    @property
    def _api_options(self) -> dict[str, Any]:
        return {
            "cloud_name": self.cfg.cloud_name,
            "api_key": self.cfg.api_key,
            "api_secret": self.cfg.api_secret,
            "upload_prefix": self.cfg.api_base,
            # The SDK hands this to urllib3, which retries 3 times: each attempt gets a quarter
            # of the provider deadline, connect and reads together (`total`).
            "timeout": resilience.urllib3_timeout(resilience.budget()),
        }

    def _calling(self, operation: str, *, network: bool = True) -> AbstractContextManager[Run]:
        # Cloudinary's error text (and a request error's URL) goes to the server log only.
        return provider_call(
            self.name, operation, _fault, display_name=self.display_name, network=network
        )

    def sign(self, params: Mapping[str, Any], *, signature_version: int = 2) -> str:
        return str(
            cloudinary.utils.api_sign_request(
                dict(params),
                self.cfg.api_secret,
                self.cfg.signature_algorithm,
                signature_version=signature_version,
            )
        )

    def delivery_url(self, ref: ObjectRef, *, signed: bool = False) -> str:
        """URL of the stored original (no transformation), on the configured delivery base.

        Assets are `authenticated`: only the signed form is served (a signature that does not
        expire, so it is used for our own reads and never handed to a client)."""
        url, _ = cloudinary.utils.cloudinary_url(
            ref.key,
            resource_type=resource_type_for(ref.content_type),
            type=DELIVERY_TYPE,
            version=ref.version,
            secure=True,
            sign_url=signed,
            cloud_name=self.cfg.cloud_name,
            api_key=self.cfg.api_key,
            api_secret=self.cfg.api_secret,
            private_cdn=False,
            cname=None,
            secure_distribution=None,
        )
        url = str(url)
        if self.cfg.delivery_prefix and url.startswith(CLOUDINARY_DELIVERY_BASE):
            url = self.cfg.delivery_prefix + url[len(CLOUDINARY_DELIVERY_BASE) :]
        return url

    def _cdn_request(
        self, method: str, url: str, headers: dict[str, str], *, read: int = 0
    ) -> tuple[requests.Response, bytes | None]:
        """One delivery request and (for a 2xx answer) up to `read` bytes of its body, both in
        one guarded call (the body's bytes count against the deadline). The response comes back
        closed."""
        # Identity encoding: with gzip, Content-Length / Content-Range would describe the
        # compressed bytes, and a genuine upload would fail the size check.
        headers = {"Accept-Encoding": "identity", **headers}
        budget = resilience.budget()

        def fetch() -> tuple[requests.Response, bytes | None]:
            response = _session.request(
                method,
                url,
                headers=headers,
                timeout=(budget.connect, budget.delivery_read),
                stream=True,
            )
            try:
                if response.status_code >= 500 or response.status_code in (401, 403, 420, 429):
                    raise ProviderUnavailable(
                        f"Cloudinary delivery {method} answered {response.status_code}.",
                        details={"provider": self.name, "operation": f"delivery {method}"},
                    )
                if not read or response.status_code >= 300:
                    return response, None
                # A server that ignores Range sends everything: read no more than asked.
                return response, bytes(response.raw.read(read, decode_content=True)[:read])
            finally:
                response.close()

        with self._calling(f"delivery {method}") as run:
            result: tuple[requests.Response, bytes | None] = run(fetch)
        return result

    # --- uploads ---------------------------------------------------------------------------
    def presign_upload(
        self,
        ref: ObjectRef,
        *,
        size: int,
        max_size: int,
        expires_in: int,
        notification_url: str | None = None,
    ) -> UploadInstructions:
        # Cloudinary cannot cap the size in signed parameters: confirm checks the stored size.
        timestamp = int(time.time())
        # Exactly what the client sends, minus file/cloud_name/resource_type/api_key (the
        # SDK's uploader leaves those out of the signature too). public_id carries the full
        # path, so no `folder` is sent. Every parameter is signed, so a client can drop none:
        # - overwrite=false: Cloudinary overwrites by default and accepts signed parameters for
        #   an hour, so without it the same fields could replace a verified upload after
        #   confirm. With it, a second upload to this public_id gets the existing asset back
        #   ("existing": true) unchanged.
        # - type=authenticated: no public delivery URL; downloads go through `download_url`.
        # - allowed_formats: the declared type's format; Cloudinary refuses other bytes.
        params: dict[str, str] = {
            "timestamp": str(timestamp),
            "public_id": ref.key,
            "overwrite": "false",
            "type": DELIVERY_TYPE,
        }
        allowed = allowed_formats_for(ref.content_type)
        if allowed:
            params["allowed_formats"] = allowed
        if notification_url:
            params["notification_url"] = notification_url
        fields = {**params, "api_key": self.cfg.api_key, "signature": self.sign(params)}
        return UploadInstructions(
            method="POST",
            url=(
                f"{self.cfg.api_base}/v1_1/{self.cfg.cloud_name}/"
                f"{resource_type_for(ref.content_type)}/upload"
            ),
            fields=fields,
            headers={},
            # When Cloudinary really stops accepting these fields, whatever `expires_in` asked:
            # the row's expiry (cleanup, the follow-up check after a delete) relies on it.
            expires_at=datetime.fromtimestamp(timestamp + SIGNED_PARAMS_LIFETIME, tz=UTC),
        )

    def presign_chunked_upload(
        self,
        ref: ObjectRef,
        *,
        size: int,
        expires_in: int,
        notification_url: str | None = None,
    ) -> UploadInstructions:
        """Cloudinary's chunked upload: the signed fields of `presign_upload`, repeated on every
        chunk, with an `X-Unique-Upload-Id` we choose (random: it names this upload only) and a
        `Content-Range: bytes start-end/total` per chunk. The last chunk's answer is the
        ordinary upload response (public_id, version, signature), which confirm verifies.

        Every chunk repeats the same signed fields, so the whole file must be up within the
        hour Cloudinary accepts them (`expires_at`, as for a single upload)."""
        single = self.presign_upload(
            ref,
            size=size,
            max_size=size,
            expires_in=expires_in,
            notification_url=notification_url,
        )
        return replace(
            single,
            headers={**single.headers, "X-Unique-Upload-Id": secrets.token_hex(16)},
            chunked=ChunkedUpload(chunk_size=CHUNK_SIZE, total_size=size),
        )

    def verify_confirmation(self, ref: ObjectRef, payload: Mapping[str, Any]) -> ObjectRef:
        """Check the upload response a client relays: signature over public_id + version."""
        public_id = payload.get("public_id")
        version = payload.get("version")
        signature = payload.get("signature")
        if not isinstance(public_id, str) or public_id != ref.key:
            raise ConfirmationRejected("public_id does not match the upload's key")
        if isinstance(version, bool) or not isinstance(version, int | str):
            raise ConfirmationRejected("version is missing")
        if not str(version).isdigit():
            raise ConfirmationRejected("version is malformed")
        if not isinstance(signature, str) or not signature:
            raise ConfirmationRejected("signature is missing")
        # Same string as the SDK's verify_api_response_signature (v1 signing), compared in
        # constant time with our own secret and algorithm.
        expected = self.sign({"public_id": public_id, "version": str(version)}, signature_version=1)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise ConfirmationRejected("upload response signature does not verify")
        return ObjectRef(key=ref.key, content_type=ref.content_type, version=str(version))

    def verify_notification(
        self, body: bytes, timestamp: str, signature: str, *, now: int | None = None
    ) -> bool:
        """X-Cld-Signature check: hex SHA(raw body + X-Cld-Timestamp + api_secret)."""
        try:
            sent_at = int(timestamp)
        except (TypeError, ValueError):
            return False
        current = int(time.time()) if now is None else int(now)
        # Bounded on both sides: an old notification is a replay, a future one is forged.
        if abs(current - sent_at) > settings.WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS:
            return False
        digest = _HASHES.get(self.cfg.signature_algorithm, hashlib.sha1)(
            bytes(body) + str(timestamp).encode() + self.cfg.api_secret.encode()
        ).hexdigest()
        return hmac.compare_digest(digest.encode(), (signature or "").encode("utf-8", "replace"))

    def verify_notification_request(
        self, body: bytes, headers: Mapping[str, str], *, now: int | None = None
    ) -> None:
        """A delivery as received: X-Cld-Timestamp and X-Cld-Signature over the raw body.

        https://cloudinary.com/documentation/notifications#verifying_notification_signatures"""
        timestamp = headers.get("X-Cld-Timestamp")
        signature = headers.get("X-Cld-Signature")
        if not timestamp or not signature:
            raise NotificationRejected("X-Cld-Timestamp and X-Cld-Signature are required")
        if not self.verify_notification(body, timestamp, signature, now=now):
            raise NotificationRejected(
                "X-Cld-Signature does not match the body, or X-Cld-Timestamp is outside the window"
            )

    # --- reads -----------------------------------------------------------------------------
    def inspect(self, ref: ObjectRef) -> StoredObject:
        # The version in the URL names this upload exactly, so no CDN copy of an earlier
        # answer (a cached 404 before the upload landed) can be served for it.
        url = self.delivery_url(ref, signed=True)
        response, _ = self._cdn_request("HEAD", url, {})
        if response.status_code == 404:
            return StoredObject(key=ref.key, exists=False)
        size = full_size(None, response.headers.get("Content-Length"))
        return self._stored_from(ref, response, size)

    def _stored_from(
        self, ref: ObjectRef, response: requests.Response, size: int | None
    ) -> StoredObject:
        """The StoredObject a delivery HEAD/GET answer describes (`size` from whichever header
        carries the full length)."""
        if response.status_code >= 400:
            raise ProviderUnavailable(
                f"Cloudinary delivery {response.request.method} answered {response.status_code}.",
                details={"provider": self.name, "operation": f"delivery {response.request.method}"},
            )
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return StoredObject(
            key=ref.key,
            exists=True,
            size=size,
            content_type=content_type or None,
            etag=response.headers.get("ETag", "").strip('"') or None,
            version=ref.version,
            # Recorded in the row's metadata (shown to the owner): the unsigned location, which
            # Cloudinary refuses for an authenticated asset, never the signed URL we read with.
            url=self.delivery_url(ref),
            extra={"resource_type": resource_type_for(ref.content_type)},
        )

    def read_first_bytes(self, ref: ObjectRef, length: int) -> tuple[StoredObject, bytes | None]:
        # One ranged GET on the delivery URL of the original: the headers (Content-Range with
        # the full size, Content-Type, ETag) describe exactly the bytes it returns.
        url = self.delivery_url(ref, signed=True)
        response, data = self._cdn_request(
            "GET", url, {"Range": first_bytes_range(length)}, read=length
        )
        if response.status_code == 404:
            return StoredObject(key=ref.key, exists=False), None
        if response.status_code == 416:
            raise RangeNotSatisfiable
        size = full_size(
            response.headers.get("Content-Range"), response.headers.get("Content-Length")
        )
        return self._stored_from(ref, response, size), data

    # --- deletes ---------------------------------------------------------------------------
    def delete_many(self, refs: Sequence[ObjectRef]) -> DeleteResult:
        unique = list({ref.key: ref for ref in refs}.values())
        if len(unique) > self.delete_batch_size:
            raise ValueError(
                f"Cloudinary delete_resources takes at most {self.delete_batch_size} public_ids, "
                f"got {len(unique)}"
            )
        by_type: dict[str, list[str]] = {}
        for ref in unique:
            by_type.setdefault(resource_type_for(ref.content_type), []).append(ref.key)
        deleted: list[str] = []
        failed: dict[str, str] = {}
        for resource_type, public_ids in by_type.items():
            with self._calling("delete_many (delete_resources)") as run:
                answer = run(
                    cloudinary.api.delete_resources,
                    public_ids,
                    resource_type=resource_type,
                    type=DELIVERY_TYPE,
                    **self._api_options,
                )
            outcome = answer.get("deleted") or {}
            for public_id in public_ids:
                status = outcome.get(public_id)
                if status in ("deleted", "not_found"):
                    deleted.append(public_id)
                else:
                    failed[public_id] = str(status or "no answer for this public_id")
        return DeleteResult(deleted=deleted, failed=failed)

    # --- listing ---------------------------------------------------------------------------
    def list_objects(
        self, prefix: str, *, page_token: str | None = None, page_size: int = 1000
    ) -> ObjectPage:
        resource_type, cursor = _decode_token(page_token) if page_token else ("image", "")
        options: dict[str, Any] = {
            "resource_type": resource_type,
            "type": DELIVERY_TYPE,
            "prefix": prefix,
            "max_results": max(1, min(page_size, 500)),
        }
        if cursor:
            options["next_cursor"] = cursor
        with self._calling("list_objects (resources)") as run:
            answer = run(cloudinary.api.resources, **options, **self._api_options)
        objects = []
        for item in answer.get("resources") or []:
            created = str(item.get("created_at") or "")
            objects.append(
                ListedObject(
                    ref=ObjectRef(
                        key=str(item["public_id"]),
                        content_type=content_type_hint(resource_type, item.get("format")),
                        version=str(item["version"]) if item.get("version") else None,
                    ),
                    size=int(item.get("bytes") or 0),
                    last_modified=(
                        datetime.fromisoformat(created) if created else datetime.now(UTC)
                    ),
                )
            )
        next_token: str | None = None
        if answer.get("next_cursor"):
            next_token = _encode_token(resource_type, str(answer["next_cursor"]))
        else:
            position = RESOURCE_TYPES.index(resource_type)
            if position + 1 < len(RESOURCE_TYPES):
                next_token = _encode_token(RESOURCE_TYPES[position + 1], "")
        return ObjectPage(objects=objects, next_token=next_token)

    def download_url(self, ref: ObjectRef, *, expires_in: int = 300) -> str:
        """The SDK's private download URL (signed, refused by Cloudinary after `expires_at`);
        active content (HTML, SVG ...) comes as an attachment. Built locally, no API call.
        https://cloudinary.com/documentation/control_access_to_media"""
        with self._calling("download_url (private_download_url)", network=False) as run:
            url = run(
                cloudinary.utils.private_download_url,
                ref.key,
                "",
                resource_type=resource_type_for(ref.content_type),
                type=DELIVERY_TYPE,
                expires_at=int(time.time()) + max(1, int(expires_in)),
                # Left out (not "0") unless wanted: inline is Cloudinary's default.
                attachment=True if renders_as_active_content(ref.content_type) else None,
                cloud_name=self.cfg.cloud_name,
                api_key=self.cfg.api_key,
                api_secret=self.cfg.api_secret,
                signature_algorithm=self.cfg.signature_algorithm,
                upload_prefix=self.cfg.api_base,
            )
        return str(url)

    def probe(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            with self._calling("probe (ping)") as run:
                run(cloudinary.api.ping, **self._api_options)
        except Exception as exc:  # the probe reports every failure, it never raises
            cause = exc.__cause__ if isinstance(exc, ProviderUnavailable) and exc.__cause__ else exc
            return ProbeResult(
                provider=self.name,
                ok=False,
                latency_ms=(time.perf_counter() - started) * 1000,
                error=f"ping failed: {type(cause).__name__}: {cause}",
            )
        return ProbeResult(
            provider=self.name, ok=True, latency_ms=(time.perf_counter() - started) * 1000
        )
