"""The OpenAPI schema: generated without warnings, every endpoint in it. The schema-driven
fuzz run of the API is in test_fuzz.py."""

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_schema_generates_without_warnings():
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--file", "/dev/null")


def test_schema_lists_every_endpoint(client):
    response = client.get("/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert set(paths) >= {
        "/jobs/",
        "/jobs/stats/",
        "/jobs/{job_id}/",
        "/jobs/{job_id}/events/",
        "/jobs/{job_id}/retry/",
        "/jobs/{job_id}/cancel/",
    }
