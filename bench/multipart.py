"""Multipart costs: signing one part URL (local, no network) and a 12 MiB multipart upload
(start, sign 3 parts, 3 PUTs, complete + verification) against a local moto S3 server.

Prints times measured in this one run. Run: .venv/bin/python bench/multipart.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings_test")

import django

django.setup()

import requests  # noqa: E402
from django.test import override_settings  # noqa: E402

from backend.storage.base import CompletedPart, ObjectRef  # noqa: E402
from backend.storage.factory import CloudStorageFactory  # noqa: E402
from devtools.moto_s3 import DEV_ACCESS_KEY, DEV_SECRET_KEY, MotoS3  # noqa: E402

MiB = 1024 * 1024
N = 2000


def main() -> None:
    server = MotoS3(bucket="bench-multipart").start()
    settings = {
        "AWS_STORAGE_BUCKET_NAME": "bench-multipart",
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_S3_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
    }
    try:
        with override_settings(**settings):
            CloudStorageFactory.reset()
            s3 = CloudStorageFactory.for_provider("s3")
            ref = ObjectRef(key="uploads/1/bench/big.bin", content_type="application/octet-stream")
            session = s3.create_multipart_upload(ref)
            s3.presign_upload_part(
                ref, session.upload_id, 1, expires_in=600, content_length=5 * MiB
            )  # warm
            started = time.perf_counter()
            for n in range(N):
                s3.presign_upload_part(
                    ref, session.upload_id, n % 10_000 + 1, expires_in=600, content_length=5 * MiB
                )
            per_part_ms = (time.perf_counter() - started) / N * 1000
            s3.abort_multipart_upload(ref, session.upload_id)

            data = os.urandom(12 * MiB)
            started = time.perf_counter()
            session = s3.create_multipart_upload(ref)
            parts = []
            for number in (1, 2, 3):
                chunk = data[(number - 1) * 5 * MiB : number * 5 * MiB]
                signed = s3.presign_upload_part(
                    ref, session.upload_id, number, expires_in=600, content_length=len(chunk)
                )
                answer = requests.put(signed.url, data=chunk, timeout=30)
                parts.append(CompletedPart(number, answer.headers["ETag"]))
            s3.complete_multipart_upload(ref, session.upload_id, parts)
            stored = s3.inspect(ref)
            head = s3.read_head(ref, 512)
            flow_s = time.perf_counter() - started
            assert stored.size == len(data) and head == data[:512]
            CloudStorageFactory.reset()
    finally:
        server.stop()
    print(f"presign_upload_part: {per_part_ms:.3f} ms per part ({N} parts, cached client)")
    print(f"12 MiB multipart upload, moto server (3 PUTs, complete, HEAD+GET): {flow_s:.2f} s")


if __name__ == "__main__":
    main()
