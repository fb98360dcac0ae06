"""The presign path as deployed, against a same-stack floor: gunicorn + PostgreSQL + Redis + wrk.

One command (`make bench-http`): starts gunicorn with the shipped gunicorn.conf.py and
production settings (DEBUG off, Redis cache, PostgreSQL in a separate bench database, the
throttle on at rates the bench cannot reach) on a loopback port, creates the bench users and
their tokens, and drives with wrk (a Lua script rotating over the tokens), in interleaved rounds:
the floor (DRF token auth + one INSERT + JSON, bench/httpstack/floor_urls.py), POST
/api/v1/uploads/ with S3 active, the floor, POST /api/v1/uploads/ with Cloudinary active, the
floor, the floor plus one Redis round trip (what presign's throttle costs by itself), the floor,
the floor plus presign's audit log line (what that line costs by itself), ...
Prints req/s, p50/p99 latency, server CPU ms per request (gunicorn master + workers and the
bench database's PostgreSQL backends, from /proc) and the ratios to the floor (also paired with
the neighbouring floor rounds, and presign's against the floor + Redis trip's), and beside them
the local Redis server's CPU ms per request (the throttle windows and, with QUOTA_COUNTERS=redis,
the quota counters: not in the ratio, but taken from the same cores) and the machine's idle and
I/O-wait ms per request (all cores: a round that stalls on the disk, PostgreSQL's commit flushes,
shows there, with fewer req/s); then seeds 100 000 existing rows for the benchmarked users and
does it again.

Signing is local for both providers (fake credentials and bucket): no network beyond loopback.

Environment (all optional): BENCH_DATABASE_URL (default: TEST_POSTGRES_URL's server, database
`<name>_bench`), BENCH_REDIS_URL (default TEST_REDIS_URL), BENCH_PORT (default: the first free
port of TEST_PORT_RANGE), BENCH_USERS (100), BENCH_ROUNDS (3), BENCH_SECONDS (5 per round),
BENCH_CONNECTIONS (16), BENCH_THREADS (2), BENCH_SEED_ROWS (100000), GUNICORN_* (gunicorn.conf.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.httpstack import bench_database_url  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    if os.environ.get("BENCH_PORT"):
        return int(os.environ["BENCH_PORT"])
    from devtools.ports import free_port

    return free_port()


DATABASE_URL = bench_database_url("_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL") or os.environ.get(
    "TEST_REDIS_URL", "redis://127.0.0.1:6379/0"
)
PORT = _free_port()
USERS = int(os.environ.get("BENCH_USERS", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
SEED_ROWS = int(os.environ.get("BENCH_SEED_ROWS", "100000"))

SERVER_ENV = {
    "DJANGO_SETTINGS_MODULE": "bench.httpstack.settings",
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "bench-" + uuid.uuid4().hex,
    "DJANGO_ENV_FILE": "/nonexistent/.env",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "CACHE_URL": REDIS_URL + ("&" if "?" in REDIS_URL else "?") + "key_prefix=bench-http",
    # The throttle windows and the quota hashes under the bench's own prefix (cleared with the
    # database in _prepare: hashes counting rows of a dropped database would be stale).
    "THROTTLE_KEY_PREFIX": "bench-http:",
    "AWS_STORAGE_BUCKET_NAME": "bench-bucket",
    "AWS_S3_REGION_NAME": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "AKIDBENCHMARK0000000",
    "AWS_SECRET_ACCESS_KEY": "bench-secret-not-a-real-key",
    "CLOUDINARY_CLOUD_NAME": "bench",
    "CLOUDINARY_API_KEY": "123456789012345",
    "CLOUDINARY_API_SECRET": "bench-secret-not-a-real-key",
    # The throttle stays on, at rates this bench cannot reach.
    "THROTTLE_UPLOAD_CREATE": "100000000/hour",
    "THROTTLE_UPLOAD_CONFIRM": "100000000/hour",
    "GUNICORN_BIND": f"127.0.0.1:{PORT}",
    "GUNICORN_ACCESS_LOG": os.devnull,
    "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
}

BODY = json.dumps({"filename": "photo.png", "content_type": "image/png", "size": 1000})

WRK_SCRIPT = """
local tokens = {}
for line in io.lines("%(tokens)s") do tokens[#tokens + 1] = line end
local counter = 0
local thread_offset = 0
function setup(thread)
  thread:set("thread_offset", math.random(1, #tokens))
end
wrk.method = "POST"
wrk.body = '%(body)s'
function request()
  counter = counter + 1
  local token = tokens[((counter + thread_offset) %% #tokens) + 1]
  return wrk.format(nil, nil, {
    ["Authorization"] = "Token " .. token,
    ["Content-Type"] = "application/json",
    ["Host"] = "127.0.0.1",
  })
end
"""


def _setup_django() -> None:
    os.environ.update(SERVER_ENV)
    import django

    django.setup()


def _ensure_database() -> None:
    import psycopg

    parts = urlsplit(DATABASE_URL)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _prepare() -> list[str]:
    """Migrate, create the users and tokens, set a policy the bench cannot exhaust."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    from backend.core.models import AppConfig

    call_command("migrate", verbosity=0)
    _clear_redis_state()
    user_model = get_user_model()
    users = user_model.objects.bulk_create(
        [user_model(username=f"bench-{i}", password="!") for i in range(USERS)]
    )
    tokens = Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in users])
    config = AppConfig.load()
    config.max_pending_uploads_per_user = 2_000_000_000
    config.max_bytes_per_user_per_day = 10**17
    config.allowed_content_types = ["image/png", "image/jpeg"]
    config.save()
    return [t.key for t in tokens]


def _clear_redis_state() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    stale = list(client.scan_iter(match=SERVER_ENV["THROTTLE_KEY_PREFIX"] + "*", count=1000))
    for start in range(0, len(stale), 1000):
        client.delete(*stale[start : start + 1000])


def _use_provider(name: str) -> None:
    from backend.core.models import AppConfig

    config = AppConfig.load()
    config.provider = name
    config.save()  # clears the shared cache; workers see it within a second
    time.sleep(1.2)


def _seed(rows: int) -> None:
    """`rows` existing uploads for the benchmarked users: mixed statuses, all of today."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from backend.uploads.models import MediaUpload, UploadStatus

    owners = list(get_user_model().objects.filter(username__startswith="bench-"))
    # The same bench runs against older code (before/after numbers): only columns it has.
    extra = (
        {"quota_bytes": 1000}
        if any(f.name == "quota_bytes" for f in MediaUpload._meta.get_fields())
        else {}
    )
    now = timezone.now()
    statuses = [UploadStatus.UPLOADED] * 6 + [UploadStatus.EXPIRED, UploadStatus.DELETED]
    batch: list[MediaUpload] = []
    for i in range(rows):
        upload_id = uuid.uuid4()
        status = statuses[i % len(statuses)]
        batch.append(
            MediaUpload(
                id=upload_id,
                owner=owners[i % len(owners)],
                provider="s3",
                key=f"uploads/seed/{upload_id}.png",
                original_filename="seed.png",
                content_type="image/png",
                declared_size=1000,
                status=status,
                **extra,
                expires_at=now + timedelta(minutes=10),
            )
        )
        if len(batch) == 5000:
            MediaUpload.objects.bulk_create(batch)
            batch = []
    if batch:
        MediaUpload.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


# --- CPU accounting from /proc -----------------------------------------------------------------


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid:
            found.append(int(entry.name))
    return found


def _pg_backends(dbname: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmdline.startswith("postgres: ") and f" {dbname} " in cmdline:
            found.append(int(entry.name))
    return found


def _redis_servers() -> list[int]:
    """Local redis-server processes (the throttle windows and quota counters live there; a
    Redis on another host or in a container is not seen, and its column reads 0)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "redis-server":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _idle_ticks() -> int:
    """The machine's idle and I/O-wait time, all cores (/proc/stat's first line)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[4]) + int(fields[5])


@dataclass
class CpuSample:
    app: dict[int, int]
    pg: dict[int, int]
    redis: dict[int, int]
    idle: int


def _sample(master: int, dbname: str) -> CpuSample:
    app_pids = [master, *_children(master)]
    return CpuSample(
        app={p: _cpu_ticks(p) for p in app_pids},
        pg={p: _cpu_ticks(p) for p in _pg_backends(dbname)},
        redis={p: _cpu_ticks(p) for p in _redis_servers()},
        idle=_idle_ticks(),
    )


def _delta_ms(before: dict[int, int], after: dict[int, int]) -> float:
    ticks = sum(after[p] - before.get(p, 0) for p in after)
    return ticks * 1000.0 / CLK_TCK


# --- wrk ---------------------------------------------------------------------------------------


@dataclass
class Round:
    requests: int
    seconds: float
    non2xx: int
    p50_ms: float
    p99_ms: float
    app_ms: float
    pg_ms: float
    redis_ms: float
    idle_ms: float


def _latency_ms(text: str, label: str) -> float:
    match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _wrk(path: str, script: Path, seconds: int, master: int, dbname: str) -> Round:
    url = f"http://127.0.0.1:{PORT}{path}"
    before = _sample(master, dbname)
    started = time.monotonic()
    out = subprocess.run(
        [
            shutil.which("wrk") or "wrk",
            f"-t{THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    elapsed = time.monotonic() - started
    after = _sample(master, dbname)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Round(
        requests=requests,
        seconds=elapsed,
        non2xx=int(non2xx_match.group(1)) if non2xx_match else 0,
        p50_ms=_latency_ms(out, "50"),
        p99_ms=_latency_ms(out, "99"),
        app_ms=_delta_ms(before.app, after.app),
        pg_ms=_delta_ms(before.pg, after.pg),
        redis_ms=_delta_ms(before.redis, after.redis),
        idle_ms=(after.idle - before.idle) * 1000.0 / CLK_TCK,
    )


@dataclass
class Series:
    name: str
    rounds: list[Round] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return sum(r.requests for r in self.rounds) / sum(r.seconds for r in self.rounds)

    @property
    def cpu_ms(self) -> float:
        total = sum(r.app_ms + r.pg_ms for r in self.rounds)
        return total / sum(r.requests for r in self.rounds)

    @property
    def app_ms(self) -> float:
        return sum(r.app_ms for r in self.rounds) / sum(r.requests for r in self.rounds)

    @property
    def pg_ms(self) -> float:
        return sum(r.pg_ms for r in self.rounds) / sum(r.requests for r in self.rounds)

    @property
    def redis_ms(self) -> float:
        return sum(r.redis_ms for r in self.rounds) / sum(r.requests for r in self.rounds)

    @property
    def idle_ms(self) -> float:
        return sum(r.idle_ms for r in self.rounds) / sum(r.requests for r in self.rounds)

    @property
    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.rounds)

    @property
    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.rounds)

    @property
    def errors(self) -> int:
        return sum(r.non2xx for r in self.rounds)


# Each cycle: the floor before and after every other endpoint.
CYCLE = ("floor", "s3", "floor", "cloudinary", "floor", "floor-redis", "floor", "floor-log")
PATHS = {
    "floor": "/bench/floor/",
    "floor-redis": "/bench/floor-redis/",
    "floor-log": "/bench/floor-log/",
    "s3": "/api/v1/uploads/",
    "cloudinary": "/api/v1/uploads/",
}
# The printed rows, in this order.
LABELS = {
    "floor": "floor",
    "s3": "presign (s3)",
    "cloudinary": "presign (cloudinary)",
    "floor-redis": "floor + Redis trip",
    "floor-log": "floor + audit line",
}
PROVIDERS = ("s3", "cloudinary")  # the presign rounds, each with its provider active


def _phase(title: str, script: Path, master: int, dbname: str) -> dict[str, Series]:
    series = {name: Series(name) for name in LABELS}
    # Warm every path (imports, connections, the providers' clients).
    for name in LABELS:
        if name in PROVIDERS:
            _use_provider(name)
        _wrk(PATHS[name], script, 1, master, dbname)
    order: list[tuple[str, Round]] = []
    for name in (*CYCLE * ROUNDS, "floor"):  # a last floor round closes the last pair
        if name in PROVIDERS:
            _use_provider(name)
        measured = _wrk(PATHS[name], script, SECONDS, master, dbname)
        series[name].rounds.append(measured)
        order.append((name, measured))
    floor = series["floor"]
    print(f"\n== {title} ==")
    print(
        f"{'endpoint':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}"
        f"{'(app':>7}{' + pg)':>8}{'req/s x':>10}{'CPU x':>8}{'non-2xx':>9}{'redis ms':>10}"
        f"{'idle ms':>9}"
    )
    for name, s in series.items():
        print(
            f"{LABELS[name]:<22}{s.rps:>9.0f}{s.p50:>9.2f}{s.p99:>9.2f}{s.cpu_ms:>12.3f}"
            f"{s.app_ms:>7.2f}{s.pg_ms:>8.2f}{s.rps / floor.rps:>10.2f}"
            f"{s.cpu_ms / floor.cpu_ms:>8.2f}{s.errors:>9}{s.redis_ms:>10.3f}{s.idle_ms:>9.3f}"
        )
    # A shared 2-core VM drifts by more than the differences measured here: each round is also
    # compared with the floor rounds run just before and after it, and the median of those
    # paired ratios is printed (less sensitive to a slow minute than the totals above).
    # Beside each median, the middle half of the paired ratios (first to third quartile): the
    # spread a reading carries on this machine. The floor + audit line, which costs nothing the
    # bench resolves, shows it plainly.
    print("paired (median of each round against its neighbouring floor rounds; middle half):")
    for name in (name for name in LABELS if name != "floor"):
        rps, cpu = _paired_ratios(order, name)
        print(f"  {LABELS[name]}: req/s x {_spread(rps)}, CPU x {_spread(cpu)}")
    # The floor has no throttle; presign must make its one Redis round trip (the window is
    # shared by every process). Against the floor that makes the same round trip, cycle by
    # cycle: each one's paired ratio over the floor + Redis trip's paired ratio of that cycle.
    print("paired against the floor + Redis trip (both make the one round trip):")
    redis_rps, redis_cpu = _paired_ratios(order, "floor-redis")
    for name in PROVIDERS:
        rps, cpu = _paired_ratios(order, name)
        rps_x = _spread([a / b for a, b in zip(rps, redis_rps, strict=True)])
        cpu_x = _spread([a / b for a, b in zip(cpu, redis_cpu, strict=True)])
        print(f"  {LABELS[name]}: req/s x {rps_x}, CPU x {cpu_x}")
    return series


def _spread(ratios: list[float]) -> str:
    """'median (first quartile-third quartile)' of paired ratios; the median alone for fewer
    than four."""
    if len(ratios) < 4:
        return f"{statistics.median(ratios):.2f}"
    low, middle, high = statistics.quantiles(ratios, n=4)
    return f"{middle:.2f} ({low:.2f}-{high:.2f})"


def _paired_ratios(order: list[tuple[str, Round]], name: str) -> tuple[list[float], list[float]]:
    """req/s and CPU ratios of each `name` round (in run order) to the floor rounds run just
    before and just after it."""
    rps, cpu = [], []
    for i, (label, r) in enumerate(order):
        if label != name:
            continue
        near = [order[j][1] for j in (i - 1, i + 1) if order[j][0] == "floor"]  # CYCLE
        rps.append(r.requests / r.seconds / statistics.mean(f.requests / f.seconds for f in near))
        floor_cpu = statistics.mean((f.app_ms + f.pg_ms) / f.requests for f in near)
        cpu.append((r.app_ms + r.pg_ms) / r.requests / floor_cpu)
    return rps, cpu


def _wait_for_server(proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("gunicorn exited during start-up")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", PORT)) == 0:
                return
        time.sleep(0.2)
    raise SystemExit("gunicorn did not start within 60 s")


def start_gunicorn(
    workdir: Path, *, wrapper: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """gunicorn with the shipped gunicorn.conf.py and the bench settings (SERVER_ENV, then
    `env`), run under `wrapper` if given (valgrind); its log goes to workdir/gunicorn.log."""
    gunicorn = Path(sys.executable).with_name("gunicorn")
    return subprocess.Popen(
        [*wrapper, str(gunicorn), "-c", str(ROOT / "gunicorn.conf.py"), "backend.wsgi:application"],
        cwd=ROOT,
        env={**os.environ, **SERVER_ENV, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "gunicorn.log", "wb"),
    )


def wrk_workdir(prefix: str, tokens: list[str]) -> tuple[Path, Path]:
    """A scratch directory holding the tokens and wrk's Lua script rotating over them."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    (workdir / "tokens").write_text("\n".join(tokens) + "\n")
    script = workdir / "rotate.lua"
    script.write_text(WRK_SCRIPT % {"tokens": workdir / "tokens", "body": BODY})
    return workdir, script


def stop(proc: subprocess.Popen[bytes], workdir: Path, *, timeout: float) -> None:
    """Stop the server (killed if it outlives `timeout`) and remove the scratch directory."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    dbname = urlsplit(DATABASE_URL).path.lstrip("/")
    _ensure_database()
    _setup_django()
    tokens = _prepare()
    workdir, script = wrk_workdir("bench-http-", tokens)
    proc = start_gunicorn(workdir)
    try:
        _wait_for_server(proc)
        expected = int(os.environ.get("GUNICORN_WORKERS") or (os.cpu_count() or 1) + 1)
        deadline = time.monotonic() + 30
        while len(_children(proc.pid)) < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = len(_children(proc.pid))
        print(
            f"gunicorn: shipped gunicorn.conf.py, {workers} workers, "
            f"{os.environ.get('GUNICORN_THREADS', '4')} threads; wrk -t{THREADS} "
            f"-c{CONNECTIONS}, {ROUNDS} interleaved rounds of {SECONDS} s; {USERS} users"
        )
        print(f"load before: {os.getloadavg()[0]:.2f} (1 min), cores: {os.cpu_count()}")
        _phase("empty table (bench users only)", script, proc.pid, dbname)
        started = time.monotonic()
        _seed(SEED_ROWS)
        print(f"\nseeded {SEED_ROWS} existing rows in {time.monotonic() - started:.1f} s")
        _phase(f"after {SEED_ROWS} existing rows", script, proc.pid, dbname)
        print(f"\nload after: {os.getloadavg()[0]:.2f} (1 min)")
    finally:
        stop(proc, workdir, timeout=30)


if __name__ == "__main__":
    main()
