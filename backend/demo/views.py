"""The demo page: the upload widget plus the signed-in user's uploads, rendered on the server.

Thin views: reads go through the uploads selectors; every write goes through the REST API the
widget calls, exactly as a real integrator's page would.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView, LogoutView
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import ensure_csrf_cookie

from backend.core.errors import NotFound, StorageUnavailable
from backend.storage.factory import CloudStorageFactory
from backend.uploads.models import MediaUpload
from backend.uploads.selectors import download_url_for, get_upload_for_owner, list_uploads_for_owner

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
        # Where the active provider is switched (staff only; `make demo` prints an admin login).
        "switch_url": reverse("admin:core_appconfig_changelist"),
    }
    return render(request, "demo/index.html", context)


@login_required(login_url=LOGIN_URL)
def uploads_fragment(request: HttpRequest) -> HttpResponse:
    """The uploads list alone, so the page can refresh it after `upload:done`."""
    return render(request, "demo/_uploads.html", {"uploads": _recent_uploads(request)})


@login_required(login_url=LOGIN_URL)
def download(request: HttpRequest, upload_id: str) -> HttpResponse:
    """A fresh short-lived download URL for one of the user's uploaded files (a redirect)."""
    try:
        row = get_upload_for_owner(request.user, upload_id)
    except NotFound:
        raise Http404("No such upload.") from None
    url = download_url_for(row)
    if not url:
        raise Http404("This upload has no file to download.")
    return HttpResponseRedirect(url)


class DemoLoginView(LoginView):
    # The admin login accepts staff only; the demo user is an ordinary user.
    template_name = "demo/login.html"
    next_page = "demo:index"
    redirect_authenticated_user = True


class DemoLogoutView(LogoutView):
    next_page = "demo:login"
