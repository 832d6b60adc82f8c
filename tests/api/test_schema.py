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
        "/jobs/batches/{batch_id}/",
        "/jobs/batches/{batch_id}/events/",
    }


def test_the_batch_schema_describes_its_fields(client):
    schema = client.get("/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    batch = schema["components"]["schemas"]["Batch"]
    assert set(batch["properties"]) >= {
        "id",
        "state",
        "total",
        "counts",
        "percent",
        "failures",
        "links",
    }
    state = batch["properties"]["state"]["allOf"][0]["$ref"].rpartition("/")[2]
    assert schema["components"]["schemas"][state]["enum"] == [
        "open",
        "running",
        "succeeded",
        "failed",
    ]
    assert all(field.get("readOnly") for field in batch["properties"].values())
    parameters = schema["paths"]["/jobs/batches/{batch_id}/"]["get"]["parameters"]
    assert {"X-Job-Token", "token"} <= {p["name"] for p in parameters}
