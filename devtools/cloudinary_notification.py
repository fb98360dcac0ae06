"""Sign a sample Cloudinary notification with this deployment's settings, to test a delivery.

    DJANGO_SETTINGS_MODULE=backend.settings python -m devtools.cloudinary_notification \\
        --public-id uploads/1/<hex>/notes.txt [--type upload|delete] [--version N] \\
        [--post http://127.0.0.1:8000]

Prints the body, the two signature headers and a curl command; with --post it sends the
notification to that base URL and prints the answer. The signature uses the configured
CLOUDINARY_API_SECRET and CLOUDINARY_SIGNATURE_ALGORITHM, exactly as Cloudinary signs.
The secret itself is never printed.

SNS messages cannot be produced this way: they are signed with Amazon's private key, and the
endpoint accepts only certificates served from SNS hosts (see docs/webhooks.md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from typing import Any

import django
import requests
from cloudinary.utils import compute_hex_hash
from django.urls import reverse

from backend.storage.provider_settings import CloudinarySettings


def signed_cloudinary_notification(
    payload: dict[str, Any], *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers Cloudinary would send for `payload`."""
    cfg = CloudinarySettings.from_django()
    if not cfg.api_secret:
        raise SystemExit("Cloudinary is not configured (CLOUDINARY_URL or CLOUDINARY_API_SECRET).")
    body = json.dumps(payload).encode()
    sent_at = str(int(time.time()) if timestamp is None else timestamp)
    signature = compute_hex_hash(body.decode() + sent_at + cfg.api_secret, cfg.signature_algorithm)
    return body, {
        "Content-Type": "application/json",
        "X-Cld-Timestamp": sent_at,
        "X-Cld-Signature": signature,
    }


def sample_payload(kind: str, public_id: str, version: int | None) -> dict[str, Any]:
    if kind == "delete":
        return {
            "notification_type": "delete",
            "resources": [
                {"resource_type": "image", "type": "authenticated", "public_id": public_id}
            ],
        }
    return {
        "notification_type": "upload",
        "public_id": public_id,
        "version": version or int(time.time()),
        "type": "authenticated",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--public-id", required=True)
    parser.add_argument("--type", choices=("upload", "delete"), default="upload")
    parser.add_argument("--version", type=int, default=None)
    parser.add_argument("--post", metavar="BASE_URL", default="")
    args = parser.parse_args(argv)

    django.setup()
    body, headers = signed_cloudinary_notification(
        sample_payload(args.type, args.public_id, args.version)
    )
    base = args.post.rstrip("/") or "http://127.0.0.1:8000"
    url = base + reverse("webhooks:cloudinary")
    if not args.post:
        print(body.decode())
        header_args = " ".join(f"-H {shlex.quote(f'{k}: {v}')}" for k, v in headers.items())
        print(f"curl -i -X POST {header_args} --data-binary {shlex.quote(body.decode())} {url}")
        return 0
    answer = requests.post(url, data=body, headers=headers, timeout=10)
    print(answer.status_code, answer.text)
    return 0 if answer.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
