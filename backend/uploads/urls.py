from django.urls import include, path

urlpatterns = [
    path("api/v1/webhooks/", include("backend.uploads.webhooks.urls")),
    path("", include("backend.uploads.api.urls")),
]
