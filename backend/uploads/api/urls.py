from django.urls import URLPattern, URLResolver, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from backend.uploads.api import views

# Routes of the REST API (v1), the OpenAPI schema and Swagger UI.
urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/uploads/", views.UploadListCreateApi.as_view(), name="upload-list"),
    path("api/v1/uploads/<str:upload_id>/", views.UploadDetailApi.as_view(), name="upload-detail"),
    path(
        "api/v1/uploads/<str:upload_id>/confirm/",
        views.UploadConfirmApi.as_view(),
        name="upload-confirm",
    ),
    path("api/v1/config/", views.ConfigApi.as_view(), name="upload-config"),
    path("api/v1/auth/token/", views.TokenObtainApi.as_view(), name="auth-token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]
