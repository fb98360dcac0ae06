"""Dramatiq actors for uploads: thin edges over `backend.uploads.cleanup` and the upload service.

Actors take ids (strings) only, are idempotent (running one twice is harmless), and have explicit
retries and time limits. Callers enqueue them with `transaction.on_commit(...)` so a job never sees
a row its transaction rolled back, and never runs for one.

Importing this module also registers the periodic jobs with dramatiq-crontab (schedules come from
`settings.UPLOAD_SCHEDULES`; an empty string disables one). Keep imports here cheap and safe:
an ImportError in this module is swallowed by task autodiscovery, and the jobs would then silently
never be scheduled (tests/uploads/test_tasks_schedule.py guards against that).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import dramatiq
from django.conf import settings
from django.db import DatabaseError
from dramatiq_crontab import cron

from backend.core.errors import NotFound, ServiceUnavailable
from backend.core.logs import upload_context
from backend.storage.factory import CloudStorageFactory
from backend.uploads import cleanup, jobs, services

logger = logging.getLogger(__name__)

QUEUE = jobs.QUEUE
# Provider outages are usually short; 8 retries with exponential backoff from 10 s (capped at
# 30 min) spread attempts over roughly two hours before a message goes to the dead-letter queue.
DELETE_MAX_RETRIES = 8
CLEANUP_MAX_RETRIES = 3

# Time limits exceed what the provider calls of a message can take (each call is bounded by
# PROVIDER_DEADLINE_SECONDS, see backend/storage/resilience.py), so a hung provider makes a
# message fail and retry, never a worker thread hang. Provider calls one message makes:
#: delete_upload: abort an unfinished multipart upload, then delete the object.
DELETE_PROVIDER_CALLS = 2
#: recheck_deleted: look for the object, delete it.
RECHECK_PROVIDER_CALLS = 2
#: The batch jobs make one call per batch (S3 1000 keys, Cloudinary 100) and stop a provider at
#: its first failure; their limit leaves room for at least this many batches per provider (a
#: run cut short by its limit leaves the rest to the next run).
BATCHES_PER_RUN = 10
#: Room for the database work around the provider calls.
TIME_LIMIT_MARGIN_SECONDS = 30


def time_limit_ms(provider_calls: int, floor_seconds: int) -> int:
    """An actor's time limit (ms): its floor, and always more than its provider calls."""
    calls = math.ceil(provider_calls * settings.PROVIDER_DEADLINE_SECONDS)
    return 1000 * max(floor_seconds, calls + TIME_LIMIT_MARGIN_SECONDS)


def _retry_transient(max_retries: int) -> Any:
    """Retry only what can heal by itself (provider/storage outage, DB hiccup), up to a bound.

    Anything else (a bug, a row in an unexpected state) fails at once instead of being hammered
    20 times, Dramatiq's default."""

    def retry_when(retries: int, exc: BaseException) -> bool:
        return retries < max_retries and isinstance(exc, ServiceUnavailable | DatabaseError)

    return retry_when


@dramatiq.actor(
    # The services enqueue it by this name (backend.uploads.jobs), not by importing it.
    actor_name=jobs.DELETE_UPLOAD,
    queue_name=QUEUE,
    max_retries=DELETE_MAX_RETRIES,
    retry_when=_retry_transient(DELETE_MAX_RETRIES),
    min_backoff=10_000,
    max_backoff=30 * 60_000,
    time_limit=time_limit_ms(DELETE_PROVIDER_CALLS, 120),
)
def delete_upload(upload_id: str) -> None:
    """Delete one upload's object at the provider recorded on its row and mark it `deleted`."""
    try:
        with upload_context(upload_id):
            services.delete_at_provider(upload_id)
    except NotFound:
        # The row is gone (owner deleted, cascade): nothing left to do.
        logger.info("delete_upload: upload %s no longer exists", upload_id)


@dramatiq.actor(
    # Sent by name (backend.uploads.jobs) by the sweep below.
    actor_name=jobs.RECHECK_DELETED,
    queue_name=QUEUE,
    max_retries=DELETE_MAX_RETRIES,
    retry_when=_retry_transient(DELETE_MAX_RETRIES),
    min_backoff=10_000,
    max_backoff=30 * 60_000,
    time_limit=time_limit_ms(RECHECK_PROVIDER_CALLS, 120),
)
def recheck_deleted(upload_id: str) -> None:
    """After a delete: remove an object the upload's still-valid instructions recreated."""
    try:
        services.recheck_deleted(upload_id)
    except NotFound:
        logger.info("recheck_deleted: upload %s no longer exists", upload_id)


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=60_000)
def recheck_deleted_uploads() -> None:
    """The sweep (cron): one `recheck_deleted` job per deleted upload whose instructions died
    since its delete. A periodic query over the (status, expires_at) index, rather than a
    message delayed by an hour, survives worker restarts and a flushed broker."""
    due = services.rechecks_due()
    for upload_id in due:
        jobs.enqueue_recheck(upload_id)
    if due:
        logger.info("recheck_deleted_uploads: %d uploads to check", len(due))


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=CLEANUP_MAX_RETRIES,
    retry_when=_retry_transient(CLEANUP_MAX_RETRIES),
    min_backoff=30_000,
    max_backoff=10 * 60_000,
    time_limit=time_limit_ms(2 * BATCHES_PER_RUN, 15 * 60),  # two providers
)
def expire_orphans() -> None:
    """Delete pending uploads never confirmed (past expiry + grace) at their provider."""
    report = cleanup.expire_orphans()
    logger.info("expire_orphans: %s", report.summary())


@dramatiq.actor(
    queue_name=QUEUE,
    max_retries=CLEANUP_MAX_RETRIES,
    retry_when=_retry_transient(CLEANUP_MAX_RETRIES),
    min_backoff=60_000,
    max_backoff=30 * 60_000,
    # Listing pages, deletes and multipart aborts of one provider.
    time_limit=time_limit_ms(3 * BATCHES_PER_RUN, 60 * 60),
)
def reconcile_provider(provider: str) -> None:
    """Delete objects under our prefix at `provider` that no live row accounts for."""
    report = cleanup.reconcile(provider)
    logger.info("reconcile_provider(%s): %s", provider, report.summary())


@dramatiq.actor(queue_name=QUEUE, max_retries=0, time_limit=60_000)
def reconcile_providers() -> None:
    """Fan out one `reconcile_provider` job per configured provider (the cron entry point:
    dramatiq-crontab sends actors without arguments)."""
    for provider in CloudStorageFactory.configured():
        reconcile_provider.send(provider)


def _schedule(name: str, actor: Any) -> None:
    schedule = settings.UPLOAD_SCHEDULES.get(name, "")
    if schedule:
        cron(schedule)(actor)


_schedule("expire_orphans", expire_orphans)
_schedule("reconcile", reconcile_providers)
_schedule("recheck_deleted", recheck_deleted_uploads)
