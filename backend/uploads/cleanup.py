"""Cleanup services behind the Dramatiq jobs and `manage.py run_cleanup`.

`expire_orphans` removes uploads that were never confirmed; `reconcile` removes provider objects
under our key prefix that no live row accounts for. Both talk to the provider recorded on each row
(or named by the caller) through `CloudStorageFactory`, delete in the provider's batch size, and
stream rows/listings page by page so memory does not grow with the number of objects. A claimed
row that holds an S3 multipart upload has it aborted first (its parts are billed until then).

Claiming and the race with a late confirm
-----------------------------------------
A pending row is claimed with a conditional UPDATE (`pending -> expiring`, `claimed_at = claim
time`, `WHERE status = 'pending'`) *before* anything is deleted at the provider. The confirm path
also moves a row with a conditional UPDATE `WHERE status = 'pending'`, so exactly one of them wins:
either confirm wins (the row is `uploaded`, no longer a candidate, its object untouched) or the
cleanup wins (confirm then finds `expiring` and answers 410 Gone). A row is never `uploaded` with
its object deleted. On PostgreSQL candidates are picked with `SELECT ... FOR UPDATE SKIP LOCKED`,
so two workers never claim the same rows (a row another transaction holds locked, such as a
provider delete event being applied, is skipped). Confirm takes no row lock: the conditional
UPDATE alone decides the race.

When a delete fails
-------------------
A batch the provider refused (ProviderUnavailable) or a key it reported as failed is *left in
`expiring`* with its claim time. It is not marked `expired` (nothing is marked expired that the
provider did not report deleted), confirm keeps answering 410 (the row is past its expiry and grace
anyway), and once the claim is older than `CLAIM_TIMEOUT` a later run claims it again. A worker
that dies mid-run leaves its claims to the same timeout.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BigIntegerField, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from backend.core import metrics
from backend.core.errors import ServiceUnavailable
from backend.storage import registry
from backend.storage.base import CloudStorageService, ListedObject, MultipartSession, ObjectRef
from backend.storage.factory import CloudStorageFactory
from backend.uploads import quotas
from backend.uploads.models import MediaUpload, UploadStatus

logger = logging.getLogger(__name__)

#: A claim older than this is considered abandoned (crashed worker, failed delete) and retaken.
CLAIM_TIMEOUT = timedelta(minutes=15)
#: How many sample keys a report keeps for printing (reports never hold every key).
SAMPLE_SIZE = 20
#: Rows whose object reconciliation must leave alone: the row still accounts for it.
LIVE_STATUSES = (
    UploadStatus.PENDING,
    UploadStatus.UPLOADED,
    UploadStatus.EXPIRING,
    UploadStatus.DELETING,
)


@dataclass
class ProviderTally:
    candidates: int = 0
    deleted: int = 0
    failed: int = 0
    calls: int = 0
    skipped_reason: str = ""


@dataclass
class CleanupReport:
    """What a run did (or, in a dry run, would do). Counts plus a bounded sample of keys."""

    job: str
    dry_run: bool
    providers: dict[str, ProviderTally] = field(default_factory=dict)
    sample: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    multipart_aborted: int = 0
    #: Per-user quota counters re-derived from the rows (a drifted counter heals).
    quotas_recounted: int = 0

    def tally(self, provider: str) -> ProviderTally:
        return self.providers.setdefault(provider, ProviderTally())

    def note(self, line: str) -> None:
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append(line)

    def fail(self, key: str, reason: str) -> None:
        if len(self.failures) < SAMPLE_SIZE:
            self.failures[key] = reason

    @property
    def deleted(self) -> int:
        return sum(t.deleted for t in self.providers.values())

    @property
    def failed(self) -> int:
        return sum(t.failed for t in self.providers.values())

    @property
    def candidates(self) -> int:
        return sum(t.candidates for t in self.providers.values())

    def count(self, job: str) -> None:
        """Add an applied run's numbers to the cleanup metrics (a dry run changes nothing)."""
        if self.dry_run:
            return
        for provider, t in self.providers.items():
            metrics.CLEANUP_RUNS.labels(
                job, provider, "skipped" if t.skipped_reason else "ran"
            ).inc()
            if t.deleted:
                metrics.CLEANUP.labels(job, provider, "deleted").inc(t.deleted)
            if t.failed:
                metrics.CLEANUP.labels(job, provider, "failed").inc(t.failed)
        if self.multipart_aborted:
            for provider in self.providers:
                metrics.CLEANUP.labels(job, provider, "multipart_aborted").inc(
                    self.multipart_aborted
                )

    def summary(self) -> str:
        parts = []
        for name, t in sorted(self.providers.items()):
            if t.skipped_reason:
                parts.append(f"{name}: skipped ({t.skipped_reason})")
            elif self.dry_run:
                parts.append(f"{name}: would delete {t.candidates}")
            else:
                parts.append(
                    f"{name}: {t.candidates} candidates, {t.deleted} deleted, "
                    f"{t.failed} failed, {t.calls} delete calls"
                )
        if self.multipart_aborted:
            parts.append(f"{self.multipart_aborted} multipart uploads aborted")
        mode = "dry run" if self.dry_run else "applied"
        return f"{self.job} ({mode}): " + ("; ".join(parts) or "nothing to do")


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _service(provider: str) -> CloudStorageService:
    return CloudStorageFactory.for_provider(provider)


