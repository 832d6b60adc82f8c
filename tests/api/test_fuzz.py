"""A schema-driven fuzz run of the API (schemathesis): no 5xx, no response that violates the
schema. Bounded: a few examples per operation, no deadline. Slow (tens of seconds) and, with
schemathesis to import and the schema to build, kept out of ``make test-fast`` whole."""

import pytest
import schemathesis
from django.contrib.auth.models import Permission, User
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

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
