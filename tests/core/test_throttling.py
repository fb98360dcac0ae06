"""The Redis sliding-window throttles (backend/core/throttling.py) behave as DRF's own, to the
request: a differential run of the same request times through both, same allow/refuse and the
same wait() (hence the same Retry-After)."""

from __future__ import annotations

import random
import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import RequestFactory, override_settings
from rest_framework import throttling as drf
from rest_framework.request import Request

from backend.core import throttling


def _rates(monkeypatch: Any, rates: dict[str, str]) -> None:
    """The same rates for every throttle class involved (a class may hold its own copy)."""
    from backend.uploads.api.views import TokenObtainThrottle

    for cls in (
        drf.SimpleRateThrottle,
        drf.ScopedRateThrottle,
        throttling.SimpleRateThrottle,
        throttling.ScopedRateThrottle,
        TokenObtainThrottle,
    ):
        monkeypatch.setattr(cls, "THROTTLE_RATES", rates)


def _request(user_pk: int) -> Request:
    request = Request(RequestFactory().post("/", REMOTE_ADDR="10.0.0.7"))
    request.user = SimpleNamespace(is_authenticated=user_pk > 0, pk=user_pk)
    return request


def _run(throttle_class: type, times: list[tuple[float, int]], view: Any) -> list[tuple[bool, Any]]:
    outcome = []
    for now, user_pk in times:
        throttle = throttle_class()  # DRF makes one per request
        throttle.timer = lambda now=now: now
        allowed = throttle.allow_request(_request(user_pk), view)
        wait = None if allowed else throttle.wait()
        outcome.append((allowed, None if wait is None else round(wait, 6)))
    return outcome


def _times(seed: int, count: int, span: float) -> list[tuple[float, int]]:
    rng = random.Random(seed)
    start = 1_800_000_000.0
    points = sorted(start + rng.random() * span for _ in range(count))
    # bursts: some requests at the very same instant
    points += [points[10]] * 3 + [points[50]] * 2
    return [(t, rng.choice([1, 2, 0])) for t in sorted(points)]


@pytest.mark.parametrize(
    ("rate", "span", "seed"),
    [("5/minute", 400.0, 1), ("2/second", 20.0, 2), ("30/hour", 5000.0, 3)],
)
def test_scoped_throttle_matches_drf(redis_url, monkeypatch, rate, span, seed) -> None:
    _rates(monkeypatch, {"upload_create": rate})
    view = SimpleNamespace(throttle_scope="upload_create")
    times = _times(seed, 120, span)
    expected = _run(drf.ScopedRateThrottle, times, view)
    with override_settings(
        THROTTLE_REDIS_URL=redis_url, THROTTLE_KEY_PREFIX=f"test-{uuid.uuid4().hex}:"
    ):
        got = _run(throttling.ScopedRateThrottle, times, view)
    assert any(not allowed for allowed, _ in expected)  # the rate was reached
    assert any(allowed for allowed, _ in expected[60:])  # and the window slid
    assert got == expected


def test_a_long_expired_stretch_is_trimmed_as_drf_trims_it(redis_url, monkeypatch) -> None:
    """More expired timestamps than one trimming step (128) leave the window at once: a full
    window of 300, then, a window later and with the rate lowered to 100 (a deploy), a burst
    that only fits if every one of them is gone; the same answers as DRF's, to the request."""
    view = SimpleNamespace(throttle_scope="upload_create")
    start = 1_800_000_000.0
    full = [(start + i * 0.01, 1) for i in range(300)]
    later = [(start + 100 + i * 0.01, 1) for i in range(120)]
    expected, got = [], []
    prefix = f"test-{uuid.uuid4().hex}:"
    for rate, times in (("300/minute", full), ("100/minute", later)):
        _rates(monkeypatch, {"upload_create": rate})
        expected += _run(drf.ScopedRateThrottle, times, view)
        with override_settings(THROTTLE_REDIS_URL=redis_url, THROTTLE_KEY_PREFIX=prefix):
            got += _run(throttling.ScopedRateThrottle, times, view)
    assert [allowed for allowed, _ in expected] == [True] * 400 + [False] * 20
    assert got == expected


def test_simple_throttle_with_own_key_matches_drf(redis_url, monkeypatch) -> None:
    from backend.uploads.api.views import TokenObtainThrottle

    _rates(monkeypatch, {"auth_token": "3/minute"})

    class DrfTokenThrottle(drf.SimpleRateThrottle):
        scope = "auth_token"
        get_cache_key = TokenObtainThrottle.get_cache_key

    times = _times(4, 60, 300.0)
    expected = _run(DrfTokenThrottle, times, None)
    with override_settings(
        THROTTLE_REDIS_URL=redis_url, THROTTLE_KEY_PREFIX=f"test-{uuid.uuid4().hex}:"
    ):
        got = _run(TokenObtainThrottle, times, None)
    assert any(not allowed for allowed, _ in expected)
    assert got == expected


def _check(user_pk: int = 1) -> bool:
    view = SimpleNamespace(throttle_scope="upload_create")
    return bool(throttling.ScopedRateThrottle().allow_request(_request(user_pk), view))


@pytest.fixture
def redis_throttle(redis_url, monkeypatch) -> Any:
    _rates(monkeypatch, {"upload_create": "9/minute"})
    with override_settings(
        THROTTLE_REDIS_URL=redis_url, THROTTLE_KEY_PREFIX=f"test-{uuid.uuid4().hex}:"
    ):
        yield redis_url


