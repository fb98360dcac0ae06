"""A local stand-in of Cloudinary, for the demo and the test suite (no account needed).

    python -m devtools.cloudinary_standin --port 9100 [--cloud-name demo --api-key K --api-secret S]

Then set CLOUDINARY_UPLOAD_PREFIX and CLOUDINARY_DELIVERY_PREFIX to http://127.0.0.1:9100.
No Cloudinary emulator exists; every behaviour below follows Cloudinary's documentation or its
official SDKs (pycloudinary, cloudinary_npm, cloudinary_java/android) as named. Bytes are kept in
files in a private temporary directory (removed by stop()), so a 1 GiB upload never sits in RAM.

Upload API: POST /v1_1/<cloud>/<image|video|raw|auto>/upload (also .../upload_chunked)
  multipart/form-data (or urlencoded with a data-URI `file`). Signature: api_sign_request over
  every parameter but file, cloud_name, resource_type, api_key, signature (v2, v1 accepted),
  valid one hour after `timestamp` ("Stale request - reported time is T which is more than 1 hour
  ago"); https://cloudinary.com/documentation/authentication_signatures.
  Answer 200: public_id, version, signature (= SHA(public_id=..&version=..+secret)), bytes, etag
  (MD5), format (not for raw), width/height (images), type, resource_type, url/secure_url (signed
  for type=authenticated), original_filename, created_at. Errors: {"error": {"message": ...}}.
  - Nothing is stored until the whole body arrived: a request whose body ends early stores
    nothing (Werkzeug parses the form, spooled to disk, before the upload is looked at).
  - One request carries at most 100 MiB ("File size too large. Got N. Maximum is 104857600."):
    larger files go in chunks (Upload API schema, operation uploadChunk).
  - overwrite (default true). overwrite=false and the public_id exists: 200, the existing asset
    unchanged, "existing": true. After delete_resources the same signed parameters create it anew.
  - type: upload (public), authenticated (signed delivery URLs only), private (private download
    URL only). https://cloudinary.com/documentation/control_access_to_media
  - Format from the bytes (formats.py): image needs image bytes ("Invalid image file"), video
    needs video/audio bytes ("Unsupported video format or file"), auto picks image/video/raw.
    A raw file's format is its public_id's extension (else the file name's).
  - allowed_formats=png,jpg,...: another detected format is refused, 400
    "<Image|Video|Raw> file format <fmt> not allowed" (jpeg=jpg, tif=tiff).
  - notification_url: a signed upload notification is POSTed there (X-Cld-Timestamp/Signature).

Chunked uploads (same URL and signed parameters; support article 208263735 "Guidelines for self
implementing chunked upload to Cloudinary", the SDKs' upload_large):
  headers X-Unique-Upload-Id: <same id on every chunk>, Content-Range: bytes <start>-<end>/<total>
  (total may be -1 until the last chunk, as the Node SDK sends). Every chunk is signed and checked
  like a single upload (its own timestamp: stale after an hour). Chunks other than the last must be
  at least 5 MiB ("All parts except EOF-chunk must be larger than 5mb"); middle chunks may arrive in
  any order or in parallel; the last (end = total-1) must come after all others were answered.
  Resending a range already received replaces it (an SDK retry); a range overlapping another,
  beyond the total, a changed total, a body length not matching its range, or other parameters
  than the first chunk's: 400. Non-final answer (Upload API schema,
  non_final_chunk_upload_response):
      {"done": false, "bytes": <bytes received so far>, "kind": "<type>",
       "resource_type": "<rt>" (omitted for auto), "public_id": "<id>"}
  The last chunk's answer is the upload answer above. An unfinished upload is invisible (no
  delivery, no Admin API listing); a later chunk (same id) may still complete it.

Delivery (the CDN):
  GET/HEAD /<cloud>/<rt>/<upload|authenticated|private>/[s--SIG--/][v<n>/]<id>[.<fmt>]
  SIG as cloudinary.utils.cloudinary_url(sign_url=True) makes it: 8 characters of URL-safe
  base64 SHA-1 (or SHA-256) of "<id>[.<fmt>]" + secret, or 32 of SHA-256 with long_url_signature
  (https://cloudinary.com/documentation/delivery_url_signatures). A wrong signature: 401;
  authenticated without one: 401; private originals: 401; unknown: 404 (X-Cld-Error says why).
  Range → 206 + Content-Range (416 when unsatisfiable), HEAD, ETag; raw Content-Type follows
  the public_id's extension; text is gzip-compressed for clients that accept it.

Private download URL: GET/HEAD /v1_1/<cloud>/<rt>/download?public_id&format&type&attachment&
  expires_at&timestamp&api_key&signature, as cloudinary.utils.private_download_url builds it
  (signature over every parameter but api_key/signature). Refused 401 when the signature is wrong
  or the URL expired (expires_at, else timestamp + 1 hour); attachment=1/true adds
  Content-Disposition: attachment; filename="<id>[.<fmt>]" (target_filename wins). Range and HEAD
  as on delivery.

Admin API (basic auth api_key:api_secret): GET /v1_1/<cloud>/ping,
  GET /v1_1/<cloud>/resources/<rt>[/<type>] (prefix, max_results, next_cursor; every type when
  none is named), GET /v1_1/<cloud>/resources/<rt>/<type>/<public_id>,
  DELETE /v1_1/<cloud>/resources/<rt>[/<type>] (public_ids[], at most 100; type upload by default).

CORS on every answer; preflights allow Content-Range, X-Unique-Upload-Id and whatever is asked.
It is not Cloudinary: no transformations or format conversion, no remote fetch, no upload presets.
"""

from __future__ import annotations

import argparse
import time

from .formats import Detected, detect, sniff_image
from .server import (
    MAX_SINGLE_UPLOAD_SIZE,
    MIN_CHUNK_SIZE,
    SIGNED_UPLOAD_VALIDITY,
    UNSIGNED_PARAMS,
    CloudinaryStandin,
    Notification,
    free_port,
)
from .store import ChunkedUpload, StoredAsset

__all__ = [
    "MAX_SINGLE_UPLOAD_SIZE",
    "MIN_CHUNK_SIZE",
    "SIGNED_UPLOAD_VALIDITY",
    "UNSIGNED_PARAMS",
    "ChunkedUpload",
    "CloudinaryStandin",
    "Detected",
    "Notification",
    "StoredAsset",
    "detect",
    "free_port",
    "main",
    "sniff_image",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Cloudinary stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--cloud-name", default="demo")
    parser.add_argument("--api-key", default="111111111111111")
    parser.add_argument("--api-secret", default="standin-secret")
    parser.add_argument("--signature-algorithm", choices=["sha1", "sha256"], default="sha1")
    parser.add_argument(
        "--min-chunk-size",
        type=int,
        default=MIN_CHUNK_SIZE,
        help="smallest chunk but the last (Cloudinary: 5 MiB)",
    )
    args = parser.parse_args(argv)
    standin = CloudinaryStandin(
        cloud_name=args.cloud_name,
        api_key=args.api_key,
        api_secret=args.api_secret,
        signature_algorithm=args.signature_algorithm,
        host=args.host,
        port=args.port,
        min_chunk_size=args.min_chunk_size,
    ).start()
    print(f"Cloudinary stand-in listening on {standin.url} (cloud {standin.cloud_name!r})")
    print(
        f"CLOUDINARY_URL=cloudinary://{standin.api_key}:<secret>@{standin.cloud_name} "
        f"CLOUDINARY_UPLOAD_PREFIX={standin.url} CLOUDINARY_DELIVERY_PREFIX={standin.url}"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        standin.stop()
