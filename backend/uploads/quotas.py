"""Per-user upload quotas in constant time: the pending cap and the daily bytes.

Two stores of the same counters (QUOTA_COUNTERS):

- `database`: each user has one `UploadQuota` row. A new upload *reserves* with one conditional
  statement that checks both limits and moves both counters at once, whatever the number of the
  user's uploads or of the table (on PostgreSQL `INSERT ... ON CONFLICT DO UPDATE ... WHERE ...
  RETURNING`, which takes the row lock, so the cap is exact under concurrency, and the row's
  INSERT rides in the same statement; elsewhere a conditional UPDATE).
- `redis` (the default where the throttles live in Redis): one hash per user, moved by one Lua
  script, atomic in Redis, so the cap is exact under concurrency. The create endpoint's throttle
  check runs in the same script (one round trip for both, `backend.core.throttling.defer`), and
  PostgreSQL sees only the row's INSERT. A counter Redis does not have (a user's first upload,
  a Redis that lost its data, an idle user's expired hash) is seeded from the rows by the
  script's caller before it reserves.

A reservation is released when its row leaves `pending` (confirmed, failed, expired, deleted,
aborted): the service that wins the row's conditional status UPDATE calls `release`, so each exit
releases exactly once however many actors race. Daily bytes are counted per UTC day: a row counts
its `quota_bytes` (the declared size, or the policy maximum while a sizeless upload is pending,
trued up when it leaves `pending`) on the day it was created.

`recount` re-derives every counter from the rows (the cleanup job runs it): a counter that
drifted (a process killed between reserving and inserting, a row changed behind the service's
back) heals on the next run. In Redis a drifted hash is deleted, to be seeded afresh from the
rows, and only when it has not moved for a request's lifetime, so a reservation whose INSERT is
still on its way is never mistaken for drift. One case stays inexact until that run: a hash lost
(or healed) while a reservation made on it had not inserted its row yet is seeded without it.
"""

from __future__ import annotations

import functools
import logging
import time as clock
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    sql,
)
from django.db.models.fields import Field
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from backend.core import throttling
from backend.core.errors import QuotaExceeded
from backend.uploads.models import MediaUpload, UploadQuota, UploadStatus

logger = logging.getLogger(__name__)

_BIG = BigIntegerField()


def in_redis() -> bool:
    """Whether the counters live in Redis (QUOTA_COUNTERS=redis) rather than in the database."""
    return settings.QUOTA_COUNTERS == "redis"


def utc_today() -> date:
    return datetime.now(UTC).date()


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


@dataclass(frozen=True)
class Limits:
    max_pending: int
    max_bytes_per_day: int


# Positional parameters, in `_reserve_params` order: the same text runs alone (`reserve`) and
# inside the one-statement INSERT (`_insert_in_database`), whose compiled INSERT uses `%s` too.
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
_insert_statement: str | None = None


def _compiled_insert(conn: BaseDatabaseWrapper, row: MediaUpload) -> tuple[str, list[Any]]:
    """Django's INSERT of `row` as (sql, params), the way `row.save(force_insert=True)` would
    send it (`SQLInsertCompiler.as_sql`)."""
    query = sql.InsertQuery(MediaUpload)
    query.insert_values(list(MediaUpload._meta.concrete_fields), [row])
    [(insert_sql, insert_params)] = query.get_compiler(connection=conn).as_sql()
    return insert_sql, list(insert_params)


