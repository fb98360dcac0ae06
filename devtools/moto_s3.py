"""A local S3 emulator (moto server) on loopback, with the bucket and its CORS rule created.

    python -m devtools.moto_s3 [--port 9000] [--bucket uploads-dev] [--origin http://localhost:8000]

Then point the app at it: AWS_S3_ENDPOINT_URL=http://127.0.0.1:9000, AWS_STORAGE_BUCKET_NAME,
AWS_S3_REGION_NAME=us-east-1 and any non-empty AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
moto checks no POST policy, signature or expiry: it proves the wiring, not the security.
"""

from __future__ import annotations

import argparse
import logging
import socket
import time
from typing import Any

import boto3
from botocore.config import Config

DEFAULT_BUCKET = "uploads-dev"
DEFAULT_REGION = "us-east-1"
DEV_ACCESS_KEY = "moto-dev-key"
DEV_SECRET_KEY = "moto-dev-secret"  # not a secret: moto accepts any credentials


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def cors_rules(origins: list[str]) -> list[dict[str, Any]]:
    """The CORS rule a browser needs for direct uploads (see docs/providers.md)."""
    return [
        {
            "AllowedOrigins": origins,
            "AllowedMethods": ["GET", "HEAD", "POST", "PUT"],
            "AllowedHeaders": ["*"],
            # Multipart uploads need the ETag of every part, read by browser JavaScript.
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": 3000,
        }
    ]


def admin_client(endpoint_url: str, region: str = DEFAULT_REGION) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=DEV_ACCESS_KEY,
        aws_secret_access_key=DEV_SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def prepare_bucket(
    endpoint_url: str, bucket: str, origins: list[str], region: str = DEFAULT_REGION
) -> None:
    client = admin_client(endpoint_url, region)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": cors_rules(origins)})


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


class MotoS3:
    """A moto ThreadedMotoServer with one prepared bucket. `start()` then `.endpoint_url`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bucket: str = DEFAULT_BUCKET,
        origins: list[str] | None = None,
        region: str = DEFAULT_REGION,
    ) -> None:
        from moto.server import ThreadedMotoServer

        self.host = host
        self.port = port or free_port(host)
        self.bucket = bucket
        self.region = region
        self.origins = origins or ["*"]
        self._server = ThreadedMotoServer(ip_address=host, port=self.port, verbose=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MotoS3:
        # werkzeug logs every request at INFO; keep test and demo output readable.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        wait_for_port(self.host, self.port)
        prepare_bucket(self.endpoint_url, self.bucket, self.origins, self.region)
        return self

    def stop(self) -> None:
        self._server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--bucket", default=DEFAULT_BUCKET)
    parser.add_argument("--region", default=DEFAULT_REGION)
    parser.add_argument(
        "--origin", action="append", help="allowed CORS origin (repeatable; default: any)"
    )
    args = parser.parse_args(argv)
    server = MotoS3(
        host=args.host, port=args.port, bucket=args.bucket, origins=args.origin, region=args.region
    ).start()
    print(f"moto S3 listening on {server.endpoint_url}, bucket {server.bucket!r} ready")
    print(
        f"AWS_S3_ENDPOINT_URL={server.endpoint_url} AWS_STORAGE_BUCKET_NAME={server.bucket} "
        f"AWS_S3_REGION_NAME={server.region}"
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
