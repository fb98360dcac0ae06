"""Presign cost: the cached-client path we use vs. the naive boto3 Session per request.

Prints per-call times measured in this one run and their ratio; no network is touched
(presigning is local signing). Run: .venv/bin/python bench/presign.py
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

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from django.test import override_settings  # noqa: E402

from backend.storage.base import ObjectRef  # noqa: E402
from backend.storage.factory import CloudStorageFactory  # noqa: E402

S3 = {
    "AWS_STORAGE_BUCKET_NAME": "bench-bucket",
    "AWS_S3_REGION_NAME": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "AKIDBENCHMARK",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
}
CLOUDINARY = {
    "CLOUDINARY_CLOUD_NAME": "bench",
    "CLOUDINARY_API_KEY": "123456789012345",
    "CLOUDINARY_API_SECRET": "bench-secret",
}


def per_call(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    ref = ObjectRef(key="uploads/1/abc/photo.jpg", content_type="image/jpeg")
    with override_settings(**S3, **CLOUDINARY):
        CloudStorageFactory.reset()
        s3 = CloudStorageFactory.for_provider("s3")
        cld = CloudStorageFactory.for_provider("cloudinary")

        def ours_s3() -> None:
            s3.presign_upload(ref, size=1000, max_size=10_000_000, expires_in=600)

        def ours_cloudinary() -> None:
            cld.presign_upload(ref, size=1000, max_size=10_000_000, expires_in=600)

        def factory_lookup() -> None:
            CloudStorageFactory.for_provider("s3")

        def naive_s3() -> None:
            session = boto3.session.Session(
                aws_access_key_id=S3["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=S3["AWS_SECRET_ACCESS_KEY"],
                region_name=S3["AWS_S3_REGION_NAME"],
            )
            client = session.client("s3", config=Config(signature_version="s3v4"))
            client.generate_presigned_post(
                S3["AWS_STORAGE_BUCKET_NAME"],
                ref.key,
                Fields={"Content-Type": ref.content_type},
                Conditions=[{"Content-Type": ref.content_type}, ["content-length-range", 1, 1000]],
                ExpiresIn=600,
            )

        t_ours = per_call(ours_s3, 2000)
        t_cld = per_call(ours_cloudinary, 2000)
        t_factory = per_call(factory_lookup, 20000)
        t_naive = per_call(naive_s3, 40)

    print(f"S3 presign, cached client (ours):        {t_ours * 1e3:8.3f} ms/call")
    print(f"Cloudinary signed params (ours):         {t_cld * 1e3:8.3f} ms/call")
    print(f"factory lookup, warm:                    {t_factory * 1e6:8.2f} us/call")
    print(f"S3 presign, new Session+client per call: {t_naive * 1e3:8.3f} ms/call")
    print(f"ratio naive/ours (S3):                   {t_naive / t_ours:8.1f}x")


if __name__ == "__main__":
    main()
