"""Session authentication for the requests @uppy/aws-s3 sends by itself (Companion's contract).

@uppy/aws-s3 6.x calls `{companionEndpoint}/s3/...` with a bare `fetch()`: no option adds a
header, so Django's CSRF token (`X-CSRFToken`) cannot be sent, and its cookies go only to its
own origin (fetch's default `credentials: 'same-origin'`). These endpoints therefore prove
"this request comes from our own page" with what the browser itself sets and no page script
can forge (forbidden request headers), as Fetch Metadata intends
(https://www.w3.org/TR/fetch-metadata/,
https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html#fetch-metadata-headers):

1. `Sec-Fetch-Site: same-origin` (every current browser sends it to HTTPS and localhost);
2. else, without Fetch Metadata, an `Origin` (then a `Referer`) equal to our own origin;
3. or one of these naming an origin listed in `CSRF_TRUSTED_ORIGINS` (Django's own list of
   origins allowed to send unsafe requests), for cookies sent across origins by Uppy 5's
   `cookiesRule: 'include'`;
4. or, for unsafe methods, Django's own CSRF check passing (a page that sends `X-CSRFToken`).

Anything else is refused with 403, on every method: unlike Django's CSRF check, GET is
covered too, because `GET /s3/params` creates an upload. A sibling subdomain (`same-site`) is
refused unless trusted. Token-authenticated requests never reach this class.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.http import is_same_domain
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

REFUSED = (
    "This request does not come from this site's own pages (no Sec-Fetch-Site: same-origin, "
    "Origin or Referer of this site). Sign in on this site, or authenticate with a token "
    "(Authorization: Token <key>)."
)


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}"


def _trusted(origin: str) -> bool:
    """`origin` is listed in CSRF_TRUSTED_ORIGINS (exactly, or by a `*.` subdomain entry)."""
    if not origin:
        return False
    csrf = CsrfViewMiddleware(lambda request: None)  # type: ignore[arg-type, return-value]
    if origin in csrf.allowed_origins_exact:
        return True
    parts = urlsplit(origin)
    return any(
        is_same_domain(parts.netloc, host)
        for host in csrf.allowed_origin_subdomains.get(parts.scheme, [])
    )


def from_own_pages(request: HttpRequest) -> bool:
    """True when the browser says the request comes from our origin or a trusted one."""
    own = f"{'https' if request.is_secure() else 'http'}://{request.get_host()}"
    origin = request.META.get("HTTP_ORIGIN", "")
    site = request.META.get("HTTP_SEC_FETCH_SITE")
    if site is not None:
        return site == "same-origin" or _trusted(origin)
    # A browser without Fetch Metadata: Origin (sent on unsafe and cross-origin requests),
    # then Referer (same-origin GETs carry it unless a referrer policy strips it).
    claimed = origin or _origin_of(request.META.get("HTTP_REFERER", ""))
    return bool(claimed) and (claimed == own or _trusted(claimed))


class SameOriginSessionAuthentication(SessionAuthentication):
    """Django's session, with the origin proof above instead of the CSRF token (see module)."""

    def enforce_csrf(self, request: Request) -> None:
        if from_own_pages(request._request):
            return
        if request.method not in SAFE_METHODS:
            try:
                super().enforce_csrf(request)  # Django's CSRF token check (Uppy 5 headers)
                return
            except exceptions.PermissionDenied:
                pass
        raise exceptions.PermissionDenied(REFUSED)


class SameOriginSessionScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme: Django's session cookie, from this site's own pages."""

    target_class = SameOriginSessionAuthentication
    name = "sameOriginCookieAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "Django's session, on requests the browser marks as coming from this "
            "site (Sec-Fetch-Site: same-origin, else Origin/Referer) or from an origin in "
            "CSRF_TRUSTED_ORIGINS; no CSRF token needed (docs/uppy.md).",
        }
