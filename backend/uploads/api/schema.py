"""OpenAPI examples and error responses for the upload API (what a mobile developer copies)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse

from backend.uploads.api.serializers import ErrorSerializer, UppyErrorSerializer

UPLOAD_ID = "3f1c7a52-9a7e-4c51-8d2e-6f0b2c1d9e11"
S3_KEY = f"uploads/42/{UPLOAD_ID.replace('-', '')}/holiday.jpg"
CLD_KEY = f"uploads/42/{UPLOAD_ID.replace('-', '')}/holiday"


def error(
    description: str, code: str, message: str, details: dict | None = None
) -> OpenApiResponse:
    return OpenApiResponse(
        response=ErrorSerializer,
        description=description,
        examples=[
            OpenApiExample(
                code,
                value={"error": {"code": code, "message": message, "details": details or {}}},
            )
        ],
    )


def uppy_error(response: OpenApiResponse) -> OpenApiResponse:
    """The same error response for a /api/v1/s3/* endpoint (top-level `message` added)."""
    return OpenApiResponse(
        response=UppyErrorSerializer,
        description=response.description,
        examples=[
            OpenApiExample(
                example.name,
                value={"message": example.value["error"]["message"], **example.value},
            )
            for example in response.examples or []
        ],
    )


UNAUTHORIZED = error(
    "Missing or invalid credentials (send `Authorization: Token <key>`).",
    "not_authenticated",
    "Authentication credentials were not provided.",
)
THROTTLED = error(
    "Too many requests; retry after `Retry-After` seconds.",
    "throttled",
    "Request was throttled. Expected available in 30 seconds.",
)
NOT_FOUND = error("No such upload for this user.", "not_found", "No upload with this id.")
MULTIPART_NOT_SUPPORTED = error(
    "Invalid input, or the active provider has no multipart uploads (Cloudinary).",
    "multipart_not_supported",
    "The storage provider 'cloudinary' does not support multipart uploads; use POST "
    "/api/v1/uploads/ instead (it answers chunked instructions for large files where the "
    "provider has them).",
    {"provider": "cloudinary", "multipart_providers": ["s3"]},
)
PROVIDER_DOWN = error(
    "The storage provider is unreachable or not configured. Retry after `Retry-After` seconds.",
    "provider_unavailable",
    "S3 inspect (HeadObject) is unavailable; retry later.",
    {"provider": "s3", "operation": "inspect (HeadObject)", "code": "SlowDown"},
)

S3_CAPABILITIES = {
    "max_single_upload": 5 * 1024**3,
    "large_uploads": "multipart",
    "min_part_size": 5 * 1024**2,
    "max_part_size": 5 * 1024**3,
    "max_parts": 10_000,
    "part_size": None,
    "verifies_checksum": True,
    "max_file_size": 10_000 * 5 * 1024**3,
}
CLOUDINARY_CAPABILITIES = {
    "max_single_upload": 100_000_000,
    "large_uploads": "chunked",
    "min_part_size": 5 * 1024**2,
    "max_part_size": 100_000_000,
    "max_parts": None,
    "part_size": 20 * 1024**2,
    "verifies_checksum": False,
    "max_file_size": 2_000_000_000,
}

CREATE_REQUEST_EXAMPLE = OpenApiExample(
    "Ask to upload a photo",
    request_only=True,
    value={
        "filename": "holiday.jpg",
        "content_type": "image/jpeg",
        "size": 482113,
        "checksum_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    },
)
CREATE_S3_RESPONSE_EXAMPLE = OpenApiExample(
    "S3: presigned POST",
    response_only=True,
    status_codes=["201"],
    value={
        "id": UPLOAD_ID,
        "status": "pending",
        "provider": "s3",
        "key": S3_KEY,
        "filename": "holiday.jpg",
        "content_type": "image/jpeg",
        "size": 482113,
        "expires_at": "2026-01-05T10:10:00Z",
        "upload": {
            "protocol": "single",
            "method": "POST",
            "url": "https://my-bucket.s3.eu-west-1.amazonaws.com/",
            "fields": {
                "key": S3_KEY,
                "Content-Type": "image/jpeg",
                "x-amz-algorithm": "AWS4-HMAC-SHA256",
                "x-amz-credential": "AKIA.../20260105/eu-west-1/s3/aws4_request",
                "x-amz-date": "20260105T100000Z",
                "policy": "eyJleHBpcmF0aW9uIjogIjIwMjYtMDEtMDVUMTA6MTA6MDBaIiwgLi4ufQ==",
                "x-amz-signature": "2d4c...",
            },
            "headers": {},
            "expires_at": "2026-01-05T10:10:00Z",
            "chunked": None,
        },
        "capabilities": S3_CAPABILITIES,
    },
)
CREATE_CLOUDINARY_RESPONSE_EXAMPLE = OpenApiExample(
    "Cloudinary: signed upload parameters",
    response_only=True,
    status_codes=["201"],
    value={
        "id": UPLOAD_ID,
        "status": "pending",
        "provider": "cloudinary",
        "key": CLD_KEY,
        "filename": "holiday.jpg",
        "content_type": "image/jpeg",
        "size": 482113,
        "expires_at": "2026-01-05T10:10:00Z",
        "upload": {
            "protocol": "single",
            "method": "POST",
            "url": "https://api.cloudinary.com/v1_1/demo/image/upload",
            "fields": {
                "public_id": CLD_KEY,
                "timestamp": "1767607200",
                "api_key": "123456789012345",
                "signature": "a1b2c3...",
            },
            "headers": {},
            "expires_at": "2026-01-05T10:10:00Z",
            "chunked": None,
        },
        "capabilities": CLOUDINARY_CAPABILITIES,
    },
)
CREATE_CLOUDINARY_CHUNKED_RESPONSE_EXAMPLE = OpenApiExample(
    "Cloudinary above 100 MB: chunked upload instructions",
    response_only=True,
    status_codes=["201"],
    value={
        "id": UPLOAD_ID,
        "status": "pending",
        "provider": "cloudinary",
        "key": "uploads/42/3f1c7a529a7e4c518d2e6f0b2c1d9e11/holiday",
        "filename": "holiday.mp4",
        "content_type": "video/mp4",
        "size": 120_000_000,
        "expires_at": "2026-01-05T11:00:00Z",
        "upload": {
            "protocol": "chunked",
            "method": "POST",
            "url": "https://api.cloudinary.com/v1_1/demo/video/upload",
            "fields": {
                "timestamp": "1767607200",
                "public_id": "uploads/42/3f1c7a529a7e4c518d2e6f0b2c1d9e11/holiday",
                "overwrite": "false",
                "type": "authenticated",
                "allowed_formats": "mp4",
                "api_key": "123456789012345",
                "signature": "a1b2c3...",
            },
            "headers": {"X-Unique-Upload-Id": "5f0c2d9e8b7a41c3a2e1f0d9c8b7a6e5"},
            "expires_at": "2026-01-05T11:00:00Z",
            "chunked": {
                "chunk_size": 20 * 1024**2,
                "chunk_count": 6,
                "total_size": 120_000_000,
                "content_range": "bytes {start}-{end}/{total}",
            },
        },
        "capabilities": CLOUDINARY_CAPABILITIES,
    },
)
CONFIRM_S3_REQUEST_EXAMPLE = OpenApiExample(
    "S3: empty body (the server checks the object itself)", request_only=True, value={}
)
CONFIRM_CLOUDINARY_REQUEST_EXAMPLE = OpenApiExample(
    "Cloudinary: the JSON the upload returned, unchanged",
    request_only=True,
    value={
        "public_id": CLD_KEY,
        "version": 1767607230,
        "signature": "5f1e0c...",
        "resource_type": "image",
        "format": "jpg",
        "bytes": 482113,
        "secure_url": f"https://res.cloudinary.com/demo/image/upload/v1767607230/{CLD_KEY}.jpg",
    },
)
UPLOAD_RESPONSE_EXAMPLE = OpenApiExample(
    "Uploaded",
    response_only=True,
    status_codes=["200"],
    value={
        "id": UPLOAD_ID,
        "status": "uploaded",
        "provider": "s3",
        "key": S3_KEY,
        "filename": "holiday.jpg",
        "content_type": "image/jpeg",
        "size": 482113,
        "metadata": {
            "provider": "s3",
            "key": S3_KEY,
            "bytes": 482113,
            "content_type": "image/jpeg",
            "etag": '"8c2d0a..."',
            "verified_by": "client",
        },
        "url": f"https://my-bucket.s3.eu-west-1.amazonaws.com/{S3_KEY}?X-Amz-Signature=...",
        "expires_at": "2026-01-05T10:10:00Z",
        "created_at": "2026-01-05T10:00:00Z",
        "confirmed_at": "2026-01-05T10:00:31Z",
    },
)
