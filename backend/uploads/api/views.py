"""REST API v1: thin views. Each validates input, calls one service, renders the output."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from backend.core.config import get_app_config
from backend.core.errors import StorageUnavailable, ValidationFailed
from backend.core.throttling import (
    DeferredThrottle,
    ScopedRateThrottle,
    SimpleRateThrottle,
    defer,
)
from backend.storage import registry
from backend.storage.base import CloudStorageService
from backend.storage.factory import CloudStorageFactory
from backend.uploads import quotas, selectors, services
from backend.uploads.api import schema
from backend.uploads.api.serializers import (
    ConfigOutputSerializer,
    TokenInputSerializer,
    TokenOutputSerializer,
    UploadCreateInputSerializer,
    UploadCreateOutputSerializer,
    UploadListQuerySerializer,
    UploadOutputSerializer,
    UploadPageSerializer,
    render_create_answer,
)

VALIDATION = schema.error(
    "Invalid input: unknown fields, bad size, type not allowed, bad checksum.",
    "file_too_large",
    "The file is 100 MB; the largest accepted upload is 25 MB.",
    {"size": 104857600, "max_upload_size": 26214400},
)


class AuthenticatedApi(APIView):
    # Token first: an anonymous request then gets 401 with `WWW-Authenticate: Token` (what a
    # mobile client can act on) instead of the 403 DRF answers when session auth comes first.
    authentication_classes = [TokenAuthentication, SessionAuthentication]


class UploadListCreateApi(AuthenticatedApi):
    throttle_scope = "upload_create"

    deferred_throttle: DeferredThrottle | None = None

    def get_throttles(self) -> list[BaseThrottle]:
        # Only creating costs provider signatures and quota; reading the list is not throttled.
        return [ScopedRateThrottle()] if self.request.method == "POST" else []

    def check_throttles(self, request: Request) -> None:
        # With the quotas in Redis, a create's rate check runs in the quota reservation's
        # script (one round trip for both), or alone before any other answer (`post`).
        if request.method == "POST" and quotas.in_redis():
            self.deferred_throttle = defer(self.get_throttles(), request, self)
            if self.deferred_throttle is not None:
                return
        super().check_throttles(request)

    @extend_schema(
        operation_id="uploads_list",
        summary="List my uploads",
        parameters=[UploadListQuerySerializer],
        responses={
            200: UploadPageSerializer,
            400: VALIDATION,
            401: schema.UNAUTHORIZED,
            404: schema.error("No such page.", "not_found", "Invalid page."),
        },
    )
    def get(self, request: Request) -> Response:
        query = UploadListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = selectors.list_uploads_for_owner(request.user, query.validated_data.get("status"))
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(UploadOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="uploads_create",
        summary="Ask for upload instructions (step 1)",
        description=(
            "Validates the declared file and returns where and how to upload it. "
            "`upload.protocol` `single`: send a multipart POST to `upload.url` with every entry "
            "of `upload.fields` (in order) and the file last, in a part named `file`. `chunked` "
            "(a file above `capabilities.max_single_upload`): the same POST once per chunk of "
            "`upload.chunked.chunk_size` bytes, in order, with `upload.headers` and a "
            "`Content-Range` header, the last chunk after every other was answered; its answer "
            "is the confirm body. Then call the confirm endpoint."
        ),
        request=UploadCreateInputSerializer,
        responses={
            201: UploadCreateOutputSerializer,
            400: VALIDATION,
            401: schema.UNAUTHORIZED,
            429: schema.error(
                "Per-user quota or request rate exceeded.",
                "too_many_pending_uploads",
                "You have 20 unconfirmed uploads; at most 20 may be pending at once.",
                {"pending": 20, "max_pending_uploads": 20},
            ),
            503: schema.PROVIDER_DOWN,
        },
        examples=[
            schema.CREATE_REQUEST_EXAMPLE,
            schema.CREATE_S3_RESPONSE_EXAMPLE,
            schema.CREATE_CLOUDINARY_RESPONSE_EXAMPLE,
            schema.CREATE_CLOUDINARY_CHUNKED_RESPONSE_EXAMPLE,
        ],
    )
    def post(self, request: Request) -> Response:
        throttle = self.deferred_throttle
        try:
            data = UploadCreateInputSerializer.validated(request.data)
            row, instructions = services.create_upload(
                owner=request.user, **data, throttle=throttle
            )
        except Exception:
            if throttle is not None:
                throttle.run_alone()  # over the rate: 429 first, as DRF's check would answer
            raise
        service = CloudStorageFactory.for_provider(row.provider)
        body = render_create_answer(
            row, instructions.as_dict(), registry.capabilities_for_clients(service)
        )
        return Response(body, status=status.HTTP_201_CREATED)


class UploadDetailApi(AuthenticatedApi):
    @extend_schema(
        operation_id="uploads_retrieve",
        summary="One of my uploads (with a short-lived download URL once uploaded)",
        responses={200: UploadOutputSerializer, 404: schema.NOT_FOUND},
        examples=[schema.UPLOAD_RESPONSE_EXAMPLE],
    )
    def get(self, request: Request, upload_id: str) -> Response:
        row = selectors.get_upload_for_owner(request.user, upload_id)
        return Response(UploadOutputSerializer(row).data)

    @extend_schema(
        operation_id="uploads_destroy",
        summary="Delete an upload (asynchronous; answers 202 with status `deleting`)",
        request=None,
        responses={202: UploadOutputSerializer, 404: schema.NOT_FOUND},
    )
    def delete(self, request: Request, upload_id: str) -> Response:
        row = services.request_delete(owner=request.user, upload_id=upload_id)
        return Response(UploadOutputSerializer(row).data, status=status.HTTP_202_ACCEPTED)


class UploadConfirmApi(AuthenticatedApi):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "upload_confirm"

    @extend_schema(
        operation_id="uploads_confirm",
        summary="Confirm an upload (step 3): the server verifies the stored object",
        description=(
            "S3: send `{}`. Cloudinary: send the JSON object Cloudinary returned from the "
            "upload, unchanged (its signature is checked). Repeating a confirm returns the same "
            "result."
        ),
        request=OpenApiTypes.OBJECT,
        responses={
            200: UploadOutputSerializer,
            400: schema.error(
                "The body is not a JSON object.", "invalid_payload", "Send a JSON object."
            ),
            404: schema.NOT_FOUND,
            409: schema.error(
                "The file has not arrived at the provider yet; upload it, then confirm again.",
                "not_uploaded_yet",
                "The file has not arrived at the provider yet. Upload it, then confirm again.",
                {"status": "pending"},
            ),
            410: schema.error(
                "The upload expired or was deleted.",
                "expired",
                "The upload instructions expired before this confirm; request a new upload.",
            ),
            422: schema.error(
                "The stored object does not match the declaration; it was deleted.",
                "verification_failed",
                "Upload verification failed: declared image/png but the first bytes are not PNG",
                {"reasons": ["declared image/png but the first bytes are not PNG"]},
            ),
            503: schema.PROVIDER_DOWN,
        },
        examples=[
            schema.CONFIRM_S3_REQUEST_EXAMPLE,
            schema.CONFIRM_CLOUDINARY_REQUEST_EXAMPLE,
            schema.UPLOAD_RESPONSE_EXAMPLE,
        ],
    )
    def post(self, request: Request, upload_id: str) -> Response:
        payload: Any = request.data
        if not isinstance(payload, dict):
            raise ValidationFailed(
                "The confirm body must be a JSON object ({} for S3; Cloudinary's upload "
                "response for Cloudinary).",
                code="invalid_payload",
            )
        row = services.confirm_upload(owner=request.user, upload_id=upload_id, payload=payload)
        return Response(UploadOutputSerializer(row).data)


class ConfigApi(AuthenticatedApi):
    @extend_schema(
        operation_id="config_retrieve",
        summary="Upload policy: active provider and its capabilities, size limit, allowed types",
        responses={200: ConfigOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        config = get_app_config()
        try:
            service: CloudStorageService | None = CloudStorageFactory.active()
        except StorageUnavailable:
            service = None
        body = {
            "provider": service.name if service else None,
            "capabilities": registry.capabilities_for_clients(service) if service else None,
            "max_upload_size": config.max_upload_size,
            "allowed_content_types": list(config.allowed_content_types),
            # What is applied: the admin's setting, capped by UPLOAD_MAX_PRESIGN_EXPIRY.
            "presign_expiry_seconds": min(
                config.presign_expiry_seconds, settings.UPLOAD_MAX_PRESIGN_EXPIRY
            ),
        }
        return Response(ConfigOutputSerializer(body).data)


class TokenObtainThrottle(SimpleRateThrottle):
    """Per-IP limit on password attempts. Rate from settings (scope "auth_token"); a settings
    module without that scope (the test settings) disables it."""

    scope = "auth_token"

    def get_rate(self) -> str | None:
        return self.THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class TokenObtainApi(ObtainAuthToken):
    """Username + password -> a DRF token for mobile apps (`Authorization: Token <key>`)."""

    authentication_classes = ()
    throttle_classes = [TokenObtainThrottle]

    @extend_schema(
        operation_id="auth_token_create",
        summary="Get an API token (mobile apps)",
        request=TokenInputSerializer,
        responses={
            200: TokenOutputSerializer,
            400: schema.error(
                "Wrong username or password.",
                "validation_failed",
                "non_field_errors: Unable to log in with provided credentials.",
            ),
        },
        auth=[],
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)
