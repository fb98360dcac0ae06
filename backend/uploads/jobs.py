"""The background jobs the upload services ask for, sent to the broker by actor name.

The actors (`backend.uploads.tasks`) are an edge above the services: they import them. The
services cannot import the actors back without an import cycle, so they enqueue a message for
the actor's name on the configured broker; tasks.py declares each actor under the name given
here, and a worker runs it with the actor's own options (retries, time limit).
"""

from __future__ import annotations

import uuid

import dramatiq
from django.db import transaction

QUEUE = "default"
#: `tasks.delete_upload(upload_id)`: delete one upload's object at its provider.
DELETE_UPLOAD = "delete_upload"
#: `tasks.recheck_deleted(upload_id)`: once a deleted upload's instructions are dead, remove an
#: object they recreated after the delete (sent by the `recheck_deleted_uploads` sweep).
RECHECK_DELETED = "recheck_deleted"


def enqueue_recheck(upload_id: object) -> None:
    """Check a deleted upload's key again, in the background (after the current transaction)."""
    transaction.on_commit(lambda: send(RECHECK_DELETED, str(upload_id)))


def enqueue_delete(upload_id: uuid.UUID) -> None:
    """Delete the upload's object at its provider in the background, once the current
    transaction commits (a job never sees a row its transaction rolled back)."""
    transaction.on_commit(lambda: send(DELETE_UPLOAD, str(upload_id)))


def send(actor_name: str, *args: str) -> None:
    """What `actor.send(*args)` does, by name: ids only, as every actor takes."""
    broker = dramatiq.get_broker()
    broker.declare_queue(QUEUE)  # a no-op once declared (in a worker: by the actors)
    broker.enqueue(
        dramatiq.Message(queue_name=QUEUE, actor_name=actor_name, args=args, kwargs={}, options={})
    )
