"""The AppConfig snapshot lives in a cache shared by every process (Redis in production)."""

from __future__ import annotations

import uuid

import pytest
from django.core.cache.backends.redis import RedisCache

from backend.core import config
from backend.core.models import AppConfig

pytestmark = pytest.mark.django_db


def test_a_save_in_one_process_is_seen_by_another(
    redis_url, monkeypatch, django_assert_num_queries
) -> None:
    # Two independent cache clients on the same Redis, as two web processes would have.
    prefix = f"test-providers-{uuid.uuid4().hex}"
    process_a = RedisCache(redis_url, {"KEY_PREFIX": prefix})
    process_b = RedisCache(redis_url, {"KEY_PREFIX": prefix})
    try:
        monkeypatch.setattr(config, "cache", process_a)
        assert config.get_app_config().provider == "cloudinary"  # A warms the shared cache

        monkeypatch.setattr(config, "cache", process_b)
        with django_assert_num_queries(0):
            assert config.get_app_config().provider == "cloudinary"  # B: served from Redis

        monkeypatch.setattr(config, "cache", process_a)
        row = AppConfig.load()
        row.provider = "s3"
        row.save()  # clears the shared key

        monkeypatch.setattr(config, "cache", process_b)
        assert config.get_app_config().provider == "s3"
        with django_assert_num_queries(0):
            assert config.get_app_config().provider == "s3"
    finally:
        process_a.delete(config.CACHE_KEY)
        process_a.close()
        process_b.close()


def test_a_read_racing_the_save_does_not_pin_the_old_provider(
    django_capture_on_commit_callbacks,
) -> None:
    """Another process reads (and caches) the old row after save() cleared the key but before
    the admin's transaction commits; the clear after commit must drop that stale entry."""
    from django.db import transaction

    assert config.get_app_config().provider == "cloudinary"
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        row = AppConfig.load()
        row.provider = "s3"
        row.save()
        # What a concurrent reader in another process puts back before our commit:
        stale = config.AppConfigSnapshot(
            **{**config.asdict(config.get_app_config()), "provider": "cloudinary"}
        )
        config.cache.set(config.CACHE_KEY, config.asdict(stale), config.CACHE_TIMEOUT)
    assert config.get_app_config().provider == "s3"


def test_most_reads_make_no_round_trip_to_the_shared_cache(monkeypatch) -> None:
    """Within LOCAL_TTL_SECONDS a read is served from this process's memory: no query and
    no cache call; past it, one cache read (still no query)."""
    config.get_app_config()  # warm both tiers
    calls = []
    real_get = config.cache.get
    monkeypatch.setattr(config.cache, "get", lambda *a, **k: calls.append(a) or real_get(*a, **k))
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        for _ in range(100):
            config.get_app_config()
    assert len(queries) == 0
    assert len(calls) <= 1  # at most one refresh if the copy aged meanwhile
    monkeypatch.setattr(config, "LOCAL_TTL_SECONDS", 0.0)
    with CaptureQueriesContext(connection) as queries:
        config.get_app_config()
    assert len(queries) == 0 and len(calls) >= 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_admin_switch_reaches_another_os_process_within_one_second(redis_url) -> None:
    """Two real OS processes sharing PostgreSQL and Redis, as two gunicorn workers do: A saves
    the provider; B, whose in-memory copy is warm, serves the new one within one second."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from django.db import connection

    root = Path(__file__).resolve().parents[2]
    db = connection.settings_dict
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(root),
        "DJANGO_SETTINGS_MODULE": "backend.settings_test",
        "DATABASE_URL": (
            f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:"
            f"{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "APPCONFIG_CACHE_URL": redis_url,
        "APPCONFIG_CACHE_PREFIX": f"test-two-processes-{uuid.uuid4().hex}",
    }
    script = str(root / "tests" / "core" / "appconfig_process.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    a, b = procs

    def ask(proc: subprocess.Popen[str], command: str) -> str:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        return proc.stdout.readline().strip()

    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert os.getpid() not in (a.pid, b.pid) and a.pid != b.pid
        assert ask(a, "get") == "cloudinary"
        assert ask(b, "get") == "cloudinary"  # B's copy is warm
        assert ask(a, "set s3") == "saved"
        switched = time.monotonic()
        seen = ask(b, "get")
        while seen != "s3" and time.monotonic() - switched < 3:
            time.sleep(0.02)
            seen = ask(b, "get")
        elapsed = time.monotonic() - switched
        assert seen == "s3"
        assert elapsed < 1.0, f"B saw the switch after {elapsed:.2f} s"
        assert ask(a, "get") == "s3"  # the saving process at once (its copy was dropped)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
