"""The media upload service: the only code that writes `MediaUpload`.

State machine (every transition is a conditional UPDATE on the current status, so two actors
racing on one row can never both win):

    pending --finalise ok--> uploaded --request_delete--> deleting --delete_at_provider--> deleted
    pending --mismatch-----> failed   (object deleted at the provider)
    pending --cleanup claim-> expiring -> expired       (backend.uploads.cleanup)

A `deleted` row never leaves that state: once the upload's instructions are dead
(`expires_at` + a margin), a periodic sweep (`rechecks_due`) sends `recheck_deleted`, which
removes any object they recreated meanwhile.

One module per concern: `create` (policy, quotas, key, instructions), `finalise` (confirm, the
one verified finalise path), `delete` (on request, at the provider, reported by the provider),
`reverify` (an uploaded object written again), `multipart` (large files in parts). Reads are
in `backend.uploads.selectors`; background jobs are asked for through `backend.uploads.jobs`.
The names below are the service's API for the edges (views, webhooks, actors, admin).
"""

from backend.uploads.services.create import (
    NewUploadRequest,
    NotAuthenticated,
    create_upload,
    new_key,
    notification_url_for,
    validate_new_upload,
)
from backend.uploads.services.delete import (
    delete_at_provider,
    mark_deleted_by_provider,
    recheck_deleted,
    rechecks_due,
    request_delete,
)
from backend.uploads.services.finalise import (
    TRUSTED_SOURCES,
    VerificationFailed,
    confirm_upload,
    finalise_upload,
    raise_for_state,
)
from backend.uploads.services.reverify import reverify_uploaded

__all__ = [
    "TRUSTED_SOURCES",
    "NewUploadRequest",
    "NotAuthenticated",
    "VerificationFailed",
    "confirm_upload",
    "create_upload",
    "delete_at_provider",
    "finalise_upload",
    "mark_deleted_by_provider",
    "new_key",
    "notification_url_for",
    "raise_for_state",
    "recheck_deleted",
    "rechecks_due",
    "request_delete",
    "reverify_uploaded",
    "validate_new_upload",
]
