"""The OpenAPI schema, and a schema-driven fuzz run of the API (schemathesis): no 5xx, no
response that violates the schema. Bounded: a few examples per operation, no deadline."""

import pytest
import schemathesis
from django.contrib.auth.models import Permission, User
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

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


schema = schemathesis.openapi.from_wsgi("/schema/?format=json", get_wsgi_application())


@pytest.fixture
def operator_auth(db):
    user = User.objects.create_user("fuzz", password="fuzz-pw", is_staff=True)
    for codename in ("retry_job", "cancel_job", "add_job", "view_job"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return ("fuzz", "fuzz-pw")


@schema.exclude(path_regex="events").parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_fuzz(case, operator_auth):
    # Every check but "schema-valid data is accepted": the schema cannot express business
    # rules such as the callback URL allow-list, so valid-looking bodies are rightly refused.
    case.call_and_validate(auth=operator_auth, excluded_checks=[positive_data_acceptance])
