"""Uppy Companion's S3 contract under /api/v1/s3/, as @uppy/aws-s3 6.x and 5.x call it
(docs/uppy.md, "The contract"), plus the `signRequest` signer of 6.x and its S3-dialect URLs.

Thin views: input serializer -> `backend.uploads.companion` / `multipart` -> output.

Errors: 6.x reads nothing of an error answer but its HTTP status text ("Companion request
failed: <statusText>"), so the reason phrase of every error here is our message; 5.x reads the
body's top-level `message`, so that is there too, beside this API's `error` object.
"""

from __future__ import annotations

import re
import unicodedata
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import status
from rest_framework.authentication import TokenAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from backend.core.config import get_app_config
from backend.core.errors import ApplicationError, NotFound, ServiceUnavailable, ValidationFailed
from backend.core.throttling import ScopedRateThrottle
from backend.storage.base import CompletedPart, UploadInstructions
from backend.uploads import companion, selectors
from backend.uploads.api import s3_xml, schema
from backend.uploads.api.auth import SameOriginSessionAuthentication
from backend.uploads.api.companion_serializers import (
    UppyCompleteInputSerializer,
    UppyCompleteOutputSerializer,
    UppyConfirmInputSerializer,
    UppyConfirmOutputSerializer,
    UppyCreateInputSerializer,
    UppyCreateOutputSerializer,
    UppyKeyQuerySerializer,
    UppyParamsOutputSerializer,
    UppyParamsQuerySerializer,
    UppyPartSerializer,
    UppyPresignInputSerializer,
    UppyPresignOutputSerializer,
    UppySignedPartSerializer,
)
from backend.uploads.api.multipart_views import BAD_PART, COMPLETED, FAILED, GONE, ScopedByMethod
from backend.uploads.api.views import VALIDATION
from backend.uploads.models import MediaUpload
from backend.uploads.services import multipart

UPPY = schema.uppy_error
FORBIDDEN = schema.error(
    "Signed in, but the request does not come from this site's pages (see docs/uppy.md).",
    "permission_denied",
    "This request does not come from this site's own pages ...",
)
COMMON = {
    401: UPPY(schema.UNAUTHORIZED),
    403: UPPY(FORBIDDEN),
    429: UPPY(schema.THROTTLED),
    503: UPPY(schema.PROVIDER_DOWN),
}
NOT_FOUND = {404: UPPY(schema.NOT_FOUND)}
VERIFY_FAILED = schema.error(
    "The assembled object does not match the declaration; it was deleted.",
    "verification_failed",
    "Upload verification failed: declared image/png but the first bytes are not PNG",
)
_REASON_UNSAFE = re.compile(r"[^\x20-\x7e]+")
MAX_REASON = 300


def reason_phrase(message: str, status_code: int) -> str:
    """`message` as an HTTP/1.1 reason phrase (printable ASCII, one line, bounded). HTTP/2 has
    no reason phrase: behind an HTTP/2 proxy, Uppy 6 shows only its generic text."""
    text = unicodedata.normalize("NFKD", message).encode("ascii", "ignore").decode("ascii")
    text = " ".join(_REASON_UNSAFE.sub(" ", text).split())
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 3].rstrip() + "..."
    return text or HTTPStatus(status_code).phrase


def _seconds_until(instant: Any) -> int:
    return max(0, int((instant - timezone.now()).total_seconds()))


def _location(request: Request | HttpRequest, row: MediaUpload) -> str:
    """What Uppy reports as the upload's `uploadURL`: this upload in this API."""
    return request.build_absolute_uri(reverse("upload-detail", args=[row.id]))


class UppyApi(ScopedByMethod):
    """Base of the endpoints Uppy calls: token, or a session proven same-origin (auth.py)."""

    authentication_classes = [TokenAuthentication, SameOriginSessionAuthentication]

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        body = response.data
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = str(body["error"].get("message", ""))
            response.data = {"message": message, **body}
            response.reason_phrase = reason_phrase(message, response.status_code)
        return response


def _uppy_row(request: Request, upload_id: str) -> MediaUpload:
    query = UppyKeyQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return selectors.get_multipart_upload_for_owner(
        request.user, key=query.validated_data["key"], upload_id=upload_id
    )


