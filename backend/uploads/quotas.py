"""Per-user upload quotas in constant time: the pending cap and the daily bytes.

Each user has one `UploadQuota` row. A new upload *reserves* with one conditional statement that
checks both limits and moves both counters at once, whatever the number of the user's uploads or
of the table (on PostgreSQL `INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING`, which
takes the row lock, so the cap is exact under concurrency; elsewhere a conditional UPDATE).

A reservation is released when its row leaves `pending` (confirmed, failed, expired, deleted,
aborted): the service that wins the row's conditional status UPDATE calls `release`, so each exit
releases exactly once however many actors race. Daily bytes are counted per UTC day: a row counts
its `quota_bytes` (the declared size, or the policy maximum while a sizeless upload is pending,
trued up when it leaves `pending`) on the day it was created.

`recount` re-derives every counter from the rows (the cleanup job runs it): a counter that
drifted (a process killed between reserving and inserting, a row changed behind the service's
back) heals on the next run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
    sql,
)
from django.db.models.fields import Field
from django.db.models.functions import Coalesce, Greatest

from backend.core.errors import QuotaExceeded
from backend.uploads.models import MediaUpload, UploadQuota, UploadStatus

_BIG = BigIntegerField()


def utc_today() -> date:
    return datetime.now(UTC).date()


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


@dataclass(frozen=True)
class Limits:
    max_pending: int
    max_bytes_per_day: int


# Positional parameters, in `_reserve_params` order: the same text runs alone (`reserve`) and
# inside the one-statement INSERT (`insert_reserved`), whose compiled INSERT uses `%s` too.
_PG_RESERVE = """
INSERT INTO {table} AS q (owner_id, pending_count, day, day_bytes)
VALUES (%s, 1, %s, %s)
ON CONFLICT (owner_id) DO UPDATE SET
    pending_count = q.pending_count + 1,
    day = EXCLUDED.day,
    day_bytes = (CASE WHEN q.day = EXCLUDED.day THEN q.day_bytes ELSE 0 END) + EXCLUDED.day_bytes
WHERE q.pending_count < %s
  AND (CASE WHEN q.day = EXCLUDED.day THEN q.day_bytes ELSE 0 END) + EXCLUDED.day_bytes
      <= %s
RETURNING q.pending_count
"""


def _pg_reserve_sql() -> str:
    return _PG_RESERVE.format(table=connection.ops.quote_name(UploadQuota._meta.db_table))


def _reserve_params(owner_id: Any, day: date, nbytes: int, limits: Limits) -> tuple[Any, ...]:
    return (owner_id, day, nbytes, limits.max_pending, limits.max_bytes_per_day)


# The one-statement INSERT's text, built once per process from Django's own compiled INSERT:
# it depends only on the model (columns and `%s` placeholders), never on the values. Compiling
# it per request cost more CPU than the rest of the reservation (measured, docs/performance.md).
_insert_statement: tuple[str, tuple[Field[Any, Any], ...]] | None = None


def _compiled_insert(conn: BaseDatabaseWrapper, row: MediaUpload) -> tuple[str, list[Any]]:
    """Django's INSERT of `row` as (sql, params), the way `row.save(force_insert=True)` would
    send it (`SQLInsertCompiler.as_sql`)."""
    query = sql.InsertQuery(MediaUpload)
    query.insert_values(list(MediaUpload._meta.concrete_fields), [row])
    [(insert_sql, insert_params)] = query.get_compiler(connection=conn).as_sql()
    return insert_sql, list(insert_params)


def _insert_reserved_text(
    conn: BaseDatabaseWrapper, row: MediaUpload
) -> tuple[str, tuple[Field[Any, Any], ...]]:
    global _insert_statement
    if _insert_statement is not None:
        return _insert_statement
    insert_sql, insert_params = _compiled_insert(conn, row)
    head, sep, values = insert_sql.partition(" VALUES (")
    fields = tuple(MediaUpload._meta.concrete_fields)
    if (
        not sep
        or not values.endswith(")")
        or values[:-1].split(", ") != ["%s"] * len(fields)
        or len(insert_params) != len(fields)
    ):  # pragma: no cover - Django's INSERT shape
        raise RuntimeError(f"unexpected INSERT shape: {insert_sql[:80]}")
    # Built from Django's own compiled INSERT and a quoted table name; every value is a
    # parameter.
    statement = "".join(
        (
            "WITH reserved AS (",
            _pg_reserve_sql(),
            ") ",
            head,
            " SELECT ",
            values[:-1],
            " FROM reserved",
        )
    )
    _insert_statement = (statement, fields)
    return _insert_statement


def _insert_params(conn: BaseDatabaseWrapper, row: MediaUpload, fields: Iterable[Any]) -> list[Any]:
    """The INSERT's parameters as SQLInsertCompiler prepares them (`pre_save`, then
    `get_db_prep_save`; auto_now_add fills `created_at` on the row)."""
    return [field.get_db_prep_save(field.pre_save(row, True), connection=conn) for field in fields]


def _insert_reserved_postgres(row: MediaUpload, day: date, nbytes: int, limits: Limits) -> bool:
    """The reservation and the row's INSERT in one statement (one round trip): the INSERT
    selects from the reservation's RETURNING, so a refused reservation inserts nothing."""
    conn = connections[DEFAULT_DB_ALIAS]
    statement, fields = _insert_reserved_text(conn, row)
    params = (
        *_reserve_params(row.owner_id, day, nbytes, limits),
        *_insert_params(conn, row, fields),
    )
    with conn.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount == 1


