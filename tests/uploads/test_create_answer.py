"""The create answer is built directly (render_create_answer) for speed: it must stay exactly
what the documented serializer (UploadCreateOutputSerializer, the OpenAPI schema) renders."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from rest_framework.renderers import JSONRenderer

from backend.storage import registry
from backend.storage.base import ChunkedUpload, UploadInstructions
from backend.storage.cloudinary import CloudinaryService
from backend.storage.s3 import S3Service
from backend.uploads.api.serializers import UploadCreateOutputSerializer, render_create_answer
from backend.uploads.models import MediaUpload, UploadStatus


def _row(provider: str, size: int | None) -> MediaUpload:
    return MediaUpload(
        id=uuid.uuid4(),
        status=UploadStatus.PENDING,
        provider=provider,
        key=f"uploads/7/{uuid.uuid4().hex}/Zürich photo.png",
        original_filename="Zürich photo.png",
        content_type="image/png",
        declared_size=size,
        expires_at=datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=UTC),
    )


INSTRUCTIONS = {
    "single POST": UploadInstructions(
        method="POST",
        url="https://bucket.s3.eu-west-1.amazonaws.com/",
        fields={"key": "uploads/7/x/p.png", "policy": "eyJ…", "x-amz-signature": "ab12"},
        headers={},
        expires_at=datetime(2026, 12, 2, 3, 14, 5, tzinfo=UTC),
    ),
    "chunked": UploadInstructions(
        method="POST",
        url="https://api.cloudinary.com/v1_1/demo/auto/upload",
        fields={"api_key": "1234", "timestamp": "1764644645", "signature": "ff00"},
        headers={"X-Unique-Upload-Id": "0" * 32},
        expires_at=datetime(2026, 12, 2, 4, 4, 5, tzinfo=UTC) + timedelta(microseconds=1),
        chunked=ChunkedUpload(chunk_size=20 * 1024**2, total_size=120_000_000),
    ),
}


@pytest.mark.parametrize("service_class", [S3Service, CloudinaryService])
@pytest.mark.parametrize("kind", sorted(INSTRUCTIONS))
@pytest.mark.parametrize("size", [482113, None])
def test_the_direct_answer_equals_the_serializers(service_class, kind, size) -> None:
    row = _row(service_class.name, size)
    upload = INSTRUCTIONS[kind].as_dict()
    capabilities = {
        **service_class.capabilities.for_clients(),
        "max_file_size": registry.get(service_class.name).max_upload_size,
    }
    documented = UploadCreateOutputSerializer(
        {
            "id": row.id,
            "status": row.status,
            "provider": row.provider,
            "key": row.key,
            "original_filename": row.original_filename,
            "content_type": row.content_type,
            "declared_size": row.declared_size,
            "expires_at": row.expires_at,
            "upload": upload,
            "capabilities": capabilities,
        }
    ).data
    direct = render_create_answer(row, upload, capabilities)

    rendered = JSONRenderer().render
    assert json.loads(rendered(direct)) == json.loads(rendered(documented))
    assert list(direct) == list(documented)  # same key order too


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 2, 3, 4, 5, 678901, tzinfo=UTC),
        datetime(2026, 12, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 12, 2, 3, 4, 5, 1, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
        datetime(2026, 12, 2, 3, 4, 5),  # naive: the field's own answer
        "2026-12-02T03:04:05+00:00",
        None,
    ],
)
@pytest.mark.parametrize("time_zone", ["UTC", "Europe/Paris"])
def test_the_direct_datetime_is_the_fields(value, time_zone, settings) -> None:
    from rest_framework import serializers as drf

    from backend.uploads.api.serializers import _api_datetime

    settings.TIME_ZONE = time_zone
    assert _api_datetime(value) == drf.DateTimeField().to_representation(value)
