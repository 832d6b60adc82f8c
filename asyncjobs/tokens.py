"""Per-job status tokens: a signed, expiring capability to read one job through the API.

Hand ``status_url(job_id)`` (or ``make_token``) to a client that has no session, such as a
mobile app or another service; the token opens that job and nothing else.
"""

import uuid
from datetime import timedelta

from django.core import signing
from django.urls import reverse

from asyncjobs.conf import jobs_settings

SALT = "asyncjobs.status-token"


def make_token(job_id: uuid.UUID | str) -> str:
    """A token that lets its holder read job ``job_id`` until ``STATUS_TOKEN_MAX_AGE``."""
    return signing.TimestampSigner(salt=SALT).sign(str(job_id))


def check_token(token: str, job_id: uuid.UUID | str, *, max_age: timedelta | None = None) -> bool:
    """Whether ``token`` is a valid, unexpired token for ``job_id`` (and only that job)."""
    if not token or len(token) > 200:
        return False
    age = max_age if max_age is not None else jobs_settings.STATUS_TOKEN_MAX_AGE
    try:
        value = signing.TimestampSigner(salt=SALT).unsign(token, max_age=age)
    except signing.BadSignature:  # also SignatureExpired
        return False
    return value == str(job_id)


def status_url(job_id: uuid.UUID | str, *, request: object | None = None) -> str:
    """The URL of ``/jobs/<id>/`` with a status token, absolute if ``request`` is given.

    Needs ``asyncjobs.urls`` included in the project's URLconf.
    """
    path = f"{reverse('asyncjobs:job-detail', args=[str(job_id)])}?token={make_token(job_id)}"
    build = getattr(request, "build_absolute_uri", None)
    return build(path) if build else path
