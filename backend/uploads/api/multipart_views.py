"""Multipart upload endpoints (S3): ours under /api/v1/uploads/, and the same operations in the
shape of Uppy Companion's `/s3/multipart` contract under /api/v1/s3/ (see docs/uppy.md).

Thin views: input serializer -> `backend.uploads.multipart` -> output serializer.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle

from backend.storage.base import CompletedPart, PartInstructions
from backend.uploads import multipart, selectors
from backend.uploads.api import schema
from backend.uploads.api.multipart_serializers import (
    MultipartCompleteInputSerializer,
    MultipartCreateInputSerializer,
    MultipartCreateOutputSerializer,
    PartNumbersInputSerializer,
    SignedPartsOutputSerializer,
    UploadedPartsOutputSerializer,
    UppyCompleteInputSerializer,
    UppyCompleteOutputSerializer,
    UppyCreateInputSerializer,
    UppyCreateOutputSerializer,
    UppyKeyQuerySerializer,
    UppyPartSerializer,
    UppySignedPartSerializer,
)
from backend.uploads.api.serializers import UploadOutputSerializer
from backend.uploads.api.views import VALIDATION, AuthenticatedApi
from backend.uploads.models import MediaUpload

NOT_SUPPORTED = schema.error(
    "Invalid input, or the active provider has no multipart uploads (Cloudinary).",
    "multipart_not_supported",
    "The storage provider 'cloudinary' does not support multipart uploads; use POST "
    "/api/v1/uploads/ (single request) instead.",
    {"provider": "cloudinary", "multipart_providers": ["s3"]},
)
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
UPPY = schema.uppy_error
KEY_PARAM = OpenApiParameter(
    "key", str, location=OpenApiParameter.QUERY, required=True, description="The object key."
)


def _created(row: MediaUpload) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.key,
        "upload_id": row.multipart_upload_id,
        "part_size": row.multipart_part_size,
        "part_count": multipart.part_count(row),
        "expires_at": row.expires_at,
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


# --- Uppy Companion shape: /api/v1/s3/multipart ... ---------------------------------------------


class UppyApi(ScopedByMethod):
    """The Companion-shaped endpoints: error bodies also carry a top-level `message`.

    Uppy's Companion client reads `message` from an error body (a 4xx message is shown to the
    user as is); the `error` object of this API's shape stays for other clients."""

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        body = response.data
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            response.data = {"message": str(body["error"].get("message", "")), **body}
        return response


def _uppy_row(request: Request, upload_id: str) -> MediaUpload:
    query = UppyKeyQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return selectors.get_multipart_upload_for_owner(
        request.user, key=query.validated_data["key"], upload_id=upload_id
    )


class UppyCreateApi(UppyApi):
    throttle_scopes = {"POST": "upload_create"}

    @extend_schema(
        operation_id="uppy_s3_multipart_create",
        summary="Uppy (@uppy/aws-s3): createMultipartUpload",
        description=(
            "Companion's `POST /s3/multipart`. Uppy does not send the file size: put it in the "
            "file's meta as `size` (see docs/uppy.md)."
        ),
        request=UppyCreateInputSerializer,
        responses={
            200: UppyCreateOutputSerializer,
            400: UPPY(VALIDATION),
            401: UPPY(schema.UNAUTHORIZED),
            503: UPPY(schema.PROVIDER_DOWN),
        },
    )
    def post(self, request: Request) -> Response:
        data = UppyCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = multipart.create_multipart_upload(
            owner=request.user,
            filename=data.validated_data["filename"],
            content_type=data.validated_data["type"],
            size=data.validated_data["size"],
        )
        body = {"key": row.key, "uploadId": row.multipart_upload_id}
        return Response(UppyCreateOutputSerializer(body).data)


class UppySignPartApi(UppyApi):
    throttle_scopes = {"GET": "upload_part"}

    @extend_schema(
        operation_id="uppy_s3_multipart_sign_part",
        summary="Uppy (@uppy/aws-s3): signPart",
        parameters=[KEY_PARAM],
        responses={
            200: UppySignedPartSerializer,
            400: UPPY(BAD_PART),
            404: UPPY(schema.NOT_FOUND),
            409: UPPY(COMPLETED),
            410: UPPY(GONE),
            422: UPPY(FAILED),
            503: UPPY(schema.PROVIDER_DOWN),
        },
    )
    def get(self, request: Request, upload_id: str, part_number: int) -> Response:
        row = _uppy_row(request, upload_id)
        part = multipart.sign_parts(row, [part_number])[0]
        expires = max(0, int((part.expires_at - timezone.now()).total_seconds()))
        body = {"method": part.method, "url": part.url, "headers": part.headers, "expires": expires}
        return Response(UppySignedPartSerializer(body).data)


class UppyMultipartApi(UppyApi):
    throttle_scopes = {"GET": "upload_part"}

    @extend_schema(
        operation_id="uppy_s3_multipart_list_parts",
        summary="Uppy (@uppy/aws-s3): listParts",
        parameters=[KEY_PARAM],
        responses={
            200: UppyPartSerializer(many=True),
            404: UPPY(schema.NOT_FOUND),
            409: UPPY(COMPLETED),
            410: UPPY(GONE),
            422: UPPY(FAILED),
            503: UPPY(schema.PROVIDER_DOWN),
        },
    )
    def get(self, request: Request, upload_id: str) -> Response:
        row = _uppy_row(request, upload_id)
        parts = [
            {"PartNumber": p.part_number, "Size": p.size, "ETag": p.etag}
            for p in multipart.list_parts(row)
        ]
        return Response(UppyPartSerializer(parts, many=True).data)

    @extend_schema(
        operation_id="uppy_s3_multipart_abort",
        summary="Uppy (@uppy/aws-s3): abortMultipartUpload",
        parameters=[KEY_PARAM],
        request=None,
        responses={
            200: inline_serializer("UppyAbortOutput", fields={}),
            404: UPPY(schema.NOT_FOUND),
            409: UPPY(COMPLETED),
            503: UPPY(schema.PROVIDER_DOWN),
        },
    )
    def delete(self, request: Request, upload_id: str) -> Response:
        row = _uppy_row(request, upload_id)
        multipart.abort_multipart_upload(row)
        return Response({})


class UppyCompleteApi(UppyApi):
    throttle_scopes = {"POST": "upload_confirm"}

    @extend_schema(
        operation_id="uppy_s3_multipart_complete",
        summary="Uppy (@uppy/aws-s3): completeMultipartUpload (then verified like confirm)",
        parameters=[KEY_PARAM],
        request=UppyCompleteInputSerializer,
        responses={
            200: UppyCompleteOutputSerializer,
            400: UPPY(BAD_PART),
            404: UPPY(schema.NOT_FOUND),
            410: UPPY(GONE),
            422: UPPY(
                schema.error(
                    "The assembled object does not match the declaration; it was deleted.",
                    "verification_failed",
                    "Upload verification failed: declared image/png but the first bytes are not "
                    "PNG",
                )
            ),
            503: UPPY(schema.PROVIDER_DOWN),
        },
    )
    def post(self, request: Request, upload_id: str) -> Response:
        row = _uppy_row(request, upload_id)
        data = UppyCompleteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        parts = [CompletedPart(p["PartNumber"], p["ETag"]) for p in data.validated_data["parts"]]
        row = multipart.complete_multipart_upload(row, parts)
        body = {"location": (row.metadata or {}).get("url", ""), "key": row.key, "id": row.id}
        return Response(UppyCompleteOutputSerializer(body).data)
