from django.contrib import admin
from django.urls import include, path

from backend.core import metrics
from backend.core import views as core_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
]

# The API answers its JSON error shape even where Django, not DRF, produces the error.
handler400 = "backend.core.views.bad_request"
handler403 = "backend.core.views.permission_denied"
handler404 = "backend.core.views.not_found"
handler500 = "backend.core.views.server_error"

# Each app contributes its own routes; an app without a urls module yet contributes nothing.
for _module in ("backend.uploads.urls", "backend.demo.urls"):
    try:
        urlpatterns.append(path("", include(_module)))
    except ModuleNotFoundError as exc:  # pragma: no cover - only while an app is being built
        if exc.name != _module:
            raise
