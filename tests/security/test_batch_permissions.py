"""Who may read a batch: the same rules as for a job (tests/security/test_permissions.py),
with the batch's own token.

Callers as there: ``token_header`` / ``token_query`` hold the batch's token. Whoever may not
read a batch gets 404, the same answer as for a batch that does not exist. A job's token
never opens a batch (not even the batch of that job), and a batch's token never opens a job
(not even one of its own) nor another batch.
"""

import uuid
from datetime import timedelta

import pytest
from freezegun import freeze_time

from asyncjobs.models import Job, JobStatus
from asyncjobs.tokens import make_batch_token, make_token
from tests.batches import make_batch
from tests.security.test_permissions import CALLERS, READ, people, request  # noqa: F401

pytestmark = pytest.mark.django_db

SECRET = "the owner's secret row"


@pytest.fixture
def batch(people):  # noqa: F811 (the fixture imported above)
    made = make_batch(statuses=[JobStatus.SUCCEEDED, JobStatus.FAILED], owner=people["owner"])
    Job.objects.filter(batch=made, status=JobStatus.FAILED).update(last_error_message=SECRET)
    return made


def batch_request(people, who, url, batch_id, token=None):  # noqa: F811
    """``request`` of test_permissions, with a batch token instead of a job token."""
    from rest_framework.test import APIClient

    client = APIClient()
    extra = {}
    token = token if token is not None else make_batch_token(batch_id)
    if who in people:
        client.force_login(people[who])
    elif who == "token_header":
        extra["HTTP_X_JOB_TOKEN"] = token
    elif who == "token_query":
        url += f"?token={token}"
    response = client.get(url, **extra)
    if response.streaming:
        b"".join(response.streaming_content)
    return response


@pytest.mark.parametrize(("who", "expected"), READ)
@pytest.mark.parametrize("part", ["", "events/"])
def test_read_matrix(people, batch, who, expected, part):  # noqa: F811
    response = batch_request(people, who, f"/jobs/batches/{batch.pk}/{part}", batch.pk)
    assert response.status_code == expected
    if expected != 200:
        assert SECRET not in response.content.decode()
    elif not part:
        assert response.json()["failures"]["jobs"][0]["message"] == SECRET


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("part", ["", "events/"])
def test_a_batch_that_does_not_exist_is_404_for_everyone(people, who, part):  # noqa: F811
    batch_id = uuid.uuid4()
    assert (
        batch_request(people, who, f"/jobs/batches/{batch_id}/{part}", batch_id).status_code == 404
    )


@pytest.mark.parametrize("who", ["token_header", "token_query"])
def test_a_jobs_token_does_not_open_its_batch(people, batch, who):  # noqa: F811
    job = batch.jobs.first()
    for token in (make_token(job.pk), make_token(batch.pk)):
        response = batch_request(people, who, f"/jobs/batches/{batch.pk}/", batch.pk, token)
        assert response.status_code == 404


@pytest.mark.parametrize("who", ["token_header", "token_query"])
def test_a_batch_token_opens_no_job_and_no_other_batch(people, batch, who):  # noqa: F811
    token = make_batch_token(batch.pk)
    for job in batch.jobs.all():
        assert batch_request(people, who, f"/jobs/{job.pk}/", job.pk, token).status_code == 404
    other = make_batch(statuses=[JobStatus.QUEUED], owner=people["owner"])
    assert (
        batch_request(people, who, f"/jobs/batches/{other.pk}/", other.pk, token).status_code == 404
    )
    # Nor a job whose id happens to be the batch's: the salts differ.
    assert batch_request(people, who, f"/jobs/{batch.pk}/", batch.pk, token).status_code == 404


@pytest.mark.parametrize(
    "token",
    ["", "x", "forged:1tq2Zx:abc", "a" * 201, "\x00", "é" * 50, "None", ":" * 10],
)
def test_forged_tokens_open_nothing(people, batch, token):  # noqa: F811
    for who in ("token_header", "token_query"):
        response = batch_request(people, who, f"/jobs/batches/{batch.pk}/", batch.pk, token)
        assert response.status_code == 404


def test_a_batch_token_expires(people, batch, settings):  # noqa: F811
    settings.ASYNCJOBS = {**settings.ASYNCJOBS, "STATUS_TOKEN_MAX_AGE": timedelta(hours=1)}
    with freeze_time() as clock:
        token = make_batch_token(batch.pk)
        url = f"/jobs/batches/{batch.pk}/"
        assert batch_request(people, "token_query", url, batch.pk, token).status_code == 200
        clock.tick(timedelta(hours=1, seconds=1))
        assert batch_request(people, "token_query", url, batch.pk, token).status_code == 404


def test_the_owner_of_a_job_in_the_batch_is_not_the_batchs_owner(people):  # noqa: F811
    """Reading a batch takes the batch's owner, not the owner of one of its jobs."""
    made = make_batch(statuses=[JobStatus.QUEUED])
    Job.objects.filter(batch=made).update(enqueued_by=people["owner"])
    assert batch_request(people, "owner", f"/jobs/batches/{made.pk}/", made.pk).status_code == 404


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_batches_are_read_only(people, batch, method):  # noqa: F811
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(people["superuser"])
    response = getattr(client, method)(f"/jobs/batches/{batch.pk}/", {}, format="json")
    assert response.status_code == 405
