"""`S3Service`: Amazon S3 (or any S3-compatible store: MinIO, R2, moto) through boto3.

One boto3 client per process and per settings (built lazily, then reused): a new Session +
client costs ~65 ms, signing with a cached client ~0.15 ms. boto3 clients are thread-safe.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import boto3
import botocore.auth
import orjson
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from backend.core.errors import ProviderUnavailable
from backend.storage import resilience
from backend.storage.base import (
    CloudStorageService,
    CompletedPart,
    DeleteResult,
    KeepUploads,
    ListedObject,
    MultipartRefusal,
    MultipartRejected,
    MultipartSession,
    ObjectPage,
    ObjectRef,
    PartInstructions,
    ProbeResult,
    Promotion,
    ProviderCapabilities,
    ProviderNotifications,
    RangeNotSatisfiable,
    StoredObject,
    UploadedPart,
    UploadInstructions,
    first_bytes_range,
    full_size,
    renders_as_active_content,
)
from backend.storage.calls import CallFault, Run, provider_call
from backend.storage.provider_settings import S3Settings

logger = logging.getLogger(__name__)

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "503"})
# Multipart answers that are the client's fault (a 4xx the client can act on), not an outage:
# what each means, and what to do about it.
_MULTIPART_REFUSALS: dict[str, tuple[MultipartRefusal, str]] = {
    "InvalidPart": (
        "invalid_part",
        "S3 does not hold every listed part with the given ETag. Upload the missing parts "
        "again (GET the parts list for the ETags S3 holds), then complete again.",
    ),
    "InvalidPartOrder": ("invalid_part", "The parts must be listed in ascending order."),
    "MalformedXML": ("invalid_part", "The parts list was not accepted by S3."),
    "EntityTooSmall": (
        "part_too_small",
        "Every part but the last must be exactly part_size bytes (at least 5 MiB).",
    ),
    "NoSuchUpload": ("upload_gone", "The multipart upload is no longer there."),
    # CompleteMultipartUpload is sent with If-None-Match: *: an object is already at the key
    # (an earlier complete assembled it) and is never replaced.
    "PreconditionFailed": (
        "upload_gone",
        "An object is already stored at this key; a completed upload is never replaced.",
    ),
}
#: The path segment under UPLOAD_KEY_PREFIX where single-request uploads land before confirm
#: promotes them: `<prefix>/_staging/<owner>/<uuid>/<name>` for `<prefix>/<owner>/<uuid>/<name>`.
#: Final keys start with an owner id, never with this segment. A bucket lifecycle rule on this
#: prefix (expire after a day) backs up the cleanup (docs/providers.md).
STAGING_SEGMENT = "_staging"


def multipart_rejected(code: str, reason: str) -> MultipartRejected:
    """S3's refusal `code` as the contract's MultipartRejected (kind and advice filled in)."""
    kind, advice = _MULTIPART_REFUSALS.get(code, ("invalid_part", "S3 refused the request."))
    return MultipartRejected(code, reason, kind=kind, advice=advice)


# Presigned GET URLs signed with SigV4 are valid for at most 7 days.
_MAX_URL_EXPIRY = 7 * 24 * 3600
MiB = 1024 * 1024
GiB = 1024 * MiB

_client_lock = threading.Lock()
_clients: dict[tuple[S3Settings, resilience.Budget], Any] = {}


def get_client(cfg: S3Settings) -> Any:
    """The process-wide boto3 S3 client for these settings (built on first use)."""
    key = (cfg, resilience.budget())
    client = _clients.get(key)
    if client is not None:
        return client
    with _client_lock:
        client = _clients.get(key)
        if client is None:
            client = _build_client(cfg, key[1])
            _clients[key] = client
        return client


def drop_clients() -> None:
    """Forget cached clients (tests, after the settings they were built from changed)."""
    with _client_lock:
        _clients.clear()
        _post_targets.clear()


# Per client and bucket: (form URL, signing region) of a presigned POST. Both depend only on the
# client's settings and the bucket, so botocore's endpoint resolution (most of the cost of
# generate_presigned_post) runs once, and later policies are signed directly.
_post_targets: dict[tuple[int, str], tuple[str, str]] = {}


def _post_target(client: Any, bucket: str) -> tuple[str, str]:
    target = _post_targets.get((id(client), bucket))
    if target is None:
        post = client.generate_presigned_post(Bucket=bucket, Key="probe", ExpiresIn=60)
        # x-amz-credential is AKID/date/REGION/s3/aws4_request.
        region = post["fields"]["x-amz-credential"].split("/")[2]
        target = (post["url"], region)
        with _client_lock:
            _post_targets[(id(client), bucket)] = target
    return target


# botocore.auth's SIGV4_TIMESTAMP and ISO8601 formats, filled from the fields (strftime costs
# several times more, most of it importing `time` and parsing the format on every call).
_SIGV4_TIMESTAMP = "%04d%02d%02dT%02d%02d%02dZ"
_ISO8601 = "%04d-%02d-%02dT%02d:%02d:%02dZ"


def _fields(moment: datetime) -> tuple[int, int, int, int, int, int]:
    return moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second


@functools.lru_cache(maxsize=16)
def _signer(secret_key: str, datestamp: str, region: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with SigV4's derived key (four HMACs), to be copied for each
    policy: the key changes once a day per region and secret, so it is derived once, not per
    upload. Held in memory like the secret it comes from.

    Copied and updated rather than `hmac.digest(key, msg)`: that one-shot call releases the GIL
    whatever the message's length, and in a threaded worker whose other threads want the GIL
    every release hands it away and waits to get it back (a busy neighbour thread made each call
    ~800 us instead of ~2). An HMAC object's update keeps the GIL below 2 KiB, which a policy
    stays under unless it carries a long session token."""
    key = ("AWS4" + secret_key).encode()
    for part in (datestamp, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, digestmod=hashlib.sha256)


