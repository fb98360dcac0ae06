"""API latency: create (presign) and confirm through the full Django/DRF stack.

Token auth, S3 through moto in-process (no network), an in-memory SQLite database (or
DATABASE_URL=postgres://...), warm AppConfig cache. Prints per-request times, queries per
request, and the ratio of a whole create to the provider signing alone (our overhead).
Run: .venv/bin/python bench/api_latency.py
"""

from __future__ import annotations

import os
import struct
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings_test")
# An in-memory SQLite by default (a file database measures the disk's fsync, not us);
# pass DATABASE_URL=postgres://... to measure against PostgreSQL.
os.environ.setdefault("DATABASE_URL", "sqlite://:memory:")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from moto import mock_aws  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from backend.core.models import AppConfig  # noqa: E402
from backend.storage.base import ObjectRef  # noqa: E402
from backend.storage.factory import CloudStorageFactory  # noqa: E402
from backend.uploads.models import MediaUpload  # noqa: E402

N = 200
S3 = {
    "AWS_STORAGE_BUCKET_NAME": "bench-bucket",
    "AWS_S3_REGION_NAME": "us-east-1",
    "AWS_S3_ENDPOINT_URL": "",
    "AWS_ACCESS_KEY_ID": "bench-key",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
}


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 5))
        + chunk(b"IEND", b"")
    )


def main() -> None:
    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench")
    MediaUpload.objects.filter(owner=user).delete()  # a reused database starts clean
    token, _ = Token.objects.get_or_create(user=user)
    body = png()
    with mock_aws(), override_settings(**S3, ALLOWED_HOSTS=["testserver"], DEBUG=False):
        CloudStorageFactory.reset()
        service = CloudStorageFactory.for_provider("s3")
        service.client.create_bucket(Bucket=S3["AWS_STORAGE_BUCKET_NAME"])
        config = AppConfig.load()
        config.provider = "s3"
        config.max_pending_uploads_per_user = N * 2
        config.save()
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        payload = {"filename": "photo.png", "content_type": "image/png", "size": len(body)}
        api.get("/api/v1/config/")  # warm the AppConfig cache and the boto3 client

        ids = []
        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            for _ in range(N):
                response = api.post("/api/v1/uploads/", payload, format="json")
                assert response.status_code == 201, response.content[:300]
                ids.append(response.json())
            t_create = (time.perf_counter() - start) / N
        q_create = len(queries) / N

        for item in ids:  # the client's direct upload, outside the timing
            service.client.put_object(
                Bucket=S3["AWS_STORAGE_BUCKET_NAME"],
                Key=item["key"],
                Body=body,
                ContentType="image/png",
            )
        with CaptureQueriesContext(connection) as queries:
            start = time.perf_counter()
            for item in ids:
                response = api.post(f"/api/v1/uploads/{item['id']}/confirm/", {}, format="json")
                assert response.status_code == 200, response.content[:300]
            t_confirm = (time.perf_counter() - start) / N
        q_confirm = len(queries) / N

        ref = ObjectRef(key="uploads/1/x/photo.png", content_type="image/png")
        start = time.perf_counter()
        for _ in range(N):
            service.presign_upload(ref, size=len(body), max_size=10**7, expires_in=600)
        t_sign = (time.perf_counter() - start) / N
        CloudStorageFactory.reset()

    print(
        f"create  (POST /api/v1/uploads/):         {t_create * 1e3:7.2f} ms/request, "
        f"{q_create:.1f} queries (incl. token auth)"
    )
    print(
        f"confirm (POST /api/v1/uploads/{{id}}/confirm/): {t_confirm * 1e3:7.2f} ms/request, "
        f"{q_confirm:.1f} queries (incl. token auth; one ranged GET to moto in-process)"
    )
    print(f"S3 presign alone:                        {t_sign * 1e3:7.2f} ms/call")
    print(f"ratio create/presign (our overhead):     {t_create / t_sign:7.1f}x")


if __name__ == "__main__":
    main()
