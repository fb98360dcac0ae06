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
from backend.storage.base import (
    CloudStorageService,
    DeleteResult,
    ListedObject,
    ObjectPage,
    ObjectRef,
    ProbeResult,
    StoredObject,
    UploadInstructions,
)


@dataclass
class MemoryObject:
    data: bytes
    content_type: str
    version: str
    last_modified: datetime


class UploadRefused(Exception):
    pass


class InMemoryStorageService(CloudStorageService):
    name = "memory"
    delete_batch_size = 100

    def __init__(self, name: str = "memory", *, delete_batch_size: int = 100) -> None:
        # Instances may pose as "s3"/"cloudinary" so the factory can serve them for a row.
        self.__dict__["name"] = name
        self.__dict__["delete_batch_size"] = delete_batch_size
        self.available = True
        self._lock = threading.Lock()
        self._objects: dict[str, MemoryObject] = {}
        self._grants: dict[str, dict[str, Any]] = {}
        self._version = 0

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

    def read_head(self, ref: ObjectRef, length: int = 512) -> bytes | None:
        self._guard("read_head")
        with self._lock:
            stored = self._objects.get(ref.key)
        return None if stored is None else stored.data[: max(0, length)]

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

    def probe(self) -> ProbeResult:
        if not self.available:
            return ProbeResult(self.name, ok=False, latency_ms=0.0, error="simulated outage")
        return ProbeResult(self.name, ok=True, latency_ms=0.0)
