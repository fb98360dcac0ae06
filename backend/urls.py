from django.contrib import admin
from django.urls import include, path

from backend.core import metrics
from backend.core import views as core_views
from backend.uploads import urls as uploads_urls

# The uploads app's routes first and at the top level (no include): the API is the hot path,
# and each pattern tried before it, or level of include, costs the resolver on every request.
urlpatterns = [
    *uploads_urls.urlpatterns,
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

# The demo keeps its namespace (and its "" index, after everything else).
urlpatterns.append(path("", include("backend.demo.urls")))
