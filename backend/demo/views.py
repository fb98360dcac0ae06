"""The demo page: the upload widget plus the signed-in user's uploads, rendered on the server.

Thin views: reads go through the uploads selectors; every write goes through the REST API the
widget calls, exactly as a real integrator's page would.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView, LogoutView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from backend.core.errors import StorageUnavailable
from backend.storage.factory import CloudStorageFactory
from backend.uploads.models import MediaUpload
from backend.uploads.selectors import list_uploads_for_owner

RECENT_UPLOADS_SHOWN = 50
LOGIN_URL = "demo:login"


def _recent_uploads(request: HttpRequest) -> list[MediaUpload]:
    return list(list_uploads_for_owner(request.user)[:RECENT_UPLOADS_SHOWN])


def _active_provider() -> str:
    """The provider new uploads really go to (after the factory's fallback), for display."""
    try:
        return CloudStorageFactory.active().name
    except StorageUnavailable:
        return "none configured"


@ensure_csrf_cookie
@login_required(login_url=LOGIN_URL)
def index(request: HttpRequest) -> HttpResponse:
    context = {
        "uploads": _recent_uploads(request),
        "provider": _active_provider(),
    }
    return render(request, "demo/index.html", context)


@login_required(login_url=LOGIN_URL)
def uploads_fragment(request: HttpRequest) -> HttpResponse:
    """The uploads list alone, so the page can refresh it after `upload:done`."""
    return render(request, "demo/_uploads.html", {"uploads": _recent_uploads(request)})


class DemoLoginView(LoginView):
    # The admin login accepts staff only; the demo user is an ordinary user.
    template_name = "demo/login.html"
    next_page = "demo:index"
    redirect_authenticated_user = True


class DemoLogoutView(LogoutView):
    next_page = "demo:login"
