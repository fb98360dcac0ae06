"""/healthz, /readyz and the error handlers, in-process (tests/faults runs them under gunicorn).

A dead cache is real here: a Redis URL on a closed port. Database outages are raised by test
views (tests/core/urls_faults.py); the real closed-port database is tests/faults.
"""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from backend.storage import resilience
from tests.conftest import free_port

pytestmark = pytest.mark.django_db


def _dead_cache() -> dict[str, dict[str, object]]:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }


def _error(response) -> dict:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    return body["error"]


def test_healthz_is_liveness_only(client, django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_answers_with_the_cache_down(client) -> None:
    with override_settings(CACHES=_dead_cache()):
        assert client.get("/healthz").status_code == 200


def test_readyz_reports_each_dependency(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["cache"] == "ok"
    assert checks["broker"].startswith("ok")
    assert checks["providers"] == {}  # none configured in the test settings


def test_readyz_is_503_when_the_cache_is_down(client) -> None:
    with override_settings(CACHES=_dead_cache()):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["cache"] == "error: ConnectionError"
    assert body["checks"]["database"] == "ok"


def test_readyz_shows_an_open_breaker_without_failing_readiness(client, s3_storage) -> None:
    assert client.get("/readyz").json()["checks"]["providers"]["s3"]["state"] == "closed"
    with override_settings(PROVIDER_BREAKER_FAILURES=1, PROVIDER_BREAKER_COOLDOWN_SECONDS=60):
        guard = resilience.guards()["s3"]
        with pytest.raises(resilience.ProviderTimeout), guard.calling("probe") as run:
            run(_raise_timeout)
        response = client.get("/readyz")
    assert response.status_code == 200  # every instance shares the breaker: no point leaving
    s3 = response.json()["checks"]["providers"]["s3"]
    assert s3["state"] == "open"
    assert 1 <= s3["retry_after"] <= 60
    assert s3["failures"] >= 1


def _raise_timeout() -> None:
    raise resilience.ProviderTimeout("s3", "probe", "test", retry_after=5)


@pytest.fixture
def faulty_client() -> Client:
    return Client(raise_request_exception=False)


@override_settings(ROOT_URLCONF="tests.core.urls_faults", DEBUG=False)
@pytest.mark.parametrize("path", ["/api/test/database-down/", "/api/test/drf-database-down/"])
def test_database_outage_in_an_api_view_is_json_503(faulty_client, path) -> None:
    response = faulty_client.get(path)
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    err = _error(response)
    assert err["code"] == "database_unavailable"
    assert "refused" not in err["message"] and "clients" not in err["message"]


@override_settings(ROOT_URLCONF="tests.core.urls_faults", DEBUG=False)
def test_database_outage_in_a_page_is_a_plain_503(faulty_client) -> None:
    response = faulty_client.get("/page/database-down/")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/plain")
    assert response["Retry-After"]


@override_settings(
    ROOT_URLCONF="tests.core.urls_faults",
    DEBUG=False,
    SESSION_ENGINE="django.contrib.sessions.backends.cache",
)
def test_an_outage_in_a_middleware_phase_reaches_handler500_as_503(faulty_client) -> None:
    # The session is saved by SessionMiddleware after the view returned: a dead cache there
    # is not a view exception, Django hands it to handler500.
    with override_settings(CACHES=_dead_cache()):
        response = faulty_client.get("/api/test/session/")
    assert response.status_code == 503
    assert _error(response)["code"] == "cache_unavailable"


@override_settings(ROOT_URLCONF="tests.core.urls_faults", DEBUG=False)
def test_a_bug_under_api_is_a_json_500_and_unknown_api_routes_a_json_404(faulty_client) -> None:
    response = faulty_client.get("/api/test/bug/")
    assert response.status_code == 500
    assert _error(response)["code"] == "server_error"
    missing = faulty_client.get("/api/v1/nothing-here/")
    assert missing.status_code == 404
    assert _error(missing)["code"] == "not_found"
    page = faulty_client.get("/no-such-page/")
    assert page.status_code == 404 and "html" in page["Content-Type"]
