"""Bench-only Django modules for bench/http_presign.py (never imported by backend/), and the
benches' database naming, importable without starting anything."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit


def bench_database_url(suffix: str) -> str:
    """BENCH_DATABASE_URL, else a database `<name><suffix>` on TEST_POSTGRES_URL's server."""
    if os.environ.get("BENCH_DATABASE_URL"):
        return os.environ["BENCH_DATABASE_URL"]
    base = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/upload_broker")
    parts = urlsplit(base)
    name = parts.path.lstrip("/") or "upload_broker"
    return urlunsplit(parts._replace(path=f"/{name}{suffix}"))