def _reserve_postgres(owner_id: Any, day: date, nbytes: int, limits: Limits) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(_pg_reserve_sql(), _reserve_params(owner_id, day, nbytes, limits))
        return cursor.fetchone() is not None


def _reserve_orm(owner_id: Any, day: date, nbytes: int, limits: Limits) -> bool:
    """The same semantics with the ORM: one conditional UPDATE (a first reservation inserts
    the counter row, ignoring a conflict, and tries again)."""
    room = limits.max_bytes_per_day - nbytes

    def conditional_update() -> bool:
        return bool(
            UploadQuota.objects.filter(owner_id=owner_id, pending_count__lt=limits.max_pending)
            .filter(Q(day=day, day_bytes__lte=room) | ~Q(day=day))
            .update(
                pending_count=F("pending_count") + 1,
                day_bytes=Case(
                    When(day=day, then=F("day_bytes") + nbytes),
                    default=Value(nbytes),
                    output_field=BigIntegerField(),
                ),
                day=day,
            )
        )

    if conditional_update():
        return True
    # No counter row yet, or no room. Make sure the row exists without an error or a savepoint
    # to roll back (INSERT … ON CONFLICT DO NOTHING / INSERT OR IGNORE: a request racing ours
    # may insert it first), then decide on the row as it is now.
    UploadQuota.objects.bulk_create(
        [UploadQuota(owner_id=owner_id, pending_count=0, day=day, day_bytes=0)],
        ignore_conflicts=True,
    )
    return conditional_update()


def _refusal(owner_id: Any, day: date, nbytes: int, limits: Limits) -> QuotaExceeded:
    row = UploadQuota.objects.filter(owner_id=owner_id).first()
    pending = row.pending_count if row else 0
    used = row.day_bytes if row and row.day == day else 0
    if pending >= limits.max_pending:
        return QuotaExceeded(
            f"You have {pending} unconfirmed uploads; at most {limits.max_pending} may be "
            "pending at once. Confirm or delete some, or wait for them to expire.",
            code="too_many_pending_uploads",
            details={"pending": pending, "max_pending_uploads": limits.max_pending},
        )
    return QuotaExceeded(
        f"This upload of {nbytes} bytes would bring today's uploads (UTC) to {used + nbytes} "
        f"bytes; the limit is {limits.max_bytes_per_day} bytes per day.",
        code="daily_quota_exceeded",
        details={
            "used_bytes_today": used,
            "requested_bytes": nbytes,
            "max_bytes_per_day": limits.max_bytes_per_day,
        },
    )


def _refuse_if_never_fits(owner_id: Any, day: date, nbytes: int, limits: Limits) -> None:
    """Refuse without a reservation what no counter state could admit."""
    if nbytes > limits.max_bytes_per_day or limits.max_pending < 1:
        raise _refusal(owner_id, day, nbytes, limits)


def reserve(owner_id: Any, nbytes: int, limits: Limits) -> date:
    """Count one more pending upload of `nbytes` for today, or raise QuotaExceeded (429).
    One statement when it fits. Returns the UTC day the bytes were counted on."""
    day = utc_today()
    _refuse_if_never_fits(owner_id, day, nbytes, limits)
    reserve_one = _reserve_postgres if connection.vendor == "postgresql" else _reserve_orm
    if not reserve_one(owner_id, day, nbytes, limits):
        raise _refusal(owner_id, day, nbytes, limits)
    return day


def release(owner_id: Any, *, day: date, pending: int = 1, bytes_delta: int = 0) -> None:
    """`pending` reservations left `pending`; their rows (created on `day`) now count
    `bytes_delta` more bytes (negative: fewer). One UPDATE; never below zero."""
    if not pending and not bytes_delta:
        return
    UploadQuota.objects.filter(owner_id=owner_id).update(
        pending_count=Greatest(F("pending_count") - pending, Value(0), output_field=_BIG),
        day_bytes=Case(
            When(day=day, then=Greatest(F("day_bytes") + bytes_delta, Value(0), output_field=_BIG)),
            default=F("day_bytes"),
            output_field=_BIG,
        ),
    )


