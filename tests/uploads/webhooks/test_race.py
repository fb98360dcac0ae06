"""A client confirm and a provider event racing for one row (PostgreSQL, real threads).

A trigger records every status change the database actually performs, so "exactly one
transition" is what PostgreSQL saw, not what the code believes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from backend.uploads import services
from backend.uploads.models import MediaUpload, UploadStatus
from tests.fixtures.providers import S3_TEST_BUCKET, use_provider
from tests.uploads.webhooks.conftest import S3_WEBHOOK
from tests.uploads.webhooks.sns_signing import SnsSigner, s3_event

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

CONTENT = b"raced upload\n"
ROUNDS = 12


@pytest.fixture
def transition_log(transactional_db: None) -> Iterator[None]:
    table = MediaUpload._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE webhooks_race_log (id serial PRIMARY KEY, upload_id uuid, "
            "old_status text, new_status text, verified_by text)"
        )
        cursor.execute(
            """
            CREATE FUNCTION webhooks_race_log_fn() RETURNS trigger AS $$
            BEGIN
                IF OLD.status IS DISTINCT FROM NEW.status THEN
                    INSERT INTO webhooks_race_log (upload_id, old_status, new_status, verified_by)
                    VALUES (NEW.id, OLD.status, NEW.status, NEW.metadata->>'verified_by');
                END IF;
                RETURN NEW;
            END $$ LANGUAGE plpgsql
            """
        )
        cursor.execute(
            f"CREATE TRIGGER webhooks_race_log_trg AFTER UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION webhooks_race_log_fn()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS webhooks_race_log_trg ON {table}")
            cursor.execute("DROP FUNCTION IF EXISTS webhooks_race_log_fn()")
            cursor.execute("DROP TABLE IF EXISTS webhooks_race_log")


def _run_together(*targets: Any) -> list[Any]:
    barrier = threading.Barrier(len(targets))
    results: list[Any] = [None] * len(targets)

    def run(i: int, target: Any) -> None:
        from django.db import connection as thread_connection

        try:
            barrier.wait(timeout=10)
            results[i] = target()
        except Exception as exc:  # reported to the test, not swallowed
            results[i] = exc
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a racer hung"
    return results


def test_confirm_and_s3_event_race_to_one_transition(
    transition_log: None, s3_storage: Any, signer: SnsSigner
) -> None:
    use_provider("s3")
    user = get_user_model().objects.create_user("racer", password="pw-not-used-123")
    for round_no in range(ROUNDS):
        row, _ = services.create_upload(
            owner=user,
            filename=f"race-{round_no}.txt",
            content_type="text/plain",
            size=len(CONTENT),
        )
        s3_storage.client.put_object(
            Bucket=S3_TEST_BUCKET, Key=row.key, Body=CONTENT, ContentType="text/plain"
        )
        message = signer.notification(s3_event(row.key, bucket=S3_TEST_BUCKET))

        def confirm(row: MediaUpload = row) -> Any:
            return services.confirm_upload(owner=user, upload_id=row.id, payload={})

        def webhook(message: dict[str, Any] = message) -> Any:
            return Client().post(S3_WEBHOOK, data=json.dumps(message), content_type="text/plain")

        confirmed, delivered = _run_together(confirm, webhook)

        assert isinstance(confirmed, MediaUpload), confirmed
        assert confirmed.status == UploadStatus.UPLOADED
        assert delivered.status_code == 200, delivered.content
        row.refresh_from_db()
        assert row.status == UploadStatus.UPLOADED
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT old_status, new_status, verified_by FROM webhooks_race_log "
                "WHERE upload_id = %s",
                [row.id],
            )
            transitions = cursor.fetchall()
        assert transitions == [("pending", "uploaded", row.metadata["verified_by"])]
        assert row.metadata["verified_by"] in ("client", "s3_event")
        # Whoever lost saw the winner's row, not its own version of the metadata.
        assert confirmed.metadata == row.metadata
        assert confirmed.confirmed_at == row.confirmed_at