def _ref(row: dict[str, Any]) -> ObjectRef:
    """Where a claimed row's object lives (rows are streamed as `.values()` dicts)."""
    return MediaUpload.ref_for(row["key"], row["content_type"], row["metadata"])


# --- expire orphans ---------------------------------------------------------------------------


def orphan_candidates(now: datetime) -> QuerySet[MediaUpload]:
    """Pending rows past expiry + grace, and `expiring` claims abandoned for CLAIM_TIMEOUT."""
    return MediaUpload.objects.filter(_pending_orphan_q(now) | _stale_claim_q(now))


def _pending_orphan_q(now: datetime) -> Q:
    grace = timedelta(seconds=settings.UPLOAD_ORPHAN_GRACE_SECONDS)
    return Q(status=UploadStatus.PENDING, expires_at__lt=now - grace)


def _stale_claim_q(now: datetime) -> Q:
    return Q(status=UploadStatus.EXPIRING, claimed_at__lt=now - CLAIM_TIMEOUT)


def _pick(provider: str, now: datetime, limit: int, *, lock: bool = True) -> list[Any]:
    """Ids of up to `limit` claimable rows, oldest expiry first.

    Two queries rather than one with OR: each is a range scan of the (status, expires_at) index
    that starts at the first row still to do, so a chunk costs the same at row 1 000 as at row
    1 000 000 (with the OR, SQLite scanned and sorted every row of the provider per chunk)."""
    ids: list[Any] = []
    for q in (_pending_orphan_q(now), _stale_claim_q(now)):
        picker = MediaUpload.objects.filter(q, provider=provider).order_by("expires_at")
        if lock and connection.features.has_select_for_update_skip_locked:
            # Two workers never take the same rows; rows locked by another transaction are
            # skipped (confirm itself locks nothing: its conditional UPDATE decides).
            picker = picker.select_for_update(skip_locked=True)
        ids += picker.values_list("id", flat=True)[: limit - len(ids)]
        if len(ids) >= limit:
            break
    return ids


def _claim(provider: str, now: datetime, limit: int) -> tuple[datetime, list[dict[str, Any]]]:
    """Claim up to `limit` candidate rows of `provider`; return the claim time and the rows won."""
    with transaction.atomic():
        ids = _pick(provider, now, limit)
        if not ids:
            return timezone.now(), []
        claimed_at = timezone.now()
        # The pending ones among them leave `pending` here: their quota reservations are
        # released in this transaction (on PostgreSQL `_pick` holds their row locks, so no
        # confirm can move them in between).
        leaving = list(
            MediaUpload.objects.filter(_pending_orphan_q(now), id__in=ids).values(
                "owner_id", "created_at", "quota_bytes", "declared_size"
            )
        )
        # Conditional: only rows still claimable at this instant (a confirm that committed in
        # between has moved its row out of `pending`, and this UPDATE leaves it alone).
        orphan_candidates(now).filter(id__in=ids).update(
            status=UploadStatus.EXPIRING,
            claimed_at=claimed_at,
            updated_at=claimed_at,
            quota_bytes=Coalesce("declared_size", Value(0), output_field=BigIntegerField()),
        )
        quotas.release_rows(leaving)
    won = [
        dict(row)
        for row in MediaUpload.objects.filter(
            id__in=ids, status=UploadStatus.EXPIRING, claimed_at=claimed_at
        ).values("id", "key", "content_type", "metadata", "multipart_upload_id")
    ]
    return claimed_at, won


