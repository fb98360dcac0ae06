"""Production settings plus the bench-only URL module, for bench/http_presign.py.

A package (not bench/*.py) so `make bench` does not run it. Never deployed."""

from backend.settings import *  # noqa: F403

ROOT_URLCONF = "bench.httpstack.floor_urls"
