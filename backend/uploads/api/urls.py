from django.urls import URLPattern, URLResolver, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from backend.uploads.api import companion_views as uppy
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
    # Uppy Companion's S3 contract (no trailing slashes: @uppy/aws-s3 builds these paths).
    path("api/v1/s3/params", uppy.UppyParamsApi.as_view(), name="uppy-params"),
    path("api/v1/s3/multipart", uppy.UppyCreateApi.as_view(), name="uppy-multipart-create"),
    path(
        "api/v1/s3/multipart/<str:upload_id>",
        uppy.UppyMultipartApi.as_view(),
        name="uppy-multipart",
    ),
    path(
        "api/v1/s3/multipart/<str:upload_id>/complete",
        uppy.UppyCompleteApi.as_view(),
        name="uppy-multipart-complete",
    ),
    path(
        "api/v1/s3/multipart/<str:upload_id>/<str:part_number>",
        uppy.UppySignPartApi.as_view(),
        name="uppy-multipart-sign-part",
    ),
    path("api/v1/s3/confirm", uppy.UppyConfirmApi.as_view(), name="uppy-confirm"),
    path("api/v1/s3/presign", uppy.UppyPresignApi.as_view(), name="uppy-presign"),
    path("api/v1/s3/request/<str:token>", uppy.UppyS3RequestView.as_view(), name="uppy-s3-request"),
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
