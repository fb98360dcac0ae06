"""`InMemoryStorageService`: a faithful in-process fake of the provider contract.

For the contract suite and fast unit tests. It enforces what a real provider's signed upload
would enforce (exact key, content type, size range, expiry) in `accept_upload`, answers "missing"
as values like the real ones, and can be switched `available = False` to simulate an outage
(every call then raises ProviderUnavailable, `probe` reports the failure).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from backend.core.errors import ProviderUnavailable
from backend.storage import registry
from backend.storage.base import (
    CloudStorageService,
    CompletedPart,
    DeleteResult,
    KeepUploads,
    ListedObject,
    MultipartSession,
    ObjectPage,
    ObjectRef,
    PartInstructions,
    ProbeResult,
    StoredObject,
    UploadedPart,
    UploadInstructions,
)
from backend.storage.s3 import S3Service, multipart_rejected

#: S3's minimum size of every part but the last (the fake enforces it at complete, like S3).
MIN_PART_SIZE = 5 * 1024 * 1024


@dataclass
class MemoryObject:
    data: bytes
    content_type: str
    version: str
    last_modified: datetime


class UploadRefused(Exception):
    pass


@dataclass
class MemoryMultipart:
    key: str
    content_type: str
    initiated: datetime
    parts: dict[int, tuple[bytes, str]]  # part number -> (data, quoted ETag)


class InMemoryStorageService(CloudStorageService):
    name = "memory"
    display_name = "memory"
    # Everything the contract offers, multipart included (S3's bounds).
    capabilities = S3Service.capabilities
    delete_batch_size = 100

    def __init__(self, name: str = "memory", *, delete_batch_size: int = 100) -> None:
        # Instances may pose as a registered provider (its name and capabilities) so the
        # factory can serve them for a row.
        self.__dict__["name"] = name
        self.__dict__["delete_batch_size"] = delete_batch_size
        posed = registry.get(name)
        if posed is not None:
            self.__dict__["capabilities"] = posed.capabilities
            self.__dict__["display_name"] = posed.service.display_name
        self.available = True
        self._lock = threading.Lock()
        self._objects: dict[str, MemoryObject] = {}
        self._grants: dict[str, dict[str, Any]] = {}
        self._version = 0
        self._multiparts: dict[str, MemoryMultipart] = {}
        self._part_grants: dict[str, tuple[str, int, datetime, int | None]] = {}
        #: Lower it in tests that want small parts (S3's is 5 MiB).
        self.min_part_size = MIN_PART_SIZE

    # --- helpers for tests ------------------------------------------------------------------
    def _guard(self, operation: str) -> None:
        if not self.available:
            raise ProviderUnavailable(
                f"{self.name} {operation} failed (simulated outage).",
                details={"provider": self.name, "operation": operation},
            )

    def put(self, ref: ObjectRef, data: bytes, content_type: str | None = None) -> StoredObject:
        """Store an object as if a client had uploaded it (no policy check)."""
        with self._lock:
            self._version += 1
            self._objects[ref.key] = MemoryObject(
                data=bytes(data),
                content_type=content_type or ref.content_type,
                version=str(self._version),
                last_modified=datetime.now(UTC),
            )
        return self.inspect(ref)

    def accept_upload(
        self, instructions: UploadInstructions, data: bytes, content_type: str | None = None
    ) -> StoredObject:
        """Upload through issued instructions, refusing what the signed policy would refuse."""
        key = instructions.fields.get("key", "")
        with self._lock:
            grant = self._grants.get(key)
        if grant is None or grant["token"] != instructions.fields.get("token"):
            raise UploadRefused("unknown or tampered upload instructions")
        if datetime.now(UTC) > grant["expires_at"]:
            raise UploadRefused("upload instructions expired")
        sent_type = content_type or instructions.fields.get("Content-Type", "")
        if sent_type != grant["content_type"]:
            raise UploadRefused(f"content type {sent_type!r} is not the signed one")
        if not 1 <= len(data) <= grant["max_size"]:
            raise UploadRefused(f"size {len(data)} outside [1, {grant['max_size']}]")
        return self.put(ObjectRef(key=key, content_type=sent_type), data, sent_type)

    def accept_part(self, instructions: PartInstructions, data: bytes) -> str:
        """PUT one part through issued instructions; returns the ETag header S3 would send."""
        token = instructions.url.rsplit("token=", 1)[-1]
        with self._lock:
            grant = self._part_grants.get(token)
        if grant is None:
            raise UploadRefused("unknown or tampered part instructions")
        upload_id, part_number, expires_at, content_length = grant
        if datetime.now(UTC) > expires_at:
            raise UploadRefused("part instructions expired")
        if content_length is not None and len(data) != content_length:
            # S3 refuses a body whose length is not the signed Content-Length.
            raise UploadRefused(f"part of {len(data)} bytes; the URL is for {content_length}")
        etag = f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'
        with self._lock:
            upload = self._multiparts.get(upload_id)
            if upload is None:
                raise UploadRefused("NoSuchUpload")
            upload.parts[part_number] = (bytes(data), etag)
        return etag

    def multipart_upload_ids(self) -> list[str]:
        """Multipart uploads in progress (ListMultipartUploads)."""
        with self._lock:
            return sorted(self._multiparts)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._objects)

    # --- contract ---------------------------------------------------------------------------
    def presign_upload(
        self,
        ref: ObjectRef,
        *,
        size: int,
        max_size: int,
        expires_in: int,
        notification_url: str | None = None,
    ) -> UploadInstructions:
        self._guard("presign_upload")
        expires_at = datetime.now(UTC) + timedelta(seconds=max(1, int(expires_in)))
        token = secrets.token_hex(8)
        with self._lock:
            self._grants[ref.key] = {
                "token": token,
                "content_type": ref.content_type,
                "max_size": max(1, min(int(size), int(max_size))),
                "expires_at": expires_at,
            }
        return UploadInstructions(
            method="POST",
            url=f"memory://{self.name}/upload",
            fields={"key": ref.key, "Content-Type": ref.content_type, "token": token},
            headers={},
            expires_at=expires_at,
        )

    def verify_confirmation(self, ref: ObjectRef, payload: Mapping[str, Any]) -> ObjectRef:
        self._guard("verify_confirmation")
        with self._lock:
            stored = self._objects.get(ref.key)
        if stored is None:
            return ref
        return ObjectRef(key=ref.key, content_type=ref.content_type, version=stored.version)

    def inspect(self, ref: ObjectRef) -> StoredObject:
        self._guard("inspect")
        with self._lock:
            stored = self._objects.get(ref.key)
        if stored is None:
            return StoredObject(key=ref.key, exists=False)
        return StoredObject(
            key=ref.key,
            exists=True,
            size=len(stored.data),
            content_type=stored.content_type,
            etag=hashlib.md5(stored.data, usedforsecurity=False).hexdigest(),
            version=stored.version,
            url=f"memory://{self.name}/{ref.key}",
            last_modified=stored.last_modified,
        )

    def read_first_bytes(self, ref: ObjectRef, length: int) -> tuple[StoredObject, bytes | None]:
        # The facts come from `inspect`, so a test can stand in for the provider's answer by
        # replacing that one method.
        stored = self.inspect(ref)
        with self._lock:
            held = self._objects.get(ref.key)
        if not stored.exists or held is None:
            return StoredObject(key=ref.key, exists=False), None
        return stored, held.data[:length]

    def delete_many(self, refs: Sequence[ObjectRef]) -> DeleteResult:
        keys = list(dict.fromkeys(ref.key for ref in refs))
        if len(keys) > self.delete_batch_size:
            raise ValueError(f"at most {self.delete_batch_size} keys per call, got {len(keys)}")
        self._guard("delete_many")
        with self._lock:
            for key in keys:
                self._objects.pop(key, None)
        return DeleteResult(deleted=keys)

    def list_objects(
        self, prefix: str, *, page_token: str | None = None, page_size: int = 1000
    ) -> ObjectPage:
        self._guard("list_objects")
        with self._lock:
            keys = sorted(k for k in self._objects if k.startswith(prefix))
            if page_token:
                keys = [k for k in keys if k > page_token]
            chosen = keys[: max(1, page_size)]
            objects = [
                ListedObject(
                    ref=ObjectRef(key=k, content_type=self._objects[k].content_type),
                    size=len(self._objects[k].data),
                    last_modified=self._objects[k].last_modified,
                )
                for k in chosen
            ]
        more = len(keys) > len(chosen)
        return ObjectPage(objects=objects, next_token=chosen[-1] if more else None)

    def download_url(self, ref: ObjectRef, *, expires_in: int = 300) -> str:
        self._guard("download_url")
        return f"memory://{self.name}/{ref.key}?expires_in={int(expires_in)}"

    # --- multipart ---------------------------------------------------------------------------
    def create_multipart_upload(self, ref: ObjectRef) -> MultipartSession:
        self._guard("create_multipart_upload")
        upload_id = secrets.token_urlsafe(24)
        with self._lock:
            self._multiparts[upload_id] = MemoryMultipart(
                key=ref.key, content_type=ref.content_type, initiated=datetime.now(UTC), parts={}
            )
        return MultipartSession(key=ref.key, upload_id=upload_id)

    def _upload(self, ref: ObjectRef, upload_id: str) -> MemoryMultipart:
        with self._lock:
            upload = self._multiparts.get(upload_id)
        if upload is None or upload.key != ref.key:
            raise multipart_rejected("NoSuchUpload", "NoSuchUpload: the upload does not exist")
        return upload

    def presign_upload_part(
        self,
        ref: ObjectRef,
        upload_id: str,
        part_number: int,
        *,
        expires_in: int,
        content_length: int | None,
    ) -> PartInstructions:
        # Like S3, signing needs no round trip (so it works during an outage too): an unknown
        # upload id fails at PUT time.
        expires_at = datetime.now(UTC) + timedelta(seconds=max(1, int(expires_in)))
        token = secrets.token_hex(8)
        with self._lock:
            self._part_grants[token] = (
                upload_id,
                int(part_number),
                expires_at,
                None if content_length is None else int(content_length),
            )
        return PartInstructions(
            part_number=int(part_number),
            method="PUT",
            url=f"memory://{self.name}/{ref.key}?partNumber={part_number}&token={token}",
            headers={},
            expires_at=expires_at,
        )

    def list_parts(self, ref: ObjectRef, upload_id: str) -> list[UploadedPart]:
        self._guard("list_parts")
        upload = self._upload(ref, upload_id)
        with self._lock:
            items = sorted(upload.parts.items())
        return [UploadedPart(part_number=n, etag=etag, size=len(data)) for n, (data, etag) in items]

    def complete_multipart_upload(
        self, ref: ObjectRef, upload_id: str, parts: Sequence[CompletedPart]
    ) -> None:
        self._guard("complete_multipart_upload")
        upload = self._upload(ref, upload_id)
        numbers = [p.part_number for p in parts]
        if not parts or numbers != sorted(set(numbers)):
            raise multipart_rejected("InvalidPartOrder", "InvalidPartOrder: not ascending")
        chunks: list[bytes] = []
        for index, part in enumerate(parts):
            held = upload.parts.get(part.part_number)
            if held is None or held[1].strip('"') != part.etag.strip('"'):
                raise multipart_rejected("InvalidPart", f"InvalidPart: part {part.part_number}")
            if index < len(parts) - 1 and len(held[0]) < self.min_part_size:
                raise multipart_rejected("EntityTooSmall", f"EntityTooSmall: {part.part_number}")
            chunks.append(held[0])
        with self._lock:
            self._multiparts.pop(upload_id, None)
        self.put(ref, b"".join(chunks), upload.content_type)

    def abort_multipart_upload(self, ref: ObjectRef, upload_id: str) -> None:
        self._guard("abort_multipart_upload")
        with self._lock:
            self._multiparts.pop(upload_id, None)

    def abort_stale_multipart_uploads(
        self, prefix: str, older_than: datetime, *, keep: KeepUploads | None = None
    ) -> int:
        self._guard("abort_stale_multipart_uploads")
        with self._lock:
            stale = [
                MultipartSession(key=upload.key, upload_id=upload_id)
                for upload_id, upload in sorted(self._multiparts.items())
                if upload.key.startswith(prefix) and upload.initiated < older_than
            ]
        # One listing page, like S3's ListMultipartUploads with up to 1000 uploads.
        kept = set(keep(stale)) if keep is not None and stale else set()
        aborted = 0
        with self._lock:
            for session in stale:
                if (session.key, session.upload_id) in kept:
                    continue
                if self._multiparts.pop(session.upload_id, None) is not None:
                    aborted += 1
        return aborted

    def probe(self) -> ProbeResult:
        if not self.available:
            return ProbeResult(self.name, ok=False, latency_ms=0.0, error="simulated outage")
        return ProbeResult(self.name, ok=True, latency_ms=0.0)