def _params(instructions: UploadInstructions) -> dict[str, Any]:
    """The generic instructions in the shape of Companion's `/s3/params` answer. 5.x follows
    `method` (a POST form, or a PUT with `headers`); 6.x reads `url` and `fields` and always
    sends the POST form."""
    return {
        "method": instructions.method,
        "url": instructions.url,
        "fields": dict(instructions.fields) if instructions.method == "POST" else {},
        "headers": dict(instructions.headers),
        "expires": _seconds_until(instructions.expires_at),
    }


class UppyParamsApi(UppyApi):
    throttle_scopes = {"GET": "upload_create"}

    @extend_schema(
        operation_id="uppy_s3_params",
        summary="Uppy (@uppy/aws-s3): single-request upload parameters",
        description=(
            "Companion's `GET /s3/params`: creates a pending upload (without a size, Uppy does "
            "not send one: the instructions allow up to the policy maximum) and answers how to "
            "send it in one request. Confirm it afterwards with `POST /api/v1/s3/confirm`."
        ),
        parameters=[
            UppyParamsQuerySerializer,
            OpenApiParameter(
                "metadata[size]",
                int,
                required=False,
                description="The file's size, if the page put it into Uppy's meta.",
            ),
        ],
        responses={200: UppyParamsOutputSerializer, 400: UPPY(VALIDATION), **COMMON},
    )
    def get(self, request: Request) -> Response:
        query = UppyParamsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        _row, instructions = companion.create_single_upload(
            owner=request.user,
            filename=query.validated_data["filename"],
            content_type=query.validated_data["type"],
            size=query.validated_data["size"],
        )
        return Response(UppyParamsOutputSerializer(_params(instructions)).data)


class UppyCreateApi(UppyApi):
    throttle_scopes = {"POST": "upload_create"}

    @extend_schema(
        operation_id="uppy_s3_multipart_create",
        summary="Uppy (@uppy/aws-s3): createMultipartUpload",
        description=(
            "Companion's `POST /s3/multipart`. Without `metadata.size` (Uppy does not send it) "
            "the parts are checked against the policy maximum at complete."
        ),
        request=UppyCreateInputSerializer,
        responses={200: UppyCreateOutputSerializer, 400: UPPY(VALIDATION), **COMMON},
    )
    def post(self, request: Request) -> Response:
        data = UppyCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = companion.create_multipart_upload(
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
        parameters=[
            UppyKeyQuerySerializer,
            OpenApiParameter(
                "part_number",
                int,
                location=OpenApiParameter.PATH,
                description="1 to 10 000.",
            ),
        ],
        responses={
            200: UppySignedPartSerializer,
            400: UPPY(BAD_PART),
            **NOT_FOUND,
            409: UPPY(COMPLETED),
            410: UPPY(GONE),
            422: UPPY(FAILED),
            **COMMON,
        },
    )
    def get(self, request: Request, upload_id: str, part_number: str) -> Response:
        if not part_number.isdigit():
            raise NotFound("No such part: part numbers are whole numbers from 1 to 10 000.")
        row = _uppy_row(request, upload_id)
        part = multipart.sign_parts(row, [int(part_number)])[0]
        body = {
            "method": part.method,
            "url": part.url,
            "headers": part.headers,
            "expires": _seconds_until(part.expires_at),
        }
        return Response(UppySignedPartSerializer(body).data)


