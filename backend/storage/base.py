"""The provider contract: `CloudStorageService` and the plain dataclasses that cross it.

Everything above this layer (the media upload service, webhooks, jobs, admin) talks to a
`CloudStorageService` and never to boto3 or the Cloudinary SDK directly. No SDK object or raw SDK
dict ever crosses this boundary.

Error rules for implementations:
- "the object is not there" is a value (`StoredObject.exists == False`, `read_head` -> None,
  deleting a missing key is success), never an exception;
- any failure to talk to the provider (network, 5xx, throttling, bad credentials at run time)
  raises `backend.core.errors.ProviderUnavailable`;
- a client-supplied claim that does not verify raises `ConfirmationRejected`;
- multipart uploads are optional (`capabilities.large_uploads`): a provider without them raises
  `NotSupported` (code `multipart_not_supported`, HTTP 400); a multipart request the provider
  refuses for the client's reasons (wrong ETag, part too small, unknown upload) raises
  `MultipartRejected`.

What a provider can do (size limits, large-upload protocol, key rule, notifications) is declared
in its `capabilities`; code above this layer decides from those facts, never from a name.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from backend.core.errors import NotSupported

#: How a create answer's instructions are to be sent: "single" (one request), "chunked" (the same
#: request repeated per byte range) or "multipart" (POST /api/v1/uploads/multipart/).
UploadProtocol = Literal["single", "chunked", "multipart"]
#: How files too big for one request go up: "multipart" (S3: parts presigned one by one, then
#: assembled by a complete call) or "chunked" (Cloudinary's chunked upload: byte ranges POSTed
#: to the upload endpoint in order).
LargeUploadProtocol = Literal["multipart", "chunked"]
#: How a provider's notification is authenticated: "request_signature" (the provider signs each
#: delivery with our credentials: `CloudStorageService.verify_notification_request`) or "sns"
#: (the provider publishes to Amazon SNS; the SNS message signature is checked, AWS's certs).
NotificationVerification = Literal["request_signature", "sns"]


def _keeps_every_extension(content_type: str) -> bool:
    return True


def _no_extension(content_type: str) -> str:
    return ""


@dataclass(frozen=True)
class ProviderNotifications:
    """How a provider tells us about objects it stored or removed (our webhooks)."""

    #: Recorded as `metadata.verified_by` when such a notification finalises an upload; the
    #: upload service skips the client-payload check for these sources (the webhook verified
    #: the provider's own signature on the whole delivery).
    source: str
    verification: NotificationVerification
    #: True: `presign_upload` signs our webhook URL into each upload (`notification_url`): the
    #: public base URL + the route named `webhooks:<provider name>`. False: the provider is set
    #: up once to notify, outside any upload (S3 bucket events published to SNS).
    per_upload_url: bool = False


@dataclass(frozen=True)
class ProviderCapabilities:
    """What one provider can do: part of the contract, declared by each service class."""

    #: Largest object one signed upload request (`presign_upload`) may carry, in bytes.
    max_single_upload: int
    #: The protocol for files above `max_single_upload`; None: one request is all there is.
    large_uploads: LargeUploadProtocol | None = None
    #: Bounds of the large-upload protocol: every part/chunk but the last is at least
    #: `min_part_size` and at most `max_part_size` bytes; at most `max_parts` of them (None:
    #: the provider sets no such bound).
    min_part_size: int | None = None
    max_part_size: int | None = None
    max_parts: int | None = None
    #: The chunk size the server chooses for a chunked upload (every chunk but the last has
    #: exactly this many bytes); None for other protocols (multipart part sizes are per upload).
    part_size: int | None = None
    #: Whether a key keeps the file name's extension, given the content type (Cloudinary adds
    #: the format to image and video public_ids itself).
    keeps_extension: Callable[[str], bool] = _keeps_every_extension
    #: Where a key does not keep the file name's extension: the extension it gets instead,
    #: from the declared content type ("" for none). Never the client's.
    key_extension: Callable[[str], str] = _no_extension
    #: How the provider notifies us; None: it does not.
    notifications: ProviderNotifications | None = None
    #: Whether a declared SHA-256 is enforced or checked against a digest the provider computes
    #: over the stored bytes (`promote`). Where not, a declared checksum is refused at create:
    #: recording a digest nobody checks would promise an integrity the upload does not have.
    verifies_checksum: bool = False

    @property
    def max_upload_size(self) -> int | None:
        """The largest file this provider takes at all (None: no bound of its own)."""
        if self.large_uploads is None:
            return self.max_single_upload
        if self.max_parts and self.max_part_size:
            return self.max_parts * self.max_part_size
        return None

    def for_clients(self) -> dict[str, Any]:
        """What a client plans an upload with (`GET /api/v1/config/` -> `capabilities`)."""
        return {
            "max_single_upload": self.max_single_upload,
            "large_uploads": self.large_uploads,
            "min_part_size": self.min_part_size,
            "max_part_size": self.max_part_size,
            "max_parts": self.max_parts,
            "part_size": self.part_size,
            "verifies_checksum": self.verifies_checksum,
        }


@dataclass(frozen=True)
class ObjectRef:
    """Where an object lives at its provider.

    `key` is the S3 key or the Cloudinary public_id. `content_type` is the declared MIME type
    (Cloudinary derives its resource type from it). `version` is Cloudinary's version once known.
    `checksum_sha256` is the SHA-256 (hex) the client declared for the bytes, "" when it declared
    none: `presign_upload` binds it into the instructions where the provider enforces it (S3).
    """

    key: str
    content_type: str = "application/octet-stream"
    version: str | None = None
    checksum_sha256: str = ""


@dataclass(frozen=True)
class Promotion:
    """What `CloudStorageService.promote` left at the final key.

    `checksum_sha256` is the SHA-256 (hex) the provider itself computed over the object now at
    the final key, None when the provider computes none (compare it with a declared digest)."""

    ref: ObjectRef
    checksum_sha256: str | None = None


#: The Content-Range header of one chunk, as a template: `start` and `end` are the first and
#: last byte offsets of the chunk (inclusive), `total` the file's size.
#: Declared types a browser renders as active content (script would run in the provider's
#: delivery origin): every provider serves their downloads as attachments, never inline.
ACTIVE_CONTENT_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/xslt+xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/mathml+xml",
        "text/javascript",
        "application/javascript",
        "application/ecmascript",
        "text/ecmascript",
        "application/x-shockwave-flash",
        "multipart/x-mixed-replace",
    }
)


def media_type(content_type: str) -> str:
    """ "Image/PNG; charset=binary" -> "image/png"."""
    return content_type.split(";", 1)[0].strip().lower()


def renders_as_active_content(content_type: str) -> bool:
    """Whether a browser would render `content_type` (parameters ignored) as active content."""
    return media_type(content_type) in ACTIVE_CONTENT_TYPES


CHUNK_CONTENT_RANGE = "bytes {start}-{end}/{total}"


@dataclass(frozen=True)
class ChunkedUpload:
    """How to send a file in chunks with the same instructions (protocol "chunked").

    Every chunk is one request exactly as `UploadInstructions` describe (the same `fields` and
    `headers`, the chunk's bytes as the `file` part), plus a `Content-Range` header
    (`CHUNK_CONTENT_RANGE`). Every chunk but the last has `chunk_size` bytes; the last is sent
    only after every other was answered, and its answer is the provider's upload response."""

    chunk_size: int
    total_size: int

    @property
    def chunk_count(self) -> int:
        return max(1, -(-self.total_size // self.chunk_size))

    def as_dict(self) -> dict[str, Any]:
        return {
            "chunk_size": self.chunk_size,
            "chunk_count": self.chunk_count,
            "total_size": self.total_size,
            "content_range": CHUNK_CONTENT_RANGE,
        }


@dataclass(frozen=True)
class UploadInstructions:
    """What a client needs to upload directly: the same shape for every provider.

    POST: send a multipart form with every entry of `fields` (in order) and then the file as
    the `file` field. PUT: send the raw bytes with `headers`. `chunked` set (protocol
    "chunked"): send the file as several such requests, one per byte range (`ChunkedUpload`).
    """

    method: str
    url: str
    fields: dict[str, str]
    headers: dict[str, str]
    expires_at: datetime
    chunked: ChunkedUpload | None = None

    @property
    def protocol(self) -> UploadProtocol:
        return "chunked" if self.chunked else "single"

    def as_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "method": self.method,
            "url": self.url,
            "fields": dict(self.fields),
            "headers": dict(self.headers),
            "expires_at": self.expires_at.isoformat(),
            "chunked": self.chunked.as_dict() if self.chunked else None,
        }


@dataclass(frozen=True)
class StoredObject:
    """What the provider says about a stored object. `exists=False` means it is not there."""

    key: str
    exists: bool
    size: int | None = None
    content_type: str | None = None
    etag: str | None = None
    version: str | None = None
    url: str | None = None
    last_modified: datetime | None = None
    # Provider-specific facts worth keeping (width/height, format, resource_type ...)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ListedObject:
    ref: ObjectRef
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class ObjectPage:
    objects: list[ListedObject]
    next_token: str | None = None


@dataclass(frozen=True)
class DeleteResult:
    """Outcome of a batch delete. A key that was already missing counts as deleted."""

    deleted: list[str]
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeResult:
    provider: str
    ok: bool
    latency_ms: float
    error: str | None = None


@dataclass(frozen=True)
class MultipartSession:
    """A multipart upload started at the provider: parts go to `key` under `upload_id`."""

    key: str
    upload_id: str


@dataclass(frozen=True)
class PartInstructions:
    """A presigned request for one part: send the part's raw bytes with `method` + `headers`,
    keep the `ETag` response header for the complete call."""

    part_number: int
    method: str
    url: str
    headers: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True)
class UploadedPart:
    """A part the provider holds (ListParts)."""

    part_number: int
    etag: str
    size: int
    last_modified: datetime | None = None


@dataclass(frozen=True)
class CompletedPart:
    """A part named by the client at complete time."""

    part_number: int
    etag: str


#: `abort_stale_multipart_uploads(keep=...)`: given one listing page of stale uploads, the
#: (key, upload_id) pairs that must not be aborted.
KeepUploads = Callable[[Sequence[MultipartSession]], Collection[tuple[str, str]]]


#: What a refused multipart request means for the client: a part list it can fix, a part
#: below the minimum size, or an upload that is no longer there (aborted, completed, expired).
MultipartRefusal = Literal["invalid_part", "part_too_small", "upload_gone"]


class MultipartRejected(Exception):
    """The provider refused a multipart request for the client's reasons.

    `code` is the provider's (S3: InvalidPart, InvalidPartOrder, EntityTooSmall, NoSuchUpload),
    `kind` what it means, `advice` what the client can do about it (for the API's message)."""

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        kind: MultipartRefusal = "invalid_part",
        advice: str = "",
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.kind = kind
        self.advice = advice


class RangeNotSatisfiable(Exception):
    """A ranged read of an object that has no byte 0 (S3 InvalidRange, HTTP 416): it is empty."""


def first_bytes_range(length: int) -> str:
    """The HTTP Range header value for the first `length` bytes."""
    return f"bytes=0-{length - 1}"


def full_size(content_range: object, content_length: object) -> int | None:
    """The whole object's size from a ranged read's answer: the total of its Content-Range
    (`bytes 0-511/123456`), or its Content-Length when the server ignored the Range and sent
    the whole object. None when neither says."""
    text = str(content_range or "")
    total = text.rsplit("/", 1)[-1] if "/" in text else ""
    if total.isdigit():
        return int(total)
    length = "" if content_length is None else str(content_length)
    return int(length) if length.isdigit() else None


class NotificationRejected(Exception):
    """A notification is not genuine or not current (bad signature, outside the window)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfirmationRejected(Exception):
    """A client's confirmation payload (e.g. a Cloudinary upload response) does not verify."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CloudStorageService(abc.ABC):
    """One storage provider. Instances are cheap to keep and safe to share between threads."""

    #: Stable provider name as stored on `MediaUpload.provider` and `AppConfig.provider`.
    name: ClassVar[str]
    #: How messages to people name it ("S3", "Cloudinary").
    display_name: ClassVar[str]
    capabilities: ClassVar[ProviderCapabilities]
    #: Largest number of keys one `delete_many` call sends to the provider.
    delete_batch_size: ClassVar[int] = 100

    def presign_chunked_upload(
        self,
        ref: ObjectRef,
        *,
        size: int,
        expires_in: int,
        notification_url: str | None = None,
    ) -> UploadInstructions:
        """Signed instructions for one object of exactly `size` bytes sent in chunks of
        `capabilities.part_size` (`capabilities.large_uploads == "chunked"`)."""
        raise NotSupported(
            f"The storage provider {self.name!r} does not take chunked uploads.",
            code="chunked_not_supported",
            details={"provider": self.name},
        )

    @abc.abstractmethod
    def presign_upload(
        self,
        ref: ObjectRef,
        *,
        size: int,
        max_size: int,
        expires_in: int,
        notification_url: str | None = None,
    ) -> UploadInstructions:
        """Signed instructions allowing exactly one object at `staged_key(ref.key)`, of
        `ref.content_type`, at most `max_size` bytes (the declared `size` is what the client
        said it will send), with `ref.checksum_sha256` where the provider enforces one."""

    # --- staging and promotion (single-request uploads) ------------------------------------
    def staged_key(self, key: str) -> str:
        """The key a single-request upload's instructions let the client write for the final
        key `key`. Default: the final key itself (a provider whose instructions cannot be
        replayed after confirm, or that has no server-side copy)."""
        return key

    def final_key(self, key: str) -> str:
        """The final key a written key belongs to: `staged_key`'s inverse (any other key is
        returned as is). Events and Uppy name the staged key; rows record the final one."""
        return key

    def promote(self, ref: ObjectRef) -> Promotion:
        """Make the object the client wrote (at `staged_key(ref.key)`) the object at `ref.key`,
        which no issued credential can write, and drop the staged copy. Never replaces an
        object already at `ref.key` (that one was promoted or assembled before, and is what
        gets verified). A staged object that is not there is not an error: verification then
        finds the final key empty (not uploaded yet). Default: nothing to do."""
        return Promotion(ref)

    def verify_confirmation(self, ref: ObjectRef, payload: Mapping[str, Any]) -> ObjectRef:
        """Check what a client posts at confirm time; return the ref, enriched if needed.

        Default: the provider needs no client payload (S3: we HEAD the object ourselves)."""
        return ref

    def verify_notification_request(
        self, body: bytes, headers: Mapping[str, str], *, now: int | None = None
    ) -> None:
        """Authenticate a delivery this provider signed (`capabilities.notifications.verification
        == "request_signature"`) on its raw body and headers; raise NotificationRejected."""
        raise NotSupported(
            f"The storage provider {self.name!r} does not sign its notifications.",
            details={"provider": self.name},
        )

    @abc.abstractmethod
    def inspect(self, ref: ObjectRef) -> StoredObject:
        """Size, content type, ETag/version and URL as stored at the provider."""

    def read_head(self, ref: ObjectRef, length: int = 512) -> bytes | None:
        """The first `length` bytes of the stored object, or None if it is missing."""
        return self.inspect_with_head(ref, length)[1]

    def inspect_with_head(
        self, ref: ObjectRef, length: int = 512
    ) -> tuple[StoredObject, bytes | None]:
        """The stored facts and the first `length` bytes of ONE version of the object.

        Verification needs both to describe the same bytes: presigned instructions stay usable
        until they expire, so the object can be replaced between two separate calls. One ranged
        read (`read_first_bytes`) answers both: its headers describe the object whose first
        bytes it returns."""
        if length <= 0:
            return self.inspect(ref), b""
        try:
            return self.read_first_bytes(ref, length)
        except RangeNotSatisfiable:  # an empty object has no byte 0
            stored = self.inspect(ref)
            return stored, (b"" if stored.exists else None)

    @abc.abstractmethod
    def read_first_bytes(self, ref: ObjectRef, length: int) -> tuple[StoredObject, bytes | None]:
        """One ranged read of bytes 0..length-1 (`first_bytes_range`): the stored facts from its
        answer (the full size via `full_size`) and at most `length` bytes; a missing object is
        `(StoredObject(exists=False), None)`. Raises RangeNotSatisfiable for an empty object."""

    @abc.abstractmethod
    def delete_many(self, refs: Sequence[ObjectRef]) -> DeleteResult:
        """Delete up to `delete_batch_size` objects in one provider call (with each one's
        staged copy, where `staged_key` differs from the key)."""

    def delete(self, ref: ObjectRef) -> bool:
        result = self.delete_many([ref])
        return ref.key in result.deleted

    @abc.abstractmethod
    def list_objects(
        self, prefix: str, *, page_token: str | None = None, page_size: int = 1000
    ) -> ObjectPage:
        """One page of objects under `prefix`; pass `next_token` back for the next page."""

    def iter_objects(self, prefix: str, *, page_size: int = 1000) -> Iterator[ListedObject]:
        token: str | None = None
        while True:
            page = self.list_objects(prefix, page_token=token, page_size=page_size)
            yield from page.objects
            if not page.next_token:
                return
            token = page.next_token

    @abc.abstractmethod
    def download_url(self, ref: ObjectRef, *, expires_in: int = 300) -> str:
        """A short-lived URL to fetch the object (signed where the provider supports it)."""

    # --- multipart uploads (optional) -------------------------------------------------------
    @property
    def supports_multipart(self) -> bool:
        """Whether this provider implements the multipart methods below."""
        return self.capabilities.large_uploads == "multipart"

    def multipart_not_supported(self) -> NotSupported:
        return NotSupported(
            f"The storage provider {self.name!r} does not support multipart uploads; "
            "use POST /api/v1/uploads/ instead (it answers chunked instructions for large "
            "files where the provider has them).",
            code="multipart_not_supported",
            details={"provider": self.name},
        )

    def create_multipart_upload(self, ref: ObjectRef) -> MultipartSession:
        """Start a multipart upload at `ref.key` with content type `ref.content_type`."""
        raise self.multipart_not_supported()

    def presign_upload_part(
        self,
        ref: ObjectRef,
        upload_id: str,
        part_number: int,
        *,
        expires_in: int,
        content_length: int | None,
    ) -> PartInstructions:
        """A presigned PUT for one part (1-10 000) of `upload_id`, bound to exactly
        `content_length` bytes (the provider refuses a body of any other length); None when
        the file's size was not declared (the part list is then checked at complete)."""
        raise self.multipart_not_supported()

    def list_parts(self, ref: ObjectRef, upload_id: str) -> list[UploadedPart]:
        """Every part uploaded so far, in part-number order (all pages)."""
        raise self.multipart_not_supported()

    def complete_multipart_upload(
        self, ref: ObjectRef, upload_id: str, parts: Sequence[CompletedPart]
    ) -> None:
        """Assemble `parts` (ascending part numbers) into the object at `ref.key`."""
        raise self.multipart_not_supported()

    def abort_multipart_upload(self, ref: ObjectRef, upload_id: str) -> None:
        """Abort `upload_id` and free its parts; an upload already gone is success."""
        raise self.multipart_not_supported()

    def abort_stale_multipart_uploads(
        self, prefix: str, older_than: datetime, *, keep: KeepUploads | None = None
    ) -> int:
        """Abort multipart uploads under `prefix` started before `older_than`, except those
        `keep` returns; providers without multipart uploads: 0.

        `keep` is called once per listing page with that page's stale uploads and returns the
        (key, upload_id) pairs to leave alone (e.g. the ones a live row still owns), so a caller
        can answer each page with one lookup."""
        return 0

    @abc.abstractmethod
    def probe(self) -> ProbeResult:
        """A live, cheap call proving credentials and reachability (never raises)."""
