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


def test_one_round_trip_per_check(redis_url, monkeypatch) -> None:
    """The whole check is one EVALSHA (DRF's cache throttle: a GET and a SET)."""
    import redis

    _rates(monkeypatch, {"upload_create": "9/minute"})
    calls: list[Any] = []
    real = redis.Redis.execute_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real(self, *args, **kwargs)

    with override_settings(
        THROTTLE_REDIS_URL=redis_url, THROTTLE_KEY_PREFIX=f"test-{uuid.uuid4().hex}:"
    ):
        view = SimpleNamespace(throttle_scope="upload_create")
        throttling.ScopedRateThrottle().allow_request(_request(1), view)  # loads the script
        monkeypatch.setattr(redis.Redis, "execute_command", counting)
        assert throttling.ScopedRateThrottle().allow_request(_request(1), view)
    assert calls == ["EVALSHA"]
