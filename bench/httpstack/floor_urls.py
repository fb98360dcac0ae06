"""The shipped URLs plus the floor endpoint: DRF token auth + one INSERT + JSON, no signing.

Bench only (bench/httpstack/settings.py); never part of backend.urls."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.urls import path
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.uploads.models import MediaUpload, UploadStatus
from backend.urls import urlpatterns as shipped


class FloorApi(APIView):
    authentication_classes = [TokenAuthentication]
    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        upload_id = uuid.uuid4()
        row = MediaUpload.objects.create(
            id=upload_id,
            owner=request.user,
            provider="s3",
            key=f"bench-floor/{upload_id}",
            original_filename=str(request.data.get("filename", "")),
            content_type=str(request.data.get("content_type", "")),
            declared_size=request.data.get("size"),
            status=UploadStatus.UPLOADED,
            expires_at=timezone.now() + timedelta(minutes=10),
        )
        return Response({"id": str(row.id), "key": row.key}, status=201)


urlpatterns = [path("bench/floor/", FloorApi.as_view()), *shipped]