class UppyMultipartApi(UppyApi):
    throttle_scopes = {"GET": "upload_part"}

    @extend_schema(
        operation_id="uppy_s3_multipart_list_parts",
        summary="Uppy (@uppy/aws-s3): listParts",
        parameters=[UppyKeyQuerySerializer],
        responses={
            200: UppyPartSerializer(many=True),
            400: UPPY(VALIDATION),
            **NOT_FOUND,
            409: UPPY(COMPLETED),
            410: UPPY(GONE),
            422: UPPY(FAILED),
            **COMMON,
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
        parameters=[UppyKeyQuerySerializer],
        request=None,
        responses={
            200: inline_serializer("UppyAbortOutput", fields={}),
            400: UPPY(VALIDATION),
            **NOT_FOUND,
            409: UPPY(COMPLETED),
            **COMMON,
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
        parameters=[UppyKeyQuerySerializer],
        request=UppyCompleteInputSerializer,
        responses={
            200: UppyCompleteOutputSerializer,
            400: UPPY(BAD_PART),
            **NOT_FOUND,
            410: UPPY(GONE),
            422: UPPY(VERIFY_FAILED),
            **COMMON,
        },
    )
    def post(self, request: Request, upload_id: str) -> Response:
        row = _uppy_row(request, upload_id)
        data = UppyCompleteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        parts = [CompletedPart(p["PartNumber"], p["ETag"]) for p in data.validated_data["parts"]]
        row = multipart.complete_multipart_upload(row, parts)
        body = {"location": _location(request, row), "key": row.key, "id": row.id}
        return Response(UppyCompleteOutputSerializer(body).data)


class UppyConfirmApi(UppyApi):
    throttle_scopes = {"POST": "upload_confirm"}

    @extend_schema(
        operation_id="uppy_s3_confirm",
        summary="Confirm an Uppy upload by its key (the page calls it on `upload-success`)",
        description=(
            "What Uppy 6 keeps of an upload is its `key`. A single-request upload is verified "
            "and finalised here, like `POST /api/v1/uploads/{id}/confirm/`; a multipart upload "
            "was finalised at complete and is returned as is."
        ),
        request=UppyConfirmInputSerializer,
        responses={
            200: UppyConfirmOutputSerializer,
            400: UPPY(VALIDATION),
            **NOT_FOUND,
            409: UPPY(
                schema.error(
                    "The file has not arrived at the provider yet.",
                    "not_uploaded_yet",
                    "The file has not arrived at the provider yet. Upload it, then confirm again.",
                )
            ),
            410: UPPY(GONE),
            422: UPPY(VERIFY_FAILED),
            **COMMON,
        },
    )
    def post(self, request: Request) -> Response:
        data = UppyConfirmInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        row = companion.confirm_by_key(owner=request.user, key=data.validated_data["key"])
        return Response(UppyConfirmOutputSerializer(row).data)


# --- signRequest (6.x) ---------------------------------------------------------------------------

_CAPABILITY_SALT = "backend.uploads.uppy-s3-request"
_OPERATIONS = {"create": "POST", "list": "GET", "complete": "POST", "abort": "DELETE"}


def _capability_url(request: Request, row: MediaUpload, operation: str) -> str:
    """A URL of this API that answers one S3 request on one upload, in S3's XML: the S3
    request `signRequest` asked for, run by the server (which keeps the upload's state and
    verifies at complete). Like an S3 presigned URL it carries its own authority, signed and
    short-lived; it grants only that operation on that upload."""
    token = signing.dumps({"u": row.id.hex, "op": operation}, salt=_CAPABILITY_SALT)
    return request.build_absolute_uri(reverse("uppy-s3-request", args=[token]))


def _presign_expiry() -> int:
    return min(get_app_config().presign_expiry_seconds, settings.UPLOAD_MAX_PRESIGN_EXPIRY)


class UppyPresignApi(UppyApi):
    """Only POST; the scope depends on what is asked (see get_throttles)."""

    def get_throttles(self) -> list[BaseThrottle]:
        data = self.request.data if isinstance(self.request.data, dict) else {}
        self.throttle_scope = "upload_part" if data.get("uploadId") else "upload_create"
        return [ScopedRateThrottle()]

    @extend_schema(
        operation_id="uppy_s3_presign",
        summary="Uppy 6 (`signRequest`): sign one S3 request of an upload",
        description=(
            "Takes the request @uppy/aws-s3 6.x passes to `signRequest` (plus `filename`, "
            "`type` and `size` for a new upload) and answers its `PresignedResponse`. A new "
            "upload (PUT or POST without `uploadId`) is validated and created here; parts are "
            "presigned S3 URLs; create, list, complete and abort of a multipart upload point "
            "at short-lived URLs of this API that answer in S3's XML."
        ),
        request=UppyPresignInputSerializer,
        responses={
            200: UppyPresignOutputSerializer,
            400: UPPY(VALIDATION),
            **NOT_FOUND,
            409: UPPY(COMPLETED),
            410: UPPY(GONE),
            422: UPPY(FAILED),
            **COMMON,
        },
    )
    def post(self, request: Request) -> Response:
        data = UppyPresignInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        method, upload_id = d["method"], d.get("uploadId")
        if not upload_id:
            return Response(UppyPresignOutputSerializer(self._new_upload(request, d)).data)
        row = selectors.get_multipart_upload_for_owner(
            request.user, key=d["key"], upload_id=upload_id
        )
        if method == "PUT":
            if "partNumber" not in d:
                raise ValidationFailed(
                    "Signing a part needs its partNumber.", code="invalid_part_number"
                )
            part = multipart.sign_parts(row, [d["partNumber"]])[0]
            body: dict[str, Any] = {"url": part.url, "headers": part.headers}
        else:
            multipart.require_open(row)
            operation = {"GET": "list", "POST": "complete", "DELETE": "abort"}[method]
            body = {"url": _capability_url(request, row, operation)}
        return Response(UppyPresignOutputSerializer(body).data)

    def _new_upload(self, request: Request, d: dict[str, Any]) -> dict[str, Any]:
        content_type = d.get("type") or d.get("contentType")
        if not content_type:
            raise ValidationFailed(
                "A new upload needs the file's type: send `type` (file.type) with the request.",
                code="invalid_content_type",
            )
        args = {
            "owner": request.user,
            "filename": d.get("filename") or d["key"],
            "content_type": content_type,
            "size": d.get("size"),
        }
        if d["method"] == "POST":
            row = companion.create_multipart_upload(**args)
            return {"url": _capability_url(request, row, "create"), "key": row.key}
        if d["method"] != "PUT":
            raise ValidationFailed(
                "Without uploadId only PUT (PutObject) and POST (CreateMultipartUpload) can "
                "be signed.",
                code="unsupported_request",
                details={"method": d["method"]},
            )
        row, instructions = companion.create_single_upload(**args)
        if instructions.method == "POST":
            return {"url": instructions.url, "fields": instructions.fields, "key": row.key}
        return {"url": instructions.url, "headers": instructions.headers, "key": row.key}


@method_decorator(csrf_exempt, name="dispatch")
class UppyS3RequestView(View):
    """The S3-dialect URLs `UppyPresignApi` hands out (not part of the JSON API, hence a plain
    Django view like the webhooks). Authority comes from the signed token in the URL."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return super().dispatch(request, *args, **kwargs)
        except ApplicationError as exc:
            response = s3_xml.error_response(
                status=exc.status_code, code=exc.code, message=exc.message
            )
            if isinstance(exc, ServiceUnavailable):
                response["Retry-After"] = str(exc.retry_after)
            return response

    def _row(self, request: HttpRequest, token: str) -> tuple[MediaUpload, str]:
        try:
            claim = signing.loads(token, salt=_CAPABILITY_SALT, max_age=_presign_expiry())
        except signing.BadSignature:
            raise NotFound("This URL is unknown or expired; sign the request again.") from None
        operation = str(claim.get("op"))
        if _OPERATIONS.get(operation) != request.method:
            raise NotFound(f"This URL answers {_OPERATIONS.get(operation)} only.")
        row = MediaUpload.objects.filter(pk=claim.get("u")).first()
        if row is None:
            raise NotFound("No such upload.")
        return row, operation

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        row, _ = self._row(request, token)
        return s3_xml.list_parts_result(
            key=row.key, upload_id=row.multipart_upload_id, parts=multipart.list_parts(row)
        )

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        row, operation = self._row(request, token)
        if operation == "create":
            multipart.require_open(row)
            return s3_xml.initiate_result(bucket="", key=row.key, upload_id=row.multipart_upload_id)
        row = multipart.complete_multipart_upload(row, s3_xml.parse_complete(request.body))
        return s3_xml.complete_result(
            location=_location(request, row),
            bucket="",
            key=row.key,
            etag=str((row.metadata or {}).get("etag", "")),
        )

    def delete(self, request: HttpRequest, token: str) -> HttpResponse:
        row, _ = self._row(request, token)
        multipart.abort_multipart_upload(row)
        return s3_xml.xml_response(None, status=status.HTTP_204_NO_CONTENT)

    def http_method_not_allowed(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        return s3_xml.error_response(
            status=405, code="MethodNotAllowed", message="Not an operation of this URL."
        )