def sign_post(
    client: Any,
    bucket: str,
    key: str,
    fields: dict[str, str],
    conditions: list[Any],
    expires_in: int,
) -> dict[str, Any]:
    """What `client.generate_presigned_post(...)` returns, signed directly as botocore's
    S3SigV4PostAuth signs it (AWS: "Calculating a Signature" for browser-based POST): the same
    policy document (conditions, then bucket and key, then the signature's own; written as
    compact JSON), the same fields in the same order, the same URL, with the day's derived key
    kept. tests/storage/test_s3_service.py compares the two, field by field."""
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    if credentials is None or key.endswith("${filename}"):
        return client.generate_presigned_post(  # type: ignore[no-any-return]
            Bucket=bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=expires_in
        )
    url, region = _post_target(client, bucket)
    frozen = credentials.get_frozen_credentials()  # refreshes a role's credentials when due
    # botocore's own clock, as generate_presigned_post uses it.
    now = botocore.auth.get_current_datetime()  # type: ignore[attr-defined]
    amz_date = _SIGV4_TIMESTAMP % _fields(now)
    scope = f"{frozen.access_key}/{amz_date[:8]}/{region}/s3/aws4_request"
    signed = {
        **fields,
        "key": key,
        "x-amz-algorithm": "AWS4-HMAC-SHA256",
        "x-amz-credential": scope,
        "x-amz-date": amz_date,
    }
    policy_conditions = [
        *conditions,
        {"bucket": bucket},
        {"key": key},
        {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
        {"x-amz-credential": scope},
        {"x-amz-date": amz_date},
    ]
    if frozen.token is not None:
        signed["x-amz-security-token"] = frozen.token
        policy_conditions.append({"x-amz-security-token": frozen.token})
    policy = {
        "expiration": _ISO8601 % _fields(now + timedelta(seconds=expires_in)),
        "conditions": policy_conditions,
    }
    # Compact JSON (orjson): botocore writes the same document with spaces, at ten times the cost.
    encoded = base64.b64encode(orjson.dumps(policy))
    signed["policy"] = encoded.decode("ascii")
    signature = _signer(frozen.secret_key, amz_date[:8], region).copy()
    signature.update(encoded)
    signed["x-amz-signature"] = signature.hexdigest()
    return {"url": url, "fields": signed}


def _build_client(cfg: S3Settings, budget: resilience.Budget) -> Any:
    config = Config(
        # Without this boto3 presigns POSTs with SigV2 fields, which new regions refuse.
        signature_version="s3v4",
        **resilience.botocore_timeouts(budget),
        # Emulators and MinIO on a bare host:port cannot serve virtual-hosted bucket names.
        s3={"addressing_style": "path" if cfg.endpoint_url else "auto"},
    )
    kwargs: dict[str, Any] = {"config": config}
    if cfg.region:
        kwargs["region_name"] = cfg.region
    if cfg.endpoint_url:
        kwargs["endpoint_url"] = cfg.endpoint_url
    if cfg.access_key_id and cfg.secret_access_key:
        kwargs["aws_access_key_id"] = cfg.access_key_id
        kwargs["aws_secret_access_key"] = cfg.secret_access_key
        if cfg.session_token:
            kwargs["aws_session_token"] = cfg.session_token
    # Otherwise boto3's default credential chain (instance role, env, profile) applies.
    return boto3.session.Session().client("s3", **kwargs)


def _key_prefix() -> str:
    prefix = str(settings.UPLOAD_KEY_PREFIX).strip("/")
    return f"{prefix}/" if prefix else ""


def _hex_from_base64(value: object) -> str | None:
    """S3's base64 checksum as lowercase hex (None when absent or malformed)."""
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _base64_from_hex(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{err.get('Code') or status}: {err.get('Message') or 'no message'}"
    return f"{type(exc).__name__}: {exc}"


def aws_fault(exc: BaseException) -> CallFault | None:
    """What a botocore error means for `provider_call` (S3 here, and SNS for the webhook)."""
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        throttled = code in _THROTTLE_CODES
        return CallFault(
            code,
            _describe(exc),
            retry_after=5 if throttled else 30,
            # A 4xx (access denied, a bad request) is S3 answering, not an outage.
            outage=status >= 500 or throttled,
        )
    if isinstance(exc, BotoCoreError):
        return CallFault(type(exc).__name__, _describe(exc))
    return None


class S3Service(CloudStorageService):
    name = "s3"
    display_name = "S3"
    capabilities = ProviderCapabilities(
        # A presigned POST carries up to 5 GiB; beyond that, multipart: every part but the last
        # 5 MiB to 5 GiB, at most 10 000 parts.
        max_single_upload=5 * GiB,
        large_uploads="multipart",
        min_part_size=5 * MiB,
        max_part_size=5 * GiB,
        max_parts=10_000,
        # Bucket event notifications, configured once on the bucket, published to SNS.
        notifications=ProviderNotifications(source="s3_event", verification="sns"),
        # The POST policy pins x-amz-checksum-sha256 and the promoting copy computes SHA-256.
        verifies_checksum=True,
    )
    # DeleteObjects takes 1000 keys; each object goes with its staging key (`delete_many`).
    delete_batch_size = 500

    def __init__(self, cfg: S3Settings) -> None:
        self.cfg = cfg
        self.bucket = cfg.bucket

    @property
    def client(self) -> Any:
        return get_client(self.cfg)

    def _calling(self, operation: str, *, network: bool = True) -> AbstractContextManager[Run]:
        # S3's error text can name the account, an IAM ARN or the bucket: the log only.
        return provider_call(
            self.name, operation, self._fault, display_name=self.display_name, network=network
        )

    def _fault(self, exc: BaseException) -> CallFault | None:
        fault = aws_fault(exc)
        if fault is None:
            return None
        description = f"bucket {self.bucket}: {fault.description}"
        return CallFault(fault.code, description, fault.retry_after, fault.outage)

    def object_url(self, key: str) -> str:
        """The canonical (unsigned) URL of an object; private objects need `download_url`."""
        path = quote(key, safe="/~")
        if self.cfg.endpoint_url:
            return f"{self.cfg.endpoint_url}/{self.bucket}/{path}"
        region = self.cfg.region or "us-east-1"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{path}"

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
        # S3 notifies through bucket event configuration (SNS), not per upload:
        # notification_url is ignored here.
        # The form names the STAGING key: the POST policy stays valid until it expires, so a
        # replayed form after confirm lands there, where nothing reads it; confirm copies the
        # object to the final key (`promote`), which no issued credential can write.
        expiry = max(1, min(int(expires_in), settings.UPLOAD_MAX_PRESIGN_EXPIRY))
        upper = max(1, min(int(size), int(max_size)))
        fields: dict[str, str] = {"Content-Type": ref.content_type}
        # sign_post adds {"bucket": ...} and {"key": <exact key>} (as generate_presigned_post).
        conditions: list[Any] = [
            {"Content-Type": ref.content_type},
            # The policy refuses anything bigger than declared; confirm re-checks the size.
            ["content-length-range", 1, upper],
        ]
        if ref.checksum_sha256:
            # S3 computes the SHA-256 of the body and refuses it (BadDigest) unless it is this
            # one; the policy pins both fields. Confirm compares the copy's checksum too.
            digest = _base64_from_hex(ref.checksum_sha256)
            fields["x-amz-checksum-algorithm"] = "SHA256"
            fields["x-amz-checksum-sha256"] = digest
            conditions.append({"x-amz-checksum-algorithm": "SHA256"})
            conditions.append({"x-amz-checksum-sha256": digest})
        if self.cfg.upload_acl:
            fields["acl"] = self.cfg.upload_acl
            conditions.append({"acl": self.cfg.upload_acl})
        expires_at = datetime.now(UTC) + timedelta(seconds=expiry)
        with self._calling("presign_upload", network=False):
            post = sign_post(
                self.client, self.bucket, self.staged_key(ref.key), fields, conditions, expiry
            )
        return UploadInstructions(
            method="POST",
            url=post["url"],
            fields=post["fields"],  # every name and value a str (botocore's too)
            headers={},
            expires_at=expires_at,
        )

    # --- staging and promotion --------------------------------------------------------------
    def staged_key(self, key: str) -> str:
        prefix = _key_prefix()
        marker = f"{prefix}{STAGING_SEGMENT}/"
        if key.startswith(marker):
            return key
        rest = key[len(prefix) :] if prefix and key.startswith(prefix) else key
        return marker + rest

    def final_key(self, key: str) -> str:
        prefix = _key_prefix()
        marker = f"{prefix}{STAGING_SEGMENT}/"
        return prefix + key[len(marker) :] if key.startswith(marker) else key

    def _final_checksum(self, ref: ObjectRef) -> tuple[bool, str | None]:
        """Whether an object is at the final key, and the SHA-256 S3 stored for it (HEAD with
        ChecksumMode: S3 keeps the checksum a promoting copy computed)."""
        with self._calling("promote (HeadObject)") as run:
            try:
                head = run(
                    self.client.head_object,
                    Bucket=self.bucket,
                    Key=ref.key,
                    ChecksumMode="ENABLED",
                )
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND_CODES:
                    return False, None
                raise
        return True, _hex_from_base64(head.get("ChecksumSHA256"))

    def promote(self, ref: ObjectRef) -> Promotion:
        # An object already at the final key was promoted (or assembled by a multipart
        # complete) before: it is the one to verify, never replaced.
        exists, checksum = self._final_checksum(ref)
        if exists:
            return Promotion(ref, checksum)
        staged = self.staged_key(ref.key)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": ref.key,
            "CopySource": {"Bucket": self.bucket, "Key": staged},
            # S3 conditional write: refused (412) if an object appeared at the final key since
            # the HEAD above (two confirms racing), so the final key is written at most once.
            "IfNoneMatch": "*",
            # S3 computes the SHA-256 of the copy (the whole object: a POST upload is one part).
            "ChecksumAlgorithm": "SHA256",
            "MetadataDirective": "COPY",
        }
        if self.cfg.upload_acl:
            kwargs["ACL"] = self.cfg.upload_acl
        # A POST upload is at most 5 GiB, the most one CopyObject copies: no UploadPartCopy.
        with self._calling("promote (CopyObject)") as run:
            try:
                response = run(self.client.copy_object, **kwargs)
            except ClientError as exc:
                code = _error_code(exc)
                if code in _NOT_FOUND_CODES:
                    return Promotion(ref)  # nothing staged (yet): verification says so
                if code != "PreconditionFailed":
                    raise
                response = None
        if response is None:  # another confirm promoted it first
            return Promotion(ref, self._final_checksum(ref)[1])
        checksum = _hex_from_base64(response.get("CopyObjectResult", {}).get("ChecksumSHA256"))
        try:
            self.delete_many([ObjectRef(key=staged)])
        except ProviderUnavailable:
            # The final object is in place; the cleanup's reconcile removes the staged one.
            logger.warning("promote: staged copy of %s left for the cleanup", ref.key)
        return Promotion(ref, checksum)

    # --- reads -----------------------------------------------------------------------------
    def inspect(self, ref: ObjectRef) -> StoredObject:
        with self._calling("inspect (HeadObject)") as run:
            try:
                head = run(self.client.head_object, Bucket=self.bucket, Key=ref.key)
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND_CODES:
                    return StoredObject(key=ref.key, exists=False)
                raise
        return self._stored_from(ref, head, int(head.get("ContentLength", 0)))

    def _stored_from(
        self, ref: ObjectRef, response: dict[str, Any], size: int | None
    ) -> StoredObject:
        return StoredObject(
            key=ref.key,
            exists=True,
            size=size,
            content_type=response.get("ContentType"),
            etag=str(response.get("ETag", "")).strip('"') or None,
            version=response.get("VersionId"),
            url=self.object_url(ref.key),
            last_modified=response.get("LastModified"),
            extra={"bucket": self.bucket},
        )

    def read_first_bytes(self, ref: ObjectRef, length: int) -> tuple[StoredObject, bytes | None]:
        # One ranged GetObject: its headers describe the object whose first bytes it returns.

        def fetch() -> tuple[dict[str, Any], bytes]:
            # The body is read inside the guarded call: its bytes count against the deadline.
            response = self.client.get_object(
                Bucket=self.bucket, Key=ref.key, Range=first_bytes_range(length)
            )
            body = response["Body"]
            try:
                return response, bytes(body.read(length))
            finally:
                body.close()

        with self._calling("inspect (ranged GetObject)") as run:
            try:
                response, data = run(fetch)
            except ClientError as exc:
                code = _error_code(exc)
                if code in _NOT_FOUND_CODES:
                    return StoredObject(key=ref.key, exists=False), None
                if code == "InvalidRange":
                    raise RangeNotSatisfiable from None
                raise
        size = full_size(response.get("ContentRange"), response.get("ContentLength"))
        return self._stored_from(ref, response, size), data

    # --- deletes ---------------------------------------------------------------------------
    def delete_many(self, refs: Sequence[ObjectRef]) -> DeleteResult:
        keys = list(dict.fromkeys(ref.key for ref in refs))
        if len(keys) > self.delete_batch_size:
            # Real S3 refuses more than 1000 keys per DeleteObjects (moto does not): split first.
            raise ValueError(
                f"S3 DeleteObjects takes at most {self.delete_batch_size} keys, got {len(keys)}"
            )
        if not keys:
            return DeleteResult(deleted=[])
        # Each object goes with its staged copy (a single upload's, or one a replayed form
        # wrote after confirm): nothing is left behind that a row once accounted for.
        staged = {key: self.staged_key(key) for key in keys}
        sent = list(dict.fromkeys([*keys, *staged.values()]))
        with self._calling("delete_many (DeleteObjects)") as run:
            response = run(
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in sent], "Quiet": True},
            )
        # Quiet mode lists only failures; S3 reports a missing key as deleted.
        errors = {
            str(err.get("Key")): f"{err.get('Code')}: {err.get('Message')}"
            for err in response.get("Errors", [])
        }
        failed = {
            key: errors.get(key) or errors[staged[key]]
            for key in keys
            if key in errors or staged[key] in errors
        }
        return DeleteResult(deleted=[k for k in keys if k not in failed], failed=failed)

    # --- listing ---------------------------------------------------------------------------
    def list_objects(
        self, prefix: str, *, page_token: str | None = None, page_size: int = 1000
    ) -> ObjectPage:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": prefix,
            "MaxKeys": max(1, min(page_size, 1000)),
        }
        if page_token:
            kwargs["ContinuationToken"] = page_token
        with self._calling("list_objects (ListObjectsV2)") as run:
            response = run(self.client.list_objects_v2, **kwargs)
        objects = [
            ListedObject(
                ref=ObjectRef(key=item["Key"]),
                size=int(item.get("Size", 0)),
                last_modified=item["LastModified"],
            )
            for item in response.get("Contents", [])
        ]
        token = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        return ObjectPage(objects=objects, next_token=token)

    def download_url(self, ref: ObjectRef, *, expires_in: int = 300) -> str:
        # The answer's type is the row's verified type, whatever the object's metadata says;
        # types a browser would run as a page are downloaded instead.
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": ref.key,
            "ResponseContentType": ref.content_type,
        }
        if renders_as_active_content(ref.content_type):
            name = ref.key.rsplit("/", 1)[-1] or "download"
            params["ResponseContentDisposition"] = f'attachment; filename="{name}"'
        with self._calling("download_url", network=False):
            return str(
                self.client.generate_presigned_url(
                    "get_object",
                    Params=params,
                    ExpiresIn=max(1, min(int(expires_in), _MAX_URL_EXPIRY)),
                )
            )

    # --- multipart ---------------------------------------------------------------------------
    def create_multipart_upload(self, ref: ObjectRef) -> MultipartSession:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": ref.key,
            "ContentType": ref.content_type,
        }
        if self.cfg.upload_acl:
            kwargs["ACL"] = self.cfg.upload_acl
        with self._calling("create_multipart_upload (CreateMultipartUpload)") as run:
            response = run(self.client.create_multipart_upload, **kwargs)
        return MultipartSession(key=ref.key, upload_id=str(response["UploadId"]))

    def presign_upload_part(
        self,
        ref: ObjectRef,
        upload_id: str,
        part_number: int,
        *,
        expires_in: int,
        content_length: int | None,
    ) -> PartInstructions:
        expiry = max(1, min(int(expires_in), settings.UPLOAD_MAX_PRESIGN_EXPIRY))
        expires_at = datetime.now(UTC) + timedelta(seconds=expiry)
        with self._calling("presign_upload_part", network=False):
            params: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": ref.key,
                "UploadId": upload_id,
                "PartNumber": int(part_number),
            }
            if content_length is not None:
                # Signed (X-Amz-SignedHeaders=content-length;host): S3 refuses a PUT of any
                # other length, so a part URL cannot carry more than the declared bytes.
                # Browsers and HTTP clients set Content-Length from the body themselves.
                params["ContentLength"] = int(content_length)
            url = self.client.generate_presigned_url(
                "upload_part",
                Params=params,
                ExpiresIn=expiry,
                HttpMethod="PUT",
            )
        return PartInstructions(
            part_number=int(part_number),
            method="PUT",
            url=str(url),
            headers={},
            expires_at=expires_at,
        )

    @contextmanager
    def _multipart_call(self, operation: str) -> Iterator[Run]:
        """Like `_calling`, but the client's mistakes become MultipartRejected (a 4xx)."""
        with self._calling(operation) as run:
            try:
                yield run
            except ClientError as exc:
                code = _error_code(exc)
                if code in _MULTIPART_REFUSALS:
                    raise multipart_rejected(code, _describe(exc)) from None
                raise

    def list_parts(self, ref: ObjectRef, upload_id: str) -> list[UploadedPart]:
        parts: list[UploadedPart] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": ref.key, "UploadId": upload_id}
        while True:
            with self._multipart_call("list_parts (ListParts)") as run:
                response = run(self.client.list_parts, **kwargs)
            parts.extend(
                UploadedPart(
                    part_number=int(item["PartNumber"]),
                    etag=str(item.get("ETag", "")),
                    size=int(item.get("Size", 0)),
                    last_modified=item.get("LastModified"),
                )
                for item in response.get("Parts", [])
            )
            if not response.get("IsTruncated"):
                return parts
            kwargs["PartNumberMarker"] = int(response.get("NextPartNumberMarker", 0))

    def complete_multipart_upload(
        self, ref: ObjectRef, upload_id: str, parts: Sequence[CompletedPart]
    ) -> None:
        with self._multipart_call("complete_multipart_upload (CompleteMultipartUpload)") as run:
            run(
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=ref.key,
                UploadId=upload_id,
                # S3 conditional write: a complete never replaces an object at the key (412).
                IfNoneMatch="*",
                MultipartUpload={
                    "Parts": [{"PartNumber": p.part_number, "ETag": p.etag} for p in parts]
                },
            )

    def abort_multipart_upload(self, ref: ObjectRef, upload_id: str) -> None:
        with self._calling("abort_multipart_upload (AbortMultipartUpload)") as run:
            try:
                run(
                    self.client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=ref.key,
                    UploadId=upload_id,
                )
            except ClientError as exc:
                if _error_code(exc) != "NoSuchUpload":  # already aborted or completed: fine
                    raise

    def abort_stale_multipart_uploads(
        self, prefix: str, older_than: datetime, *, keep: KeepUploads | None = None
    ) -> int:
        aborted = 0
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            with self._calling("abort_stale_multipart_uploads (ListMultipartUploads)") as run:
                response = run(self.client.list_multipart_uploads, **kwargs)
            stale = [
                MultipartSession(key=str(upload["Key"]), upload_id=str(upload["UploadId"]))
                for upload in response.get("Uploads", [])
                if upload["Initiated"] < older_than
            ]
            kept = set(keep(stale)) if keep is not None and stale else set()
            for upload in stale:
                if (upload.key, upload.upload_id) in kept:
                    continue
                with self._calling("abort_stale_multipart_uploads (AbortMultipartUpload)") as run:
                    try:
                        run(
                            self.client.abort_multipart_upload,
                            Bucket=self.bucket,
                            Key=upload.key,
                            UploadId=upload.upload_id,
                        )
                    except ClientError as exc:
                        if _error_code(exc) != "NoSuchUpload":  # already gone: fine
                            raise
                        continue
                aborted += 1
            if not response.get("IsTruncated"):
                return aborted
            kwargs["KeyMarker"] = response.get("NextKeyMarker", "")
            kwargs["UploadIdMarker"] = response.get("NextUploadIdMarker", "")

    def probe(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            with self._calling("probe (HeadBucket)") as run:
                run(self.client.head_bucket, Bucket=self.bucket)
        except ProviderUnavailable as exc:
            return ProbeResult(
                provider=self.name,
                ok=False,
                latency_ms=(time.perf_counter() - started) * 1000,
                error=f"head_bucket on {self.bucket!r} failed: {_describe(exc.__cause__ or exc)}",
            )
        return ProbeResult(
            provider=self.name, ok=True, latency_ms=(time.perf_counter() - started) * 1000
        )
