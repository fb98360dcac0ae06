from django.contrib import admin
from django.urls import include, path

from backend.core.views import health

handler404 = "backend.core.views.not_found"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health, name="health"),
]

# Each app contributes its own routes; an app without a urls module yet contributes nothing.
for _module in ("backend.uploads.urls", "backend.demo.urls"):
    try:
        urlpatterns.append(path("", include(_module)))
    except ModuleNotFoundError as exc:  # pragma: no cover - only while an app is being built
        if exc.name != _module:
            raise