def release_row(row: MediaUpload, new_quota_bytes: int) -> None:
    """`row` (as read before its transition) just left `pending`, now counting
    `new_quota_bytes` (already written to the row by the winning UPDATE)."""
    release(
        row.owner_id,
        day=day_of(row.created_at),
        bytes_delta=new_quota_bytes - int(row.quota_bytes or 0),
    )


def exit_quota_bytes(row: MediaUpload) -> int:
    """What a row leaving `pending` other than by finalising counts from then on."""
    return int(row.declared_size or 0)


def release_rows(rows: Iterable[Mapping[str, Any]]) -> None:
    """Rows (dicts with owner_id, created_at, quota_bytes, declared_size) that left `pending`
    together (the cleanup's claim, which wrote `quota_bytes = declared_size or 0`)."""
    totals: dict[tuple[Any, date], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        entry = totals[(row["owner_id"], day_of(row["created_at"]))]
        entry[0] += 1
        entry[1] += int(row["declared_size"] or 0) - int(row["quota_bytes"] or 0)
    for (owner_id, day), (count, delta) in totals.items():
        release(owner_id, day=day, pending=count, bytes_delta=delta)


@contextmanager
def reservation(owner_id: Any, nbytes: int, limits: Limits) -> Iterator[None]:
    """Reserve, run the body (sign, INSERT); if the body fails, give the reservation back."""
    day = reserve(owner_id, nbytes, limits)
    try:
        yield
    except BaseException:
        release(owner_id, day=day, bytes_delta=-nbytes)
        raise


def insert_reserved(row: MediaUpload, nbytes: int, limits: Limits) -> None:
    """INSERT the new pending `row` if the reservation of `nbytes` fits, else QuotaExceeded.
    On PostgreSQL one statement; elsewhere a reservation, then the INSERT (given back if the
    INSERT fails)."""
    if connections[DEFAULT_DB_ALIAS].vendor != "postgresql":
        with reservation(row.owner_id, nbytes, limits):
            row.save(force_insert=True)
        return
    day = utc_today()
    _refuse_if_never_fits(row.owner_id, day, nbytes, limits)
    if not _insert_reserved_postgres(row, day, nbytes, limits):
        raise _refusal(row.owner_id, day, nbytes, limits)
    row._state.adding = False
    row._state.db = DEFAULT_DB_ALIAS


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def recount() -> int:
    """Re-derive every user's counters from the rows (the cleanup job). Returns the number of
    counter rows written. Two statements over the table, whatever drifted."""
    day = utc_today()
    start, end = _day_start(day), _day_start(day + timedelta(days=1))
    owners = (
        MediaUpload.objects.filter(Q(status=UploadStatus.PENDING) | Q(created_at__gte=start))
        .values_list("owner_id", flat=True)
        .distinct()
    )
    missing = set(owners) - set(UploadQuota.objects.values_list("owner_id", flat=True))
    UploadQuota.objects.bulk_create(
        [UploadQuota(owner_id=owner, day=day) for owner in missing], ignore_conflicts=True
    )
    of_owner = (
        MediaUpload.objects.filter(owner_id=OuterRef("owner_id")).order_by().values("owner_id")
    )
    pending = of_owner.filter(status=UploadStatus.PENDING).annotate(n=Count("id")).values("n")
    today = (
        of_owner.filter(created_at__gte=start, created_at__lt=end)
        .annotate(b=Sum("quota_bytes"))
        .values("b")
    )
    return UploadQuota.objects.update(
        pending_count=Coalesce(Subquery(pending), Value(0), output_field=_BIG),
        day_bytes=Coalesce(Subquery(today), Value(0), output_field=_BIG),
        day=day,
    )


def counters_of(owner_id: Any) -> tuple[int, int]:
    """(pending_count, bytes counted today) as the counters say (0, 0 without a row)."""
    row = UploadQuota.objects.filter(owner_id=owner_id).first()
    if row is None:
        return 0, 0
    return row.pending_count, row.day_bytes if row.day == utc_today() else 0


def counted_from_rows(owner_id: Any) -> tuple[int, int]:
    """The same re-derived from the rows (what `recount` writes)."""
    start = _day_start(utc_today())
    usage = MediaUpload.objects.filter(owner_id=owner_id).aggregate(
        pending=Count("id", filter=Q(status=UploadStatus.PENDING)),
        today=Sum("quota_bytes", filter=Q(created_at__gte=start)),
    )
    return int(usage["pending"] or 0), int(usage["today"] or 0)
