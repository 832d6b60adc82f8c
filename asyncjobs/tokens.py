"""Status tokens: a signed, expiring capability to read one job, or one batch, through the API.

Hand ``status_url(job_id)`` (or ``make_token``) to a client that has no session, such as a
mobile app or another service; the token opens that job and nothing else. A batch has its
own tokens (``batch_status_url``, ``make_batch_token``), signed with another salt: a job's
token never opens a batch, and a batch's never opens a job, even one of its own.
"""

import uuid
from datetime import timedelta

from django.core import signing
from django.urls import reverse

from asyncjobs.conf import jobs_settings

SALT = "asyncjobs.status-token"
BATCH_SALT = "asyncjobs.batch-status-token"
# Longer values are refused before any signature work: a real token is about 80 characters.
MAX_TOKEN_LENGTH = 200


def _sign(salt: str, value: uuid.UUID | str) -> str:
    return signing.TimestampSigner(salt=salt).sign(str(value))


def _check(salt: str, token: str, value: uuid.UUID | str, max_age: timedelta | None) -> bool:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return False
    age = max_age if max_age is not None else jobs_settings.STATUS_TOKEN_MAX_AGE
    try:
        signed = signing.TimestampSigner(salt=salt).unsign(token, max_age=age)
    except signing.BadSignature:  # also SignatureExpired
        return False
    return signed == str(value)


def _with_token(path: str, token: str, request: object | None) -> str:
    path = f"{path}?token={token}"
    build = getattr(request, "build_absolute_uri", None)
    return build(path) if build else path


def make_token(job_id: uuid.UUID | str) -> str:
    """A token that lets its holder read job ``job_id`` until ``STATUS_TOKEN_MAX_AGE``."""
    return _sign(SALT, job_id)


def check_token(token: str, job_id: uuid.UUID | str, *, max_age: timedelta | None = None) -> bool:
    """Whether ``token`` is a valid, unexpired token for ``job_id`` (and only that job)."""
    return _check(SALT, token, job_id, max_age)


def status_url(job_id: uuid.UUID | str, *, request: object | None = None) -> str:
    """The URL of ``/jobs/<id>/`` with a status token, absolute if ``request`` is given.

    Needs ``asyncjobs.urls`` included in the project's URLconf.
    """
    path = reverse("asyncjobs:job-detail", args=[str(job_id)])
    return _with_token(path, make_token(job_id), request)


def make_batch_token(batch_id: uuid.UUID | str) -> str:
    """A token that lets its holder read batch ``batch_id`` (its progress and its failures,
    not its jobs) until ``STATUS_TOKEN_MAX_AGE``."""
    return _sign(BATCH_SALT, batch_id)


def check_batch_token(
    token: str, batch_id: uuid.UUID | str, *, max_age: timedelta | None = None
) -> bool:
    """Whether ``token`` is a valid, unexpired token for batch ``batch_id`` (and only it)."""
    return _check(BATCH_SALT, token, batch_id, max_age)


def batch_status_url(batch_id: uuid.UUID | str, *, request: object | None = None) -> str:
    """The URL of ``/jobs/batches/<id>/`` with a batch token, absolute if ``request`` is
    given. Needs ``asyncjobs.urls`` included in the project's URLconf."""
    path = reverse("asyncjobs:batch-detail", args=[str(batch_id)])
    return _with_token(path, make_batch_token(batch_id), request)
