"""The jobs on a real Redis broker, run by a real `manage.py rundramatiq` worker process.

The worker is a separate process, so it must see the same database as the test:
- PostgreSQL run: the test database itself (committed by `transactional_db`);
- SQLite run: the test database is in memory, invisible to another process, so the test adds a
  file-based SQLite database under tmp_path as an extra connection alias, migrates it, writes its
  rows there and hands the same file to the worker as DATABASE_URL.
The S3 side is the session's moto server (real HTTP), which the worker reaches too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from django.core.management import call_command
from django.db import connections
from django.db.utils import load_backend
from django.utils import timezone
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from backend.storage.base import ObjectRef
from backend.uploads.models import MediaUpload, UploadStatus
from tests.conftest import using_postgres
from tests.fixtures.providers import MOTO_SERVER_BUCKET

ROOT = Path(__file__).resolve().parents[2]
# Our own Redis database number, so colleagues' tests on the same server are never touched
# (TEST_REDIS_JOBS_DB gives parallel checkouts on one machine one each).
JOBS_REDIS_DB = int(os.environ.get("TEST_REDIS_JOBS_DB", "11"))
WAIT_SECONDS = 45

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


@pytest.fixture
def jobs_redis_url(redis_url: str) -> str:
    parts = urlsplit(redis_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{JOBS_REDIS_DB}", "", ""))
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def shared_db(transactional_db: None, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(connection alias the test writes to, DATABASE_URL the worker reads)."""
    if using_postgres():
        cfg = connections["default"].settings_dict
        auth = quote(cfg["USER"] or "", safe="")
        if cfg.get("PASSWORD"):
            auth += ":" + quote(cfg["PASSWORD"], safe="")
        host = f"{cfg['HOST'] or '127.0.0.1'}:{cfg['PORT'] or 5432}"
        yield "default", f"postgres://{auth}@{host}/{cfg['NAME']}"
        return
    alias = "jobs_worker_file"
    path = tmp_path / "worker.sqlite3"
    # A connection created here rather than declared in settings: Django's test case lets such
    # dynamically created connections through, and nothing else in the suite ever sees it.
    settings_dict = {**connections["default"].settings_dict, "NAME": str(path)}
    connections[alias] = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, alias)
    try:
        call_command("migrate", database=alias, verbosity=0, skip_checks=True)
        yield alias, f"sqlite:///{path}"
    finally:
        connections[alias].close()
        del connections[alias]


@pytest.fixture
def worker_process(
    jobs_redis_url: str, shared_db: tuple[str, str], moto_server: str, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    from devtools.moto_s3 import DEV_ACCESS_KEY, DEV_SECRET_KEY

    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "DJANGO_DEBUG": "1",
        "DJANGO_SECRET_KEY": "worker-test-secret",
        "DJANGO_ENV_FILE": str(tmp_path / "no.env"),
        "REDIS_URL": jobs_redis_url,
        # The quota counters where this test process keeps them (the test settings').
        "QUOTA_COUNTERS": "database",
        "DATABASE_URL": shared_db[1],
        "AWS_STORAGE_BUCKET_NAME": MOTO_SERVER_BUCKET,
        "AWS_S3_ENDPOINT_URL": moto_server,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
        "UPLOAD_ORPHAN_GRACE_SECONDS": "0",
        "LOG_LEVEL": "INFO",
    }
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "rundramatiq",
            "--processes",
            "1",
            "--threads",
            "2",
            "--worker-shutdown-timeout",
            "5000",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: we stop exactly what we started
    )
    try:
        yield proc
    finally:
        for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        log.close()
        print((tmp_path / "worker.log").read_text(errors="replace")[-4000:])


def wait_for_status(alias: str, pk: uuid.UUID, status: str, proc: Any) -> str:
    deadline = time.monotonic() + WAIT_SECONDS
    current = ""
    while time.monotonic() < deadline:
        current = MediaUpload.objects.using(alias).values_list("status", flat=True).get(pk=pk)
        if current == status:
            return current
        assert proc.poll() is None, "the worker process exited"
        time.sleep(0.2)
    return current


def make_row(alias: str, owner_id: int, **kwargs: Any) -> MediaUpload:
    uid = uuid.uuid4()
    return MediaUpload.objects.using(alias).create(
        id=uid,
        owner_id=owner_id,
        provider="s3",
        key=f"uploads/{owner_id}/{uid.hex}/w.txt",
        original_filename="w.txt",
        content_type="text/plain",
        declared_size=5,
        **kwargs,
    )


def test_real_worker_on_redis_runs_the_jobs(
    shared_db: tuple[str, str],
    worker_process: subprocess.Popen[bytes],
    s3_server_storage: Any,
    jobs_redis_url: str,
    django_user_model: Any,
) -> None:
    alias = shared_db[0]
    owner = django_user_model.objects.db_manager(alias).create_user("redis-owner", password="x")
    to_delete = make_row(alias, owner.pk, status=UploadStatus.DELETING, expires_at=timezone.now())
    orphan = make_row(alias, owner.pk, expires_at=timezone.now() - timedelta(minutes=5))
    for row in (to_delete, orphan):
        s3_server_storage.client.put_object(Bucket=MOTO_SERVER_BUCKET, Key=row.key, Body=b"hello")

    broker = RedisBroker(url=jobs_redis_url)
    try:
        broker.declare_queue("default")
        for actor_name, args in (("delete_upload", (str(to_delete.id),)), ("expire_orphans", ())):
            broker.enqueue(
                Message(
                    queue_name="default",
                    actor_name=actor_name,
                    args=args,
                    kwargs={},
                    options={},
                )
            )
        assert wait_for_status(alias, to_delete.id, UploadStatus.DELETED, worker_process) == (
            UploadStatus.DELETED
        )
        assert wait_for_status(alias, orphan.id, UploadStatus.EXPIRED, worker_process) == (
            UploadStatus.EXPIRED
        )
    finally:
        broker.close()
    for row in (to_delete, orphan):
        assert not s3_server_storage.inspect(ObjectRef(row.key)).exists
