from django.urls import URLPattern, URLResolver, include, path

from backend.uploads.api import urls as api_urls

# The API's routes themselves, not an include of them: each level of include costs the resolver
# a match object on every request (docs/performance.md, fourth round).
urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/webhooks/", include("backend.uploads.webhooks.urls")),
    *api_urls.urlpatterns,
]
