"""`manage.py demo_setup`: the demo user and the active provider for `make demo`.

Dev only: it prints the password it sets, which is what a local demo wants and nothing else does.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from backend.storage import registry
from backend.storage.config_service import CloudStorageConfigService
from backend.storage.s3 import S3Service
from backend.storage.switching import activate_provider


class Command(BaseCommand):
    help = (
        "Create (or reset) the demo user and point the active storage provider at the "
        "configured store (the local S3 emulator under `make demo`). Prints the credentials."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument(
            "--password",
            default="",
            help="Password to set; a random one is generated (and printed) when empty.",
        )
        parser.add_argument(
            "--provider",
            choices=registry.names(),
            # The store `make demo` emulates locally (devtools/moto_s3.py).
            default=S3Service.name,
            help=f"Provider new uploads go to (default: {S3Service.name}, the emulator).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        provider: str = options["provider"]
        problems = CloudStorageConfigService.problems(provider)
        if problems:
            raise CommandError(f"The {provider} provider is not configured: " + "; ".join(problems))
        password: str = options["password"] or secrets.token_urlsafe(12)
        username: str = options["username"]
        with transaction.atomic():
            user, created = get_user_model().objects.get_or_create(username=username)
            user.set_password(password)
            user.is_active = True
            user.save()
            activate_provider(provider, actor="manage.py demo_setup")
        verb = "Created" if created else "Reset the password of"
        self.stdout.write(f"{verb} the demo user.")
        self.stdout.write(f"Active storage provider: {provider}")
        self.stdout.write(f"  username: {username}")
        self.stdout.write(f"  password: {password}")
