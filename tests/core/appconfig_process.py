"""A web process in miniature, for the two-process AppConfig test: reads commands on stdin.

`get` prints the provider this process sees (its in-memory copy, else the shared cache, else
the database); `set NAME` saves AppConfig.provider the way the admin does. Settings: the test
settings with the shared Redis cache (`APPCONFIG_CACHE_URL`, `APPCONFIG_CACHE_PREFIX`).
"""

from __future__ import annotations

import os
import sys

import django
from django.conf import settings

settings.CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["APPCONFIG_CACHE_URL"],
        "KEY_PREFIX": os.environ["APPCONFIG_CACHE_PREFIX"],
    }
}
django.setup()

from backend.core.config import get_app_config  # noqa: E402
from backend.core.models import AppConfig  # noqa: E402

print("ready", flush=True)
for line in sys.stdin:
    command = line.split()
    if command == ["get"]:
        print(get_app_config().provider, flush=True)
    elif command[:1] == ["set"]:
        row = AppConfig.load()
        row.provider = command[1]
        row.save()
        print("saved", flush=True)
