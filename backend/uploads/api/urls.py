from django.urls import URLPattern, URLResolver, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from backend.uploads.api import multipart_views as mp
from backend.uploads.api import views

# Routes of the REST API (v1), the OpenAPI schema and Swagger UI.
urlpatterns: list[URLPattern | URLResolver] = [
    path("api/v1/uploads/", views.UploadListCreateApi.as_view(), name="upload-list"),
    # Before the detail route, which would otherwise take "multipart" for an upload id.
    path("api/v1/uploads/multipart/", mp.MultipartCreateApi.as_view(), name="multipart-create"),
    path("api/v1/uploads/<str:upload_id>/", views.UploadDetailApi.as_view(), name="upload-detail"),
    path(
        "api/v1/uploads/<str:upload_id>/multipart/",
        mp.MultipartAbortApi.as_view(),
        name="multipart-abort",
    ),
    path(
        "api/v1/uploads/<str:upload_id>/multipart/parts/",
        mp.MultipartPartsApi.as_view(),
        name="multipart-parts",
    ),
    path(
        "api/v1/uploads/<str:upload_id>/multipart/complete/",
        mp.MultipartCompleteApi.as_view(),
        name="multipart-complete",
    ),
    # Uppy Companion's contract (no trailing slashes: @uppy/aws-s3 builds these paths itself).
    path("api/v1/s3/multipart", mp.UppyCreateApi.as_view(), name="uppy-multipart-create"),
    path(
        "api/v1/s3/multipart/<str:upload_id>",
        mp.UppyMultipartApi.as_view(),
        name="uppy-multipart",
    ),
    path(
        "api/v1/s3/multipart/<str:upload_id>/complete",
        mp.UppyCompleteApi.as_view(),
        name="uppy-multipart-complete",
    ),
    path(
        "api/v1/s3/multipart/<str:upload_id>/<int:part_number>",
        mp.UppySignPartApi.as_view(),
        name="uppy-multipart-sign-part",
    ),
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
