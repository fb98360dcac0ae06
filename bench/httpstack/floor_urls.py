"""The shipped URLs plus the floor endpoints, bench only (bench/httpstack/settings.py); never part
of backend.urls.

- `/bench/floor/`: DRF token auth + one INSERT + JSON, no signing (the issue's floor).
- `/bench/floor-redis/`: the same floor plus one Redis round trip, a no-op script sent on the
  throttle's own client (`backend.core.throttling.redis_scripts`) before the INSERT and read
  after it, as presign overlaps its throttle and quota script with signing. It prices the one
  network round trip presign makes beyond the floor (its throttle cannot live elsewhere: the
  window is shared by every process), apart from everything else presign does.
- `/bench/floor-log/`: the same floor plus presign's audit line (its logger, message and the
  shipped handler and formatter): what that one line costs by itself."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.urls import path
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from backend.core.throttling import Script, redis_scripts
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


# Touches no key: the round trip alone (Redis still parses, looks the script up and runs Lua).
NO_OP = Script("return 1")


class FloorRedisApi(FloorApi):
    def post(self, request: Request) -> Response:
        sent = redis_scripts().send(NO_OP, [], [])
        answer = super().post(request)
        sent.result()
        return answer


# presign's own logger (backend/uploads/services/create.py), so its level and handler apply.
audit = logging.getLogger("backend.uploads.services.create")


class FloorLogApi(FloorApi):
    def post(self, request: Request) -> Response:
        answer = super().post(request)
        audit.info(
            "upload %s created at %s (%s, %s bytes)",
            answer.data["id"],
            "s3",
            answer.data["key"],
            request.data.get("size"),
        )
        return answer


urlpatterns = [
    path("bench/floor/", FloorApi.as_view()),
    path("bench/floor-redis/", FloorRedisApi.as_view()),
    path("bench/floor-log/", FloorLogApi.as_view()),
    *shipped,
]
