"""`manage.py demo_setup`: the demo user, an admin (staff) user and the active provider.

Dev only (`make demo`): it prints the passwords it sets, which is what a local demo wants and
nothing else does.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from backend.core.provider_choices import default_provider
from backend.storage import registry
from backend.storage.config_service import CloudStorageConfigService
from backend.storage.switching import activate_provider


class Command(BaseCommand):
    help = (
        "Create (or reset) the demo user and an admin (staff) user, and make PROVIDER the "
        "active storage provider (`make demo`). Prints the credentials."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument(
            "--password",
            default="",
            help="Password to set; a random one is generated (and printed) when empty.",
        )
        parser.add_argument("--admin-username", default="admin")
        parser.add_argument(
            "--admin-password",
            default="",
            help="The admin's password; a random one is generated (and printed) when empty.",
        )
        parser.add_argument(
            "--no-admin", action="store_true", help="Do not create or reset the admin user."
        )
        parser.add_argument(
            "--provider",
            choices=registry.names(),
            # None: the product's default provider (`make demo` runs its local stand-in).
            default=None,
            help="Provider new uploads go to (default: the product's default provider).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        provider: str = options["provider"] or default_provider()
        problems = CloudStorageConfigService.problems(provider)
        if problems:
            raise CommandError(f"The {provider} provider is not configured: " + "; ".join(problems))
        accounts = [(options["username"], options["password"], False)]
        if not options["no_admin"]:
            accounts.append((options["admin_username"], options["admin_password"], True))
        if len({name for name, _, _ in accounts}) != len(accounts):
            raise CommandError("The demo user and the admin need different usernames.")
        lines = []
        with transaction.atomic():
            for username, given, staff in accounts:
                password = given or secrets.token_urlsafe(12)
                user, created = get_user_model().objects.get_or_create(username=username)
                user.set_password(password)
                user.is_active = True
                user.is_staff = user.is_superuser = staff
                user.save()
                what = "admin (staff) user" if staff else "demo user"
                verb = "Created" if created else "Reset the password of"
                lines.append(f"{verb} the {what}.")
                lines.append(f"  username: {username}")
                lines.append(f"  password: {password}")
            activate_provider(provider, actor="manage.py demo_setup")
        self.stdout.write(f"Active storage provider: {provider}")
        for line in lines:
            self.stdout.write(line)