def _finish(ids: Sequence[Any], claimed_at: datetime, status: str) -> int:
    """Move rows still held by this claim to `status` (a retaken claim is left alone)."""
    if not ids:
        return 0
    return MediaUpload.objects.filter(
        id__in=ids, status=UploadStatus.EXPIRING, claimed_at=claimed_at
    ).update(status=status, updated_at=timezone.now())


def expire_orphans(
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    providers: Sequence[str] | None = None,
    limit: int | None = None,
) -> CleanupReport:
    """Delete never-confirmed uploads at the provider recorded on each row; mark them `expired`.

    Rows are claimed `delete_batch_size` at a time (S3 1000, Cloudinary 100), so each claimed
    chunk is one provider call and at most one chunk per provider is held in memory. `limit`
    bounds the rows handled in this run (the next run continues)."""
    now = now or timezone.now()
    report = CleanupReport(job="expire_orphans", dry_run=dry_run)
    for provider in providers or registry.names():
        if dry_run:
            candidates = orphan_candidates(now).filter(provider=provider)
            _expire_dry_run(report, provider, candidates, limit)
            continue
        if not _pick(provider, now, 1, lock=False):
            continue
        try:
            service = _service(provider)
        except ServiceUnavailable as exc:
            # Rows of a provider we cannot reach stay pending; they are not lost, just waiting.
            report.tally(provider).skipped_reason = exc.message
            logger.warning("expire_orphans: skipping %s: %s", provider, exc.message)
            continue
        _expire_for_provider(report, provider, service, now, limit)
    if not dry_run:
        report.quotas_recounted = quotas.recount()
    report.count("expire_orphans")
    return report


def _expire_dry_run(
    report: CleanupReport, provider: str, candidates: QuerySet[MediaUpload], limit: int | None
) -> None:
    tally = report.tally(provider)
    tally.candidates = candidates.count() if limit is None else min(candidates.count(), limit)
    for row in candidates.order_by("expires_at", "id").values("id", "key", "expires_at")[
        :SAMPLE_SIZE
    ]:
        report.note(f"{provider}:{row['key']} (id {row['id']}, expired {row['expires_at']:%F %T})")


def _expire_for_provider(
    report: CleanupReport,
    provider: str,
    service: CloudStorageService,
    now: datetime,
    limit: int | None,
) -> None:
    tally = report.tally(provider)
    batch_size = max(1, service.delete_batch_size)
    while limit is None or tally.candidates < limit:
        size = batch_size if limit is None else min(batch_size, limit - tally.candidates)
        claimed_at, rows = _claim(provider, now, size)
        if not rows:
            return
        tally.candidates += len(rows)
        ids_by_key = {row["key"]: row["id"] for row in rows}
        tally.calls += 1
        try:
            report.multipart_aborted += _abort_multipart_uploads(service, rows)
            result = service.delete_many([_ref(row) for row in rows])
        except ServiceUnavailable as exc:
            # Leave the batch claimed; it is retaken after CLAIM_TIMEOUT (see module docstring).
            tally.failed += len(rows)
            report.fail(f"{provider}: batch of {len(rows)}", exc.message)
            logger.warning(
                "expire_orphans: %s batch of %d failed, retried after the claim timeout: %s",
                provider,
                len(rows),
                exc.message,
            )
            return  # the provider is down: do not hammer it with the remaining batches
        deleted_ids = [ids_by_key[k] for k in result.deleted if k in ids_by_key]
        tally.deleted += _finish(deleted_ids, claimed_at, UploadStatus.EXPIRED)
        for key in result.deleted[: SAMPLE_SIZE - len(report.sample)]:
            report.note(f"{provider}:{key}")
        for key, reason in result.failed.items():
            tally.failed += 1
            report.fail(f"{provider}:{key}", reason)
            logger.warning("expire_orphans: %s refused to delete %s: %s", provider, key, reason)
        if result.failed and not result.deleted:
            return  # nothing went through: stop rather than spin on a broken provider


def _abort_multipart_uploads(service: CloudStorageService, rows: Sequence[dict[str, Any]]) -> int:
    """Abort the multipart uploads of claimed rows that never completed: their parts are kept
    (and billed) until aborted. One call each (S3 has no batch abort); the object delete that
    follows stays one batched call. An upload already gone counts as aborted."""
    aborted = 0
    for row in rows:
        if row.get("multipart_upload_id"):
            service.abort_multipart_upload(_ref(row), row["multipart_upload_id"])
            aborted += 1
    return aborted


