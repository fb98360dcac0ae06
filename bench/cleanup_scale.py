"""Benchmark: orphan cleanup of N expired S3 uploads (time, DeleteObjects calls, peak memory).

    python bench/cleanup_scale.py                 # 10 000 and 100 000 rows
    python bench/cleanup_scale.py --rows 20000    # one size
    DATABASE_URL=postgres://... python bench/cleanup_scale.py   # on PostgreSQL (the DB is wiped)

S3 is moto in-process (no network), so the times are our code + the database + moto's request
handling; against real S3 add one round trip (~20-100 ms) per 1000 keys. The database is a
throwaway SQLite file unless DATABASE_URL is given. Each size runs twice: once for wall time,
once under tracemalloc for the peak of Python allocations (tracemalloc slows things down).
Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backend.settings_test")
    if "DATABASE_URL" not in os.environ:
        db = Path(tempfile.mkdtemp(prefix="cleanup-bench-")) / "bench.sqlite3"
        os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def create_orphans(owner: Any, n: int) -> None:
    from django.utils import timezone

    from backend.uploads.models import MediaUpload

    expired = timezone.now() - timedelta(hours=3)
    batch: list[MediaUpload] = []
    for _ in range(n):
        uid = uuid.uuid4()
        batch.append(
            MediaUpload(
                id=uid,
                owner=owner,
                provider="s3",
                key=f"uploads/{owner.pk}/{uid.hex}/f.bin",
                original_filename="f.bin",
                content_type="application/octet-stream",
                declared_size=1,
                expires_at=expired,
            )
        )
        if len(batch) == 5000:
            MediaUpload.objects.bulk_create(batch)
            batch = []
    MediaUpload.objects.bulk_create(batch)


def run_once(service: Any, owner: Any, n: int, *, trace: bool) -> dict[str, Any]:
    from backend.uploads import cleanup
    from backend.uploads.models import MediaUpload

    MediaUpload.objects.all().delete()
    create_orphans(owner, n)
    calls: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        calls.append(len(params["Delete"]["Objects"]))

    service.client.meta.events.register("before-parameter-build.s3.DeleteObjects", count)
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    report = cleanup.expire_orphans()
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    service.client.meta.events.unregister("before-parameter-build.s3.DeleteObjects", count)
    assert report.deleted == n, report.summary()
    assert len(calls) == math.ceil(n / 1000), calls
    return {"rows": n, "seconds": elapsed, "calls": len(calls), "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="repeatable")
    args = parser.parse_args()
    sizes = args.rows or [10_000, 100_000]

    setup_django()
    from django.contrib.auth import get_user_model
    from django.test import override_settings
    from moto import mock_aws

    from backend.storage.factory import CloudStorageFactory
    from tests.fixtures.providers import S3_SETTINGS, S3_TEST_BUCKET

    owner, _ = get_user_model().objects.get_or_create(username="bench-owner")
    # DEBUG off as in production: with it on, Django keeps every SQL statement in memory.
    settings = {**S3_SETTINGS, "UPLOAD_ORPHAN_GRACE_SECONDS": 60, "DEBUG": False}
    with mock_aws(), override_settings(**settings):
        CloudStorageFactory.reset()
        service = CloudStorageFactory.for_provider("s3")
        service.client.create_bucket(Bucket=S3_TEST_BUCKET)
        print(f"{'rows':>8} {'seconds':>8} {'rows/s':>8} {'calls':>6} {'peak MiB':>9}")
        for n in sizes:
            timed = run_once(service, owner, n, trace=False)
            traced = run_once(service, owner, n, trace=True)
            print(
                f"{n:>8} {timed['seconds']:>8.2f} {n / timed['seconds']:>8.0f} "
                f"{timed['calls']:>6} {traced['peak'] / 2**20:>9.2f}"
            )


if __name__ == "__main__":
    main()