def test_one_round_trip_per_check(redis_throttle, request) -> None:
    """The whole check is one EVALSHA (DRF's cache throttle: a GET and a SET), sent as one
    packed command on the thread's connection."""
    assert _check()  # loads the script
    sent = request.getfixturevalue("redis_commands_sent")
    assert _check()
    assert len(sent) == 1
    assert b"EVALSHA" in sent[0]


def test_a_flushed_script_is_loaded_again(redis_throttle, monkeypatch) -> None:
    """After a Redis restart (or SCRIPT FLUSH) the next check loads the script and counts."""
    import redis

    assert _check(7)
    redis.Redis.from_url(redis_throttle).script_flush()
    assert _check(7)
    for _ in range(7):
        assert _check(7)
    assert not _check(7)  # the 10th in the minute


def test_a_killed_connection_is_replaced(redis_throttle, monkeypatch) -> None:
    """A connection Redis closed (restart, idle timeout) costs no refused request: the check
    reconnects once and runs."""
    import redis

    assert _check(8)
    admin = redis.Redis.from_url(redis_throttle)
    connection = throttling.redis_scripts()._connection()
    connection.send_command("CLIENT", "ID")
    client_id = connection.read_response()
    assert admin.client_kill_filter(_id=client_id) == 1
    assert _check(8)


def test_redis_down_is_an_error_not_an_allowance(monkeypatch) -> None:
    """No Redis: the check raises redis' ConnectionError (answered 503 + Retry-After by the
    API's error handler), never lets the request through unthrottled."""
    from redis.exceptions import ConnectionError

    from devtools.ports import free_port

    _rates(monkeypatch, {"upload_create": "9/minute"})
    with (
        override_settings(
            THROTTLE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
            THROTTLE_REDIS_TIMEOUT_SECONDS=0.5,
        ),
        pytest.raises(ConnectionError),
    ):
        _check()


def test_each_process_gets_its_own_window(redis_throttle) -> None:
    """A forked worker never shares its parent's sockets (gunicorn preloads, then forks)."""
    import os

    window = throttling.redis_scripts()
    assert throttling.redis_scripts() is window
    assert _check()  # the parent's thread has its connection
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        fresh = throttling.redis_scripts()
        os._exit(0 if fresh is not window and fresh.pid == os.getpid() and _check() else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert throttling.redis_scripts() is window  # the parent keeps its own


def test_a_thread_per_request_server_never_runs_out_of_connections(redis_throttle) -> None:
    """runserver starts a thread per request: each thread's connection goes with it, and more
    threads than redis-py's default pool cap (100) still get checked."""
    import gc
    import threading

    import redis

    outcomes: list[bool] = []
    for round_ in range(6):
        threads = [
            threading.Thread(target=lambda pk=round_ * 100 + i: outcomes.append(_check(1000 + pk)))
            for i in range(25)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert outcomes == [True] * 150
    gc.collect()
    mine = [
        client
        for client in redis.Redis.from_url(redis_throttle).client_list()
        if client.get("cmd") == "evalsha"
    ]
    assert len(mine) < 30  # the threads' connections closed with them


class SilentRedis:
    """A Redis that answers the connection handshake and never answers a script: a hung
    server, as far as the check can tell. Counts the scripts it received."""

    def __init__(self) -> None:
        import socket
        import threading

        self.scripts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: Any) -> None:
        import hiredis

        reader = hiredis.Reader()
        with client:
            while data := client.recv(65536):
                reader.feed(data)
                while (command := reader.gets()) is not False:
                    name = command[0].upper()
                    if name == b"EVALSHA":
                        self.scripts += 1  # and no answer
                    elif name == b"HELLO":  # redis-py speaks RESP3 (a map: its protocol)
                        client.sendall(b"%1\r\n+proto\r\n:3\r\n")
                    else:
                        client.sendall(b"+OK\r\n")  # CLIENT SETINFO, SELECT, ...

    def close(self) -> None:
        self.listener.close()


def test_a_hung_redis_times_out_once_and_the_script_is_never_sent_twice(monkeypatch) -> None:
    """The timeout lives in the kernel (SO_RCVTIMEO): it fires as redis-py's ConnectionError,
    and must be raised as a TimeoutError without the stale-connection retry, which would send
    the script again (counting the request twice) and double the wait."""
    import time

    from redis.exceptions import TimeoutError

    server = SilentRedis()
    _rates(monkeypatch, {"upload_create": "9/minute"})
    try:
        with override_settings(THROTTLE_REDIS_URL=server.url, THROTTLE_REDIS_TIMEOUT_SECONDS=0.3):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                _check()
            elapsed = time.monotonic() - started
    finally:
        server.close()
    assert server.scripts == 1
    assert 0.25 < elapsed < 2, elapsed  # the count above tells a retry apart


def test_the_socket_waits_in_the_kernel_not_in_python(redis_throttle) -> None:
    """After a check, the thread's connection is a blocking socket with the configured timeout
    in SO_RCVTIMEO / SO_SNDTIMEO (no poll before each send and receive)."""
    import socket
    import struct

    assert _check()
    connection = throttling.redis_scripts()._connection()
    sock = connection._sock
    assert sock.gettimeout() is None
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        seconds, microseconds = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, option, 16))
        # to the kernel's tick
        timeout = connection.socket_timeout
        assert abs(seconds + microseconds / 1e6 - timeout) < 0.01, (seconds, microseconds)