def _insert_reserved_text(conn: BaseDatabaseWrapper, row: MediaUpload) -> str:
    global _insert_statement
    if _insert_statement is not None:
        return _insert_statement
    insert_sql, insert_params = _compiled_insert(conn, row)
    head, sep, values = insert_sql.partition(" VALUES (")
    columns = len(_column_plan())  # what _insert_params sends, in this order
    if (
        not sep
        or not values.endswith(")")
        or values[:-1].split(", ") != ["%s"] * columns
        or len(insert_params) != columns
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
    _insert_statement = statement
    return statement


# How `_insert_params` prepares each column, by its field's exact class (a subclass may prepare
# differently, so it goes through Django).
_TEXT, _UUID, _INTEGER, _DATETIME, _CLOCK, _DJANGO = range(6)
_INTEGER_FIELDS = (
    models.SmallIntegerField,
    models.IntegerField,
    models.BigIntegerField,
    models.PositiveSmallIntegerField,
    models.PositiveIntegerField,
    models.PositiveBigIntegerField,
)


@functools.cache
def _column_plan() -> tuple[tuple[Field[Any, Any], str, int, str], ...]:
    """Each concrete column of MediaUpload, in INSERT order: its field, attname, how it is
    prepared, and the field's internal type."""
    plan = []
    for field in MediaUpload._meta.concrete_fields:
        kind, cls = _DJANGO, type(field)
        if cls is models.DateTimeField:
            clock_column = field.auto_now or field.auto_now_add  # type: ignore[attr-defined]
            kind = _CLOCK if clock_column else _DATETIME
        elif cls is models.CharField:
            kind = _TEXT
        elif cls is models.UUIDField:
            kind = _UUID
        elif cls in _INTEGER_FIELDS:
            kind = _INTEGER
        plan.append((field, field.attname, kind, field.get_internal_type()))
    return tuple(plan)


def _insert_params(conn: BaseDatabaseWrapper, row: MediaUpload) -> list[Any]:
    """The INSERT's parameters, what SQLInsertCompiler sends for `row` (each field's
    `pre_save`, then `get_db_prep_save`; the auto_now(_add) columns get the clock, on the row
    too), in MediaUpload._meta.concrete_fields order.

    The common values take the steps those methods take for them, inline: a str for a
    CharField as is; a UUID as is (or its hex where the database has no uuid type); an int
    through the backend's `adapt_integerfield_value` (psycopg's Int8 on PostgreSQL); an aware
    datetime through `adapt_datetimefield_value`; None as None. Anything else (a naive
    datetime, a JSON value, a foreign key, another field class) goes through Django's own
    `get_db_prep_save`. Django's per-field path took 20 µs a row on the bench VM, this one
    6.5 µs (docs/performance.md, ninth round; tests/uploads/test_quotas.py compares the two on
    each database)."""
    ops = conn.ops
    native_uuid = conn.features.has_native_uuid_field
    now = None
    params: list[Any] = []
    for field, attname, kind, internal_type in _column_plan():
        if kind == _CLOCK:
            if now is None:
                now = timezone.now()
            setattr(row, attname, now)
            value: Any = now
            kind = _DATETIME
        else:
            value = getattr(row, attname)
        if value is None and kind != _DJANGO:
            params.append(None)
        elif kind == _TEXT and isinstance(value, str):
            params.append(value)
        elif kind == _UUID and isinstance(value, uuid.UUID):
            params.append(value if native_uuid else value.hex)
        elif kind == _INTEGER and type(value) is int:
            params.append(ops.adapt_integerfield_value(value, internal_type))
        elif kind == _DATETIME and isinstance(value, datetime) and value.utcoffset() is not None:
            params.append(ops.adapt_datetimefield_value(value))
        else:
            params.append(field.get_db_prep_save(value, connection=conn))
    return params


def _insert_reserved_postgres(row: MediaUpload, day: date, nbytes: int, limits: Limits) -> bool:
    """The reservation and the row's INSERT in one statement (one round trip): the INSERT
    selects from the reservation's RETURNING, so a refused reservation inserts nothing."""
    conn = connections[DEFAULT_DB_ALIAS]
    statement = _insert_reserved_text(conn, row)
    params = (
        *_reserve_params(row.owner_id, day, nbytes, limits),
        *_insert_params(conn, row),
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
    if in_redis():
        pending, used = counters_of(owner_id)
    else:
        row = UploadQuota.objects.filter(owner_id=owner_id).first()
        pending = row.pending_count if row else 0
        used = row.day_bytes if row and row.day == day else 0
    return _refusal_of(pending, used, nbytes, limits)


def _refusal_of(pending: int, used: int, nbytes: int, limits: Limits) -> QuotaExceeded:
    """The 429 for counters at (`pending`, bytes `used` today) refusing `nbytes` more."""
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
    if in_redis():
        _RedisReservation(owner_id, day, nbytes, limits, None).wait()
        return day
    reserve_one = _reserve_postgres if connection.vendor == "postgresql" else _reserve_orm
    if not reserve_one(owner_id, day, nbytes, limits):
        raise _refusal(owner_id, day, nbytes, limits)
    return day


def release(owner_id: Any, *, day: date, pending: int = 1, bytes_delta: int = 0) -> None:
    """`pending` reservations left `pending`; their rows (created on `day`) now count
    `bytes_delta` more bytes (negative: fewer). One UPDATE; never below zero."""
    if not pending and not bytes_delta:
        return
    if in_redis():
        # After the commit of the transition that released it (a rolled-back one releases
        # nothing). A Redis that cannot be reached leaves the counter high until the cleanup's
        # recount: robust, so the caller's committed answer stands.
        transaction.on_commit(
            lambda: _redis_release(owner_id, day, pending, bytes_delta), robust=True
        )
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
        if in_redis():
            _give_back(owner_id, day, nbytes)  # now: Redis is not rolled back with the body
        else:
            release(owner_id, day=day, bytes_delta=-nbytes)
        raise


def insert_reserved(row: MediaUpload, nbytes: int, limits: Limits) -> None:
    """INSERT the new pending `row` if the reservation of `nbytes` fits, else QuotaExceeded
    (`reserving`, with nothing to sign in between)."""
    with reserving(row.owner_id, nbytes, limits) as held:
        held.insert(row)


def _insert_in_database(row: MediaUpload, day: date, nbytes: int, limits: Limits) -> None:
    """The database store's reservation and INSERT (limits that never fit already refused).
    On PostgreSQL one statement; elsewhere a reservation, then the INSERT (given back if the
    INSERT fails)."""
    if connections[DEFAULT_DB_ALIAS].vendor != "postgresql":
        with reservation(row.owner_id, nbytes, limits):
            row.save(force_insert=True)
        return
    if not _insert_reserved_postgres(row, day, nbytes, limits):
        raise _refusal(row.owner_id, day, nbytes, limits)
    row._state.adding = False
    row._state.db = DEFAULT_DB_ALIAS


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def recount() -> int:
    """Re-derive every user's counters from the rows (the cleanup job). Returns the number of
    counter rows written (in Redis: hashes found drifted and deleted, to be seeded afresh).
    Two statements over the table, whatever drifted."""
    if in_redis():
        return _recount_redis()
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
    if in_redis():
        pending, day, used = _redis().hmget(_redis_key(owner_id), "p", "d", "b")
        if pending is None:
            return 0, 0
        return int(pending), int(used or 0) if day == utc_today().isoformat().encode() else 0
    row = UploadQuota.objects.filter(owner_id=owner_id).first()
    if row is None:
        return 0, 0
    return row.pending_count, row.day_bytes if row.day == utc_today() else 0


def _counting(rows: QuerySet[MediaUpload], start: datetime) -> QuerySet[MediaUpload]:
    """The rows that count against a quota: pending ones, and those created since `start`."""
    return rows.filter(Q(status=UploadStatus.PENDING) | Q(created_at__gte=start))


def _usage(start: datetime) -> dict[str, Any]:
    """The counters as aggregates over `_counting` rows: pending, bytes since `start`."""
    return {
        "pending": Count("id", filter=Q(status=UploadStatus.PENDING)),
        "today": Sum("quota_bytes", filter=Q(created_at__gte=start)),
    }


def counted_from_rows(owner_id: Any) -> tuple[int, int]:
    """The same re-derived from the rows (what `recount` writes)."""
    start = _day_start(utc_today())
    usage = _counting(MediaUpload.objects.filter(owner_id=owner_id), start).aggregate(
        **_usage(start)
    )
    return int(usage["pending"] or 0), int(usage["today"] or 0)


# --- the counters in Redis (QUOTA_COUNTERS=redis) -------------------------------------------------

# A hash lives this long after its last change: an idle user's counters go, and are seeded from
# the rows again on the next upload (a pending upload expires, and is released, well before).
_HASH_TTL_MS = 2 * 24 * 3600 * 1000

# KEYS[1] the user's hash {p: pending, d: day counted, b: bytes counted on d, t: last change (ms)};
# KEYS[2] (optional) the request's throttle window.
# ARGV: day, nbytes, max_pending, max_bytes, now (ms), ttl (ms), seed pending, seed bytes ('' =
# no seed); with KEYS[2] also the window's now, duration, limit.
# Returns {status, a, b}: 0 reserved {pending, bytes today} after it; 1 throttled {entries in the
# window, oldest timestamp}; 2 refused {pending, bytes today}; 3 no hash and no seed {0, 0}.
# The throttle is checked first and records the request unless it is throttled or the hash is
# missing (the caller seeds and runs the script again), as DRF's check before the view would.
_RESERVE = throttling.Script(
    throttling.WINDOW_FUNCTIONS
    + """
local q, w = KEYS[1], KEYS[2]
local day = ARGV[1]
if w then
  local count = window_count(w, tonumber(ARGV[9]), tonumber(ARGV[10]))
  if count >= tonumber(ARGV[11]) then return {1, count, window_oldest(w)} end
end
local v = redis.call('HMGET', q, 'p', 'd', 'b')
local pending, used = 0, 0
if not v[1] then
  if ARGV[7] == '' then return {3, 0, 0} end
  pending, used = tonumber(ARGV[7]), tonumber(ARGV[8])
else
  pending = tonumber(v[1])
  if v[2] == day then used = tonumber(v[3]) or 0 end
end
local status = 0
if pending >= tonumber(ARGV[3]) or used + tonumber(ARGV[2]) > tonumber(ARGV[4]) then
  status = 2
else
  pending, used = pending + 1, used + tonumber(ARGV[2])
end
if status == 0 or not v[1] then
  -- %d: whole numbers as digits (a plain Lua number could be written as 1e+14).
  redis.call('HSET', q, 'p', string.format('%d', pending), 'd', day,
    'b', string.format('%d', used), 't', ARGV[5])
end
redis.call('PEXPIRE', q, ARGV[6])
if w then window_add(w, ARGV[9], tonumber(ARGV[10])) end
return {status, pending, used}
"""
)

# KEYS[1] the user's hash; ARGV: pending released, day of the rows, bytes delta, now (ms), ttl.
# Never below zero; a missing hash is left missing (its seed will read the rows as they are).
_RELEASE = throttling.Script(
    """
local q = KEYS[1]
local v = redis.call('HMGET', q, 'p', 'd', 'b')
if not v[1] then return 0 end
local pending = math.max(0, tonumber(v[1]) - tonumber(ARGV[1]))
local used = tonumber(v[3]) or 0
if v[2] == ARGV[2] then used = math.max(0, used + tonumber(ARGV[3])) end
redis.call('HSET', q, 'p', string.format('%d', pending), 'b', string.format('%d', used),
  't', ARGV[4])
redis.call('PEXPIRE', q, ARGV[5])
return 1
"""
)

# KEYS[1] the user's hash; ARGV: pending and bytes the rows give, today, cutoff (ms).
# Deletes the hash when it disagrees with the rows and has not changed since the cutoff.
_HEAL = throttling.Script(
    """
local q = KEYS[1]
local v = redis.call('HMGET', q, 'p', 'd', 'b', 't')
if not v[1] then return 0 end
if (tonumber(v[4]) or 0) > tonumber(ARGV[4]) then return 0 end
local used = 0
if v[2] == ARGV[3] then used = tonumber(v[3]) or 0 end
if tonumber(v[1]) == tonumber(ARGV[1]) and used == tonumber(ARGV[2]) then return 0 end
redis.call('DEL', q)
return 1
"""
)


def _redis() -> Any:
    """A redis-py client on the throttles' server (for the cold paths: reads, scans)."""
    return _redis_client(settings.THROTTLE_REDIS_URL, settings.THROTTLE_REDIS_TIMEOUT_SECONDS)


@functools.lru_cache(maxsize=4)
def _redis_client(url: str, timeout: float) -> Any:
    # One per URL and process (redis-py's pool starts afresh in a forked child).
    import redis

    return redis.Redis.from_url(url, socket_timeout=timeout)


def _redis_key(owner_id: Any) -> str:
    return f"{settings.THROTTLE_KEY_PREFIX}quota:{owner_id}"


def _now_ms() -> int:
    return int(clock.time() * 1000)


class _RedisReservation:
    """One reservation in Redis, sent at once (with the request's deferred throttle check) and
    read by `wait()`, so that the caller signs while Redis answers."""

    def __init__(
        self,
        owner_id: Any,
        day: date,
        nbytes: int,
        limits: Limits,
        throttle: throttling.DeferredThrottle | None,
    ) -> None:
        self.owner_id, self.day, self.nbytes, self.limits = owner_id, day, nbytes, limits
        self.check = throttle.check if throttle is not None and not throttle.settled else None
        self.throttle = throttle
        self.reserved = False
        self.waited = False
        self._sent = self._send(seed=("", ""))

    def _send(self, seed: tuple[Any, Any]) -> throttling.Sent:
        keys = [_redis_key(self.owner_id)]
        args: list[Any] = [
            self.day.isoformat(),
            self.nbytes,
            self.limits.max_pending,
            self.limits.max_bytes_per_day,
            _now_ms(),
            _HASH_TTL_MS,
            *seed,
        ]
        if self.check is not None:
            keys.append(self.check.key)
            args.extend(self.check.args())
        return throttling.redis_scripts().send(_RESERVE, keys, args)

    def wait(self) -> None:
        """The answer: reserved, or Throttled / QuotaExceeded (429). Read once."""
        self.waited = True
        status, first, second = self._sent.result()
        if status == 3:  # no counters in Redis: seed them from the rows, then reserve
            self._sent = self._send(seed=counted_from_rows(self.owner_id))
            status, first, second = self._sent.result()
        if self.check is not None and self.throttle is not None:
            self.throttle.settle(status != 1, first, second)  # raises Throttled
        if status == 2:
            raise _refusal_of(int(first), int(second), self.nbytes, self.limits)
        self.reserved = True

    def give_back(self) -> None:
        if self.reserved:
            self.reserved = False
            _give_back(self.owner_id, self.day, self.nbytes)


def _redis_release(owner_id: Any, day: date, pending: int, bytes_delta: int) -> None:
    throttling.redis_scripts().run(
        _RELEASE,
        [_redis_key(owner_id)],
        [pending, day.isoformat(), bytes_delta, _now_ms(), _HASH_TTL_MS],
    )


def _give_back(owner_id: Any, day: date, nbytes: int) -> None:
    """Undo a reservation whose row was never inserted. A Redis that cannot be reached leaves
    the counter high until the cleanup's recount; the caller's own error is what it answers."""
    try:
        _redis_release(owner_id, day, 1, -nbytes)
    except Exception:
        logger.warning("quota reservation of user %s not given back", owner_id, exc_info=True)


def _recount_redis() -> int:
    """Delete each hash that disagrees with the rows and has not changed for a request's
    lifetime (seeded afresh on the user's next upload). Returns the number deleted."""
    client = _redis()
    prefix = _redis_key("")
    # Rows read now include every row whose reservation is older than this.
    grace_ms = 2 * settings.GUNICORN_TIMEOUT * 1000
    cutoff = _now_ms() - grace_ms
    today = utc_today()
    start = _day_start(today)
    healed = 0
    batch: list[str] = []

    def heal(keys: list[str]) -> int:
        keys = [key for key in keys if key[len(prefix) :].isdigit()]
        owners = [int(key[len(prefix) :]) for key in keys]
        rows = _counting(MediaUpload.objects.filter(owner_id__in=owners), start)
        # Typed as mappings: the stubs cannot see annotations passed as **kwargs.
        per_owner: Iterable[Mapping[str, Any]] = (
            rows.values("owner_id").order_by().annotate(**_usage(start))
        )
        counted = {
            entry["owner_id"]: (entry["pending"], entry["today"] or 0) for entry in per_owner
        }
        scripts = throttling.redis_scripts()
        deleted = 0
        for key, owner in zip(keys, owners, strict=True):
            pending, used = counted.get(owner, (0, 0))
            deleted += scripts.run(_HEAL, [key], [pending, used, today.isoformat(), cutoff])
        return deleted

    for raw in client.scan_iter(match=prefix + "*", count=1000):
        batch.append(raw.decode())
        if len(batch) == 500:
            healed += heal(batch)
            batch = []
    if batch:
        healed += heal(batch)
    return healed


# --- creating an upload ---------------------------------------------------------------------------


class Reservation:
    """The quota reservation of a new upload being created (`reserving`): `insert(row)` inserts
    its `pending` row if the quota (and the deferred throttle) admit it."""

    def __init__(
        self,
        owner_id: Any,
        nbytes: int,
        limits: Limits,
        throttle: throttling.DeferredThrottle | None,
    ) -> None:
        self.nbytes, self.limits = nbytes, limits
        self.day = utc_today()
        _refuse_if_never_fits(owner_id, self.day, nbytes, limits)
        self._redis = None
        if in_redis():
            self._redis = _RedisReservation(owner_id, self.day, nbytes, limits, throttle)
        elif throttle is not None:
            throttle.run_alone()
        self.inserted = False

    def insert(self, row: MediaUpload) -> None:
        if self._redis is None:
            _insert_in_database(row, self.day, self.nbytes, self.limits)
        else:
            self._redis.wait()
            try:
                _insert(row)
            except BaseException:
                self._redis.give_back()
                raise
        self.inserted = True

    def abandon(self) -> None:
        """The body failed before `insert`: read Redis's answer (Throttled wins, as DRF would
        have refused before the body ran) and give a reservation made back."""
        if self._redis is None or self.inserted:
            return
        if not self._redis.waited:
            try:
                self._redis.wait()
            except QuotaExceeded:
                return
        self._redis.give_back()

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if error is not None:
            self.abandon()


def reserving(
    owner_id: Any,
    nbytes: int,
    limits: Limits,
    throttle: throttling.DeferredThrottle | None = None,
) -> Reservation:
    """Reserve `nbytes` and one pending upload for a new row, as a context manager: the body
    signs, then calls `insert(row)`. In Redis the reservation (and `throttle`, a deferred check)
    is sent on entry and read by `insert`, so the body's work overlaps Redis's answer; in the
    database it is the one statement of `_insert_in_database`. A body that fails gives the
    reservation back."""
    return Reservation(owner_id, nbytes, limits, throttle)


# The plain INSERT's text, built once per process from Django's compiled INSERT (the same reason
# as `_insert_reserved_text`).
_plain_insert: str | None = None


def _insert(row: MediaUpload) -> None:
    """INSERT `row` as `row.save(force_insert=True)` would, with its text compiled once."""
    global _plain_insert
    conn = connections[DEFAULT_DB_ALIAS]
    if _plain_insert is None:
        insert_sql, insert_params = _compiled_insert(conn, row)
        if len(insert_params) != len(_column_plan()):  # pragma: no cover - Django's INSERT shape
            raise RuntimeError(f"unexpected INSERT shape: {insert_sql[:80]}")
        _plain_insert = insert_sql
    with conn.cursor() as cursor:
        cursor.execute(_plain_insert, _insert_params(conn, row))
    row._state.adding = False
    row._state.db = DEFAULT_DB_ALIAS
