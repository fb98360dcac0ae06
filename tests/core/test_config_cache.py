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
