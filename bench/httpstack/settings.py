"""Production settings plus the bench-only URL module (bench/http_presign.py); a package so `make bench` does not run it. Never deployed."""

from backend.settings import *  # noqa: F403

ROOT_URLCONF = "bench.httpstack.floor_urls"