# --- reconcile --------------------------------------------------------------------------------


def _prefix() -> str:
    prefix = settings.UPLOAD_KEY_PREFIX.strip("/")
    return f"{prefix}/" if prefix else ""


def reconcile(
    provider: str,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    page_size: int = 1000,
) -> CleanupReport:
    """Delete objects under our prefix at `provider` with no live row, older than the grace.

    An object is deleted when no row has its key, or its only row is `expired`, `deleted` or
    `failed` (a staged object: unless its row is still `pending` or `expiring`; a copy staged
    for a confirmed row is a replayed form's), and it was last modified before now -
    UPLOAD_RECONCILE_GRACE_SECONDS (the grace
    covers an upload whose row is being created or confirmed right now). Rows are looked up
    with one query per listing page. On S3, multipart uploads started before the same cutoff are
    aborted too, except those a `pending` or `expiring` row owns: such an upload may still be
    completed (until its expiry + grace), and `expire_orphans` aborts it with its row."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.UPLOAD_RECONCILE_GRACE_SECONDS)
    report = CleanupReport(job=f"reconcile {provider}", dry_run=dry_run)
    tally = report.tally(provider)
    service = _service(provider)
    batch_size = max(1, service.delete_batch_size)
    pending: list[ObjectRef] = []

    def flush() -> None:
        if not pending:
            return
        tally.calls += 1
        result = service.delete_many(pending)
        tally.deleted += len(result.deleted)
        for key, reason in result.failed.items():
            tally.failed += 1
            report.fail(f"{provider}:{key}", reason)
        pending.clear()

    for page in _chunks(service.iter_objects(_prefix(), page_size=page_size), page_size):
        for obj in _orphans_in_page(provider, service, page, cutoff):
            tally.candidates += 1
            report.note(f"{provider}:{obj.ref.key} ({obj.size} bytes, {obj.last_modified:%F %T})")
            if dry_run:
                continue
            pending.append(obj.ref)
            if len(pending) >= batch_size:
                flush()
    if not dry_run:
        flush()
        report.multipart_aborted = service.abort_stale_multipart_uploads(
            _prefix(), cutoff, keep=functools.partial(_owned_uploads, provider)
        )
    report.count("reconcile")
    return report


#: Rows that own their multipart upload: it may still complete, or expire_orphans aborts it.
MULTIPART_OWNER_STATUSES = (UploadStatus.PENDING, UploadStatus.EXPIRING)


def _owned_uploads(provider: str, uploads: Sequence[MultipartSession]) -> set[tuple[str, str]]:
    """The (key, upload_id) pairs of one listing page that a live row owns (one query)."""
    owned = MediaUpload.objects.filter(
        provider=provider,
        key__in=[u.key for u in uploads],
        status__in=MULTIPART_OWNER_STATUSES,
    ).values_list("key", "multipart_upload_id")
    return {(key, upload_id) for key, upload_id in owned if upload_id}


def _aware(value: datetime) -> datetime:
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


#: Rows whose STAGED object (what the client wrote, not yet promoted) reconciliation must leave
#: alone: it may still be confirmed, or expire_orphans deletes it with its row.
STAGED_OWNER_STATUSES = (UploadStatus.PENDING, UploadStatus.EXPIRING)


def _orphans_in_page(
    provider: str, service: CloudStorageService, page: Sequence[ListedObject], cutoff: datetime
) -> Iterator[ListedObject]:
    """Old objects no live row accounts for: a row's own key while the row is live, or its
    staged key (`service.staged_key`) while the row may still be confirmed. A staged copy of a
    row past pending (a form replayed after confirm) is nobody's, so it goes. One query."""
    old = [obj for obj in page if _aware(obj.last_modified) < cutoff]
    if not old:
        return
    final_of = {obj.ref.key: service.final_key(obj.ref.key) for obj in old}
    rows = MediaUpload.objects.filter(
        provider=provider, key__in=set(final_of.values()), status__in=LIVE_STATUSES
    ).values_list("key", "status")
    live = dict(rows)

    def accounted(key: str) -> bool:
        final = final_of[key]
        if final == key:
            return key in live
        return live.get(final) in STAGED_OWNER_STATUSES

    yield from (obj for obj in old if not accounted(obj.ref.key))
