"""Multipart upload endpoints (S3) under /api/v1/uploads/ (the same operations in Uppy
Companion's shape are in `companion_views`).

Thin views: input serializer -> `backend.uploads.services.multipart` -> output serializer.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from backend.core.throttling import ScopedRateThrottle
from backend.storage import registry
from backend.storage.base import CompletedPart, PartInstructions
from backend.storage.factory import CloudStorageFactory
from backend.uploads import selectors
from backend.uploads.api import schema
from backend.uploads.api.multipart_serializers import (
    MultipartCompleteInputSerializer,
    MultipartCreateInputSerializer,
    MultipartCreateOutputSerializer,
    PartNumbersInputSerializer,
    SignedPartsOutputSerializer,
    UploadedPartsOutputSerializer,
)
from backend.uploads.api.serializers import UploadOutputSerializer
from backend.uploads.api.views import AuthenticatedApi
from backend.uploads.models import MediaUpload
from backend.uploads.services import multipart

NOT_SUPPORTED = schema.MULTIPART_NOT_SUPPORTED
BAD_PART = schema.error(
    "A part number outside 1..part_count, or a part S3 does not hold with that ETag.",
    "invalid_part_number",
    "Part numbers must be between 1 and 3 for this upload; got [4].",
    {"part_count": 3, "part_size": 5242880, "invalid": [4]},
)
GONE = schema.error(
    "The upload expired, was deleted or aborted.",
    "multipart_upload_gone",
    "The provider no longer has this multipart upload (aborted or expired); start a new upload.",
)
COMPLETED = schema.error(
    "The multipart upload is already complete.",
    "multipart_completed",
    "This multipart upload is already complete.",
)
FAILED = schema.error(
    "The upload failed verification earlier; start a new upload.",
    "verification_failed",
    "Upload verification failed: declared image/png but the first bytes are not PNG",
)


def _created(row: MediaUpload) -> dict[str, Any]:
    return {
        "id": row.id,
        "protocol": "multipart",
        "key": row.key,
        "upload_id": row.multipart_upload_id,
        "part_size": row.multipart_part_size,
        "part_count": multipart.part_count(row),
        "expires_at": row.expires_at,
        "capabilities": registry.capabilities_for_clients(
            CloudStorageFactory.for_provider(row.provider)
        ),
    }


def _part(p: PartInstructions) -> dict[str, Any]:
    return {
        "part_number": p.part_number,
        "method": p.method,
        "url": p.url,
        "headers": p.headers,
        "expires_at": p.expires_at,
    }


class ScopedByMethod(AuthenticatedApi):
    """Throttle scope per HTTP method (`throttle_scopes`); methods not named are not throttled."""

    throttle_scopes: dict[str, str] = {}

    def get_throttles(self) -> list[BaseThrottle]:
        scope = self.throttle_scopes.get(self.request.method or "")
        if scope is None:
            return []
        self.throttle_scope = scope
        return [ScopedRateThrottle()]


# --- /api/v1/uploads/... ----------------------------------------------------------------------


class MultipartCreateApi(ScopedByMethod):
    throttle_scopes = {"POST": "upload_create"}

    @extend_schema(
        operation_id="uploads_multipart_create",
        summary="Start an S3 multipart upload (large files)",
        description=(
            "Same validation, quotas and server-chosen key as `POST /api/v1/uploads/`. The "
            "server chooses `part_size` (>= 5 MiB, at most 10 000 parts): cut the file into "
            "`part_count` parts of exactly `part_size` bytes (the last may be smaller), sign "
            "them with the parts endpoint, PUT each one, keep every `ETag` response header, "
            "then complete. S3 only: with Cloudinary active this answers 400 "
            "`multipart_not_supported`."
        ),
        request=MultipartCreateInputSerializer,
        responses={
            201: MultipartCreateOutputSerializer,
            400: NOT_SUPPORTED,
            401: schema.UNAUTHORIZED,
            429: schema.error(
                "Per-user quota or request rate exceeded.",
                "too_many_pending_uploads",
                "You have 20 unconfirmed uploads; at most 20 may be pending at once.",
            ),
            503: schema.PROVIDER_DOWN,
        },
    )
    def post(self, request: Request) -> Response:
        data = MultipartCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = multipart.create_multipart_upload(owner=request.user, **data.validated_data)
        body = MultipartCreateOutputSerializer(_created(row)).data
        return Response(body, status=status.HTTP_201_CREATED)


class MultipartPartsApi(ScopedByMethod):
    throttle_scopes = {"POST": "upload_part", "GET": "upload_part"}

    @extend_schema(
        operation_id="uploads_multipart_parts_sign",
        summary="Presigned PUT URLs for parts of a multipart upload",
        description=(
            "PUT each part's raw bytes to its `url` with its `headers`; keep the `ETag` header "
            "of each answer for complete. URLs expire at `expires_at`: sign again if needed."
        ),
        request=PartNumbersInputSerializer,
        responses={
            200: SignedPartsOutputSerializer,
            400: BAD_PART,
            404: schema.NOT_FOUND,
            409: COMPLETED,
            410: GONE,
            422: FAILED,
            503: schema.PROVIDER_DOWN,
        },
    )
    def post(self, request: Request, upload_id: str) -> Response:
        row = selectors.get_upload_for_owner(request.user, upload_id)
        data = PartNumbersInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        parts = multipart.sign_parts(row, data.validated_data["part_numbers"])
        return Response(SignedPartsOutputSerializer({"parts": [_part(p) for p in parts]}).data)

    @extend_schema(
        operation_id="uploads_multipart_parts_list",
        summary="Parts the provider holds so far (to resume an interrupted upload)",
        responses={
            200: UploadedPartsOutputSerializer,
            404: schema.NOT_FOUND,
            409: COMPLETED,
            410: GONE,
            422: FAILED,
            503: schema.PROVIDER_DOWN,
        },
    )
    def get(self, request: Request, upload_id: str) -> Response:
        row = selectors.get_upload_for_owner(request.user, upload_id)
        parts = multipart.list_parts(row)
        body = {
            "parts": [{"part_number": p.part_number, "etag": p.etag, "size": p.size} for p in parts]
        }
        return Response(UploadedPartsOutputSerializer(body).data)


class MultipartCompleteApi(ScopedByMethod):
    throttle_scopes = {"POST": "upload_confirm"}

    @extend_schema(
        operation_id="uploads_multipart_complete",
        summary="Complete a multipart upload; the server then verifies the object (as confirm)",
        request=MultipartCompleteInputSerializer,
        responses={
            200: UploadOutputSerializer,
            400: schema.error(
                "Parts missing or out of range, or S3 refused them (wrong ETag, part too small).",
                "invalid_part",
                "S3 refused to complete the upload (InvalidPart). S3 does not hold every listed "
                "part with the given ETag. Upload the missing parts again (GET the parts list "
                "for the ETags S3 holds), then complete again.",
                {"provider_code": "InvalidPart", "status": "pending"},
            ),
            404: schema.NOT_FOUND,
            409: schema.error(
                "Not a multipart upload, or not in a state to complete.",
                "not_multipart",
                "This upload is not a multipart upload; upload it as instructed at creation.",
            ),
            410: GONE,
            422: schema.error(
                "The assembled object does not match the declaration; it was deleted.",
                "verification_failed",
                "Upload verification failed: declared image/png but the first bytes are not PNG",
            ),
            503: schema.PROVIDER_DOWN,
        },
    )
    def post(self, request: Request, upload_id: str) -> Response:
        row = selectors.get_upload_for_owner(request.user, upload_id)
        data = MultipartCompleteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        parts = [CompletedPart(p["part_number"], p["etag"]) for p in data.validated_data["parts"]]
        row = multipart.complete_multipart_upload(row, parts)
        return Response(UploadOutputSerializer(row).data)


class MultipartAbortApi(AuthenticatedApi):
    @extend_schema(
        operation_id="uploads_multipart_abort",
        summary="Abort a multipart upload (its parts are freed; the upload becomes deleted)",
        request=None,
        responses={
            204: None,
            404: schema.NOT_FOUND,
            409: COMPLETED,
            503: schema.PROVIDER_DOWN,
        },
    )
    def delete(self, request: Request, upload_id: str) -> Response:
        row = selectors.get_upload_for_owner(request.user, upload_id)
        multipart.abort_multipart_upload(row)
        return Response(status=status.HTTP_204_NO_CONTENT)
