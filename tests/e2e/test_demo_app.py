"""The demo app without a browser: its command, its pages, and the widget's static files."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.contrib.staticfiles import finders
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from backend.core.models import AppConfig
from backend.uploads.models import MediaUpload


def run_setup(*args: str) -> str:
    out = StringIO()
    call_command("demo_setup", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_demo_setup_creates_the_user_and_selects_s3(s3_storage: Any) -> None:
    AppConfig.objects.update_or_create(pk=1, defaults={"provider": "cloudinary"})
    output = run_setup("--provider", "s3", "--password", "first-pass-123")
    assert "Created the demo user." in output
    assert "username: demo" in output and "password: first-pass-123" in output
    assert authenticate(username="demo", password="first-pass-123") is not None
    assert AppConfig.load().provider == "s3"

    # Running it again (every `make demo`) resets the password instead of failing.
    output = run_setup("--provider", "s3", "--password", "second-pass-456")
    assert "Reset the password of the demo user." in output
    assert authenticate(username="demo", password="first-pass-123") is None
    assert authenticate(username="demo", password="second-pass-456") is not None
    assert get_user_model().objects.filter(username="demo").count() == 1


@pytest.mark.django_db
def test_demo_setup_prints_a_working_random_password(s3_storage: Any) -> None:
    output = run_setup("--provider", "s3", "--username", "visitor")
    passwords = dict(re.findall(r"username: (\S+)\s+password: (\S+)", output))
    assert set(passwords) == {"visitor", "admin"}
    assert len(passwords["visitor"]) >= 16 and passwords["visitor"] != passwords["admin"]
    assert authenticate(username="visitor", password=passwords["visitor"]) is not None
    assert authenticate(username="admin", password=passwords["admin"]) is not None


@pytest.mark.django_db
def test_demo_setup_defaults_to_the_products_provider_and_makes_a_staff_admin(
    cloudinary_standin: Any,
) -> None:
    AppConfig.objects.update_or_create(pk=1, defaults={"provider": "s3"})
    output = run_setup("--password", "demo-pass-123", "--admin-password", "admin-pass-456")
    assert "Active storage provider: cloudinary" in output
    assert AppConfig.load().provider == "cloudinary"
    demo = authenticate(username="demo", password="demo-pass-123")
    admin = authenticate(username="admin", password="admin-pass-456")
    assert demo is not None and not demo.is_staff
    assert admin is not None and admin.is_staff and admin.is_superuser
    with pytest.raises(CommandError, match="different usernames"):
        run_setup("--admin-username", "demo")


@pytest.mark.django_db
def test_demo_setup_refuses_an_unconfigured_provider() -> None:
    # settings_test configures no provider at all.
    with pytest.raises(CommandError) as excinfo:
        run_setup("--provider", "cloudinary")
    assert "cloudinary provider is not configured" in str(excinfo.value)
    assert "CLOUDINARY" in str(excinfo.value)
    assert not get_user_model().objects.filter(username="demo").exists()


def _row(owner: Any, name: str, status: str = "uploaded", **extra: Any) -> MediaUpload:
    return MediaUpload.objects.create(
        owner=owner,
        provider="s3",
        key=f"uploads/{owner.pk}/{name}",
        original_filename=name,
        content_type="image/png",
        declared_size=1234,
        status=status,
        expires_at=timezone.now() + timedelta(minutes=10),
        **extra,
    )


@pytest.mark.django_db
def test_demo_page_requires_login_then_shows_widget_and_own_uploads(s3_storage: Any) -> None:
    client = Client()
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"

    user = get_user_model().objects.create_user(username="demo", password="pw-123456789")
    other = get_user_model().objects.create_user(username="other", password="pw-123456789")
    _row(user, "mine.png")
    _row(user, "bad.png", status="failed", metadata={"failure_reason": "bytes are not a PNG"})
    _row(other, "theirs.png")

    response = client.post("/login/", {"username": "demo", "password": "pw-123456789"})
    assert response.status_code == 302 and response["Location"] == "/"
    response = client.get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "<upload-widget" in html and 'api-base="/api/v1"' in html
    token = re.search(r'csrf-token="([^"]+)"', html)
    assert token is not None and response.cookies.get("csrftoken") is not None
    assert 'data-testid="provider">s3<' in html
    assert "mine.png" in html and "bytes are not a PNG" in html
    assert "theirs.png" not in html

    fragment = client.get("/demo/uploads/").content.decode()
    assert "mine.png" in fragment and "theirs.png" not in fragment
    assert "<html" not in fragment


@pytest.mark.django_db
def test_demo_page_escapes_hostile_filenames(s3_storage: Any) -> None:
    user = get_user_model().objects.create_user(username="demo", password="pw-123456789")
    _row(user, "<img src=x onerror=alert(1)>.png")
    client = Client()
    client.force_login(user)
    html = client.get("/demo/uploads/").content.decode()
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in html


@pytest.mark.django_db
def test_demo_page_says_when_no_provider_is_configured() -> None:
    user = get_user_model().objects.create_user(username="demo", password="pw-123456789")
    client = Client()
    client.force_login(user)
    response = client.get("/")
    assert response.status_code == 200
    assert 'data-testid="provider">none configured<' in response.content.decode()


def test_widget_static_files_are_found() -> None:
    for name in (
        "upload-widget/upload-widget.js",
        "upload-widget/upload-widget.css",
        "demo/demo.js",
        "demo/demo.css",
    ):
        assert finders.find(name), name
    source = Path(finders.find("upload-widget/upload-widget.js")).read_text()
    # The module speaks only the documented API and never builds markup from strings.
    assert "/uploads/" in source and "/confirm/" in source and "/config/" in source
    assert "innerHTML" not in source


@pytest.mark.django_db
def test_demo_list_download_links_deletable_pending_rows_and_one_size_unit(
    s3_storage: Any,
) -> None:
    user = get_user_model().objects.create_user(username="demo", password="pw-123456789")
    other = get_user_model().objects.create_user(username="other", password="pw-123456789")
    done = _row(user, "done.png")
    waiting = _row(user, "waiting-with-a-very-long-name-" + "x" * 80 + ".png", status="pending")
    theirs = _row(other, "theirs.png")
    client = Client()
    client.force_login(user)
    html = client.get("/demo/uploads/").content.decode()
    assert f'href="/demo/uploads/{done.id}/download/"' in html
    assert f'href="/demo/uploads/{waiting.id}/download/"' not in html  # nothing to download yet
    assert f'class="demo-delete" data-upload-id="{waiting.id}"' in html  # pending: deletable
    assert "1.2 KB" in html and "bytes" not in html  # 1234 bytes, as the widget writes sizes
    assert f'title="{waiting.original_filename}"' in html  # truncated on screen, full on hover

    answer = client.get(f"/demo/uploads/{done.id}/download/")
    assert answer.status_code == 302
    assert done.key in answer["Location"] and "Signature" in answer["Location"]
    assert client.get(f"/demo/uploads/{waiting.id}/download/").status_code == 404
    assert client.get(f"/demo/uploads/{theirs.id}/download/").status_code == 404
    assert client.get("/demo/uploads/not-an-id/download/").status_code == 404
    page = client.get("/").content.decode()
    assert 'data-testid="switch-provider"' in page and 'href="/admin/core/appconfig/"' in page
