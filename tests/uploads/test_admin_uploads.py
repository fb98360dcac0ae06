"""MediaUpload admin: filters, search, read-only provider facts, and the "Delete at provider"
action going through the delete job after commit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from dramatiq.brokers.stub import StubBroker

from backend.storage.base import ObjectRef
from backend.storage.factory import CloudStorageFactory
from backend.uploads import tasks
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.memory import InMemoryStorageService

CHANGELIST = "admin:uploads_mediaupload_changelist"


def make_row(owner: Any, provider: str = "s3", name: str = "photo.png", **kw: Any) -> MediaUpload:
    uid = uuid.uuid4()
    return MediaUpload.objects.create(
        **{
            "id": uid,
            "owner": owner,
            "provider": provider,
            "key": f"uploads/{owner.pk}/{uid.hex}/{name}",
            "original_filename": name,
            "content_type": "image/png",
            "declared_size": 3,
            "expires_at": timezone.now() + timedelta(minutes=10),
            **kw,
        }
    )


@pytest.fixture
def people(django_user_model: Any) -> tuple[Any, Any, Any]:
    admin = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw")
    alice = django_user_model.objects.create_user("alice", password="x")
    bob = django_user_model.objects.create_user("bob", password="x")
    return admin, alice, bob


@pytest.fixture
def admin_client_(people: tuple[Any, Any, Any]) -> Client:
    client = Client()
    client.force_login(people[0])
    return client


def listed(client: Client, **params: str) -> set[str]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return {str(row.pk) for row in response.context["cl"].result_list}


@pytest.mark.django_db
def test_filters_and_search(admin_client_: Client, people: Any) -> None:
    _, alice, bob = people
    a_s3 = make_row(alice, "s3", "holiday.png")
    a_cld = make_row(alice, "cloudinary", "cat.png", status=UploadStatus.UPLOADED)
    b_s3 = make_row(bob, "s3", "invoice.pdf", status=UploadStatus.EXPIRED)

    assert listed(admin_client_) == {str(a_s3.pk), str(a_cld.pk), str(b_s3.pk)}
    assert listed(admin_client_, provider__exact="s3") == {str(a_s3.pk), str(b_s3.pk)}
    assert listed(admin_client_, status__exact="uploaded") == {str(a_cld.pk)}
    assert listed(admin_client_, owner__id__exact=str(bob.pk)) == {str(b_s3.pk)}
    assert listed(admin_client_, q="holiday") == {str(a_s3.pk)}
    assert listed(admin_client_, q=a_cld.key.split("/")[2]) == {str(a_cld.pk)}  # by key


@pytest.mark.django_db
def test_detail_shows_metadata_readably_and_nothing_is_editable(
    admin_client_: Client, people: Any
) -> None:
    row = make_row(
        people[1],
        status=UploadStatus.UPLOADED,
        metadata={"etag": "abc123", "width": 640, "note": "<script>x</script>"},
    )
    url = reverse("admin:uploads_mediaupload_change", args=[row.pk])
    response = admin_client_.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<pre style="white-space: pre-wrap">' in html
    assert "&quot;etag&quot;: &quot;abc123&quot;" in html  # indented JSON, escaped
    assert "<script>x</script>" not in html
    for field in ("provider", "key", "status", "metadata", "declared_size", "owner"):
        assert f'name="{field}"' not in html

    # A forged POST cannot change provider facts either.
    admin_client_.post(url, {"provider": "cloudinary", "key": "evil", "status": "uploaded"})
    row.refresh_from_db()
    assert (row.provider, row.key.startswith("uploads/")) == ("s3", True)


@pytest.mark.django_db
def test_no_add_no_plain_delete(admin_client_: Client, people: Any) -> None:
    row = make_row(people[1])
    assert admin_client_.get(reverse("admin:uploads_mediaupload_add")).status_code == 403
    delete_url = reverse("admin:uploads_mediaupload_delete", args=[row.pk])
    assert admin_client_.post(delete_url, {"post": "yes"}).status_code == 403
    response = admin_client_.get(reverse(CHANGELIST))
    actions = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in actions and "delete_at_provider" in actions
    assert MediaUpload.objects.filter(pk=row.pk).exists()


@pytest.fixture
def memory_s3(transactional_db: None) -> Iterator[InMemoryStorageService]:
    fake = InMemoryStorageService("s3", delete_batch_size=1000)
    CloudStorageFactory.reset()
    CloudStorageFactory.install(fake)
    yield fake
    CloudStorageFactory.reset()


def test_delete_at_provider_action_goes_through_the_job(
    memory_s3: InMemoryStorageService,
    people: Any,
    admin_client_: Client,
    broker: StubBroker,
) -> None:
    _, alice, bob = people
    rows = [make_row(alice), make_row(bob, status=UploadStatus.UPLOADED)]
    gone = make_row(alice, status=UploadStatus.EXPIRED)
    for row in [*rows, gone]:
        memory_s3.put(ObjectRef(row.key), b"abc")

    response = admin_client_.post(
        reverse(CHANGELIST),
        {"action": "delete_at_provider", ACTION_CHECKBOX_NAME: [str(r.pk) for r in [*rows, gone]]},
        follow=True,
    )
    assert response.status_code == 200
    text = " ".join(str(m) for m in response.context["messages"])
    assert "2 upload(s) marked for deletion" in text and "already expired" in text

    # Marked, enqueued once per row (after commit), but nothing deleted yet at the provider.
    assert {r.status for r in MediaUpload.objects.filter(pk__in=[r.pk for r in rows])} == {
        UploadStatus.DELETING
    }
    messages = [dramatiq.Message.decode(m) for m in list(broker.queues[tasks.QUEUE].queue)]
    assert sorted(m.args[0] for m in messages) == sorted(str(r.pk) for r in rows)
    assert len(memory_s3.keys()) == 3

    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        broker.join(tasks.QUEUE, timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    assert {r.status for r in MediaUpload.objects.filter(pk__in=[r.pk for r in rows])} == {
        UploadStatus.DELETED
    }
    assert memory_s3.keys() == [gone.key]  # only the selected, deletable rows' objects
