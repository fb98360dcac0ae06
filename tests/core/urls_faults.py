"""URLs for tests/core/test_health_and_errors.py: views that fail the way an outage does."""

from __future__ import annotations

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


def _database_down(request: HttpRequest) -> HttpResponse:
    raise OperationalError('connection to server at "db" failed: Connection refused')


def _bug(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


def _writes_session(request: HttpRequest) -> HttpResponse:
    request.session["seen"] = True  # saved by SessionMiddleware after the view
    return HttpResponse("ok")


class _DrfDatabaseDown(APIView):
    authentication_classes = ()
    permission_classes = ()

    def get(self, request: Request) -> Response:
        raise OperationalError("FATAL: sorry, too many clients already")


urlpatterns = [
    path("api/test/database-down/", _database_down),
    path("api/test/drf-database-down/", _DrfDatabaseDown.as_view()),
    path("api/test/bug/", _bug),
    path("page/database-down/", _database_down),
    path("api/test/session/", _writes_session),
    path("", include("backend.urls")),
]

handler400 = "backend.core.views.bad_request"
handler403 = "backend.core.views.permission_denied"
handler404 = "backend.core.views.not_found"
handler500 = "backend.core.views.server_error"
