"""The API's pages for people (issue 24, part 5): the example project's ``/api/docs/`` serves
Swagger UI from the installed drf-spectacular-sidecar, not from a CDN (it works offline;
tests/browser renders it with every outside request blocked), and the browsable API shows
the views' descriptions without raw reStructuredText markup."""

import re

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders

from asyncjobs.api.descriptions import describe
from tests import tasks

pytestmark = pytest.mark.django_db


@pytest.mark.urls("example_project.urls")
def test_swagger_ui_is_served_by_the_project_not_a_cdn(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-dist/swagger-ui-bundle.js") for a in assets), assets
    for asset in assets:
        assert not asset.startswith(("http:", "https:", "//")), asset
        if asset.startswith("/static/"):
            assert finders.find(asset.removeprefix("/static/")), asset  # shipped, installed
    assert "cdn." not in html and "jsdelivr" not in html


def test_describe_renders_inline_literals():
    doc = """``GET /jobs/<id>/``: the job, for ``staff``
        & its owner.

        Second paragraph."""
    assert describe(doc) == "GET /jobs/<id>/: the job, for staff\n& its owner.\n\nSecond paragraph."
    assert describe(doc, html=True) == (
        "<p><code>GET /jobs/&lt;id&gt;/</code>: the job, for <code>staff</code> &amp; its "
        "owner.</p><p>Second paragraph.</p>"
    )
    assert describe("", html=True) == ""


def test_browsable_api_shows_no_raw_markup(client):
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    job = tasks.add.enqueue(1, 1)
    for url, code in (
        ("/jobs/", "<code>GET /jobs/</code>"),
        (f"/jobs/{job.id}/", "<code>GET /jobs/&lt;id&gt;/</code>"),
        ("/jobs/stats/", "<code>GET /jobs/stats/</code>"),
    ):
        html = client.get(url, HTTP_ACCEPT="text/html").content.decode()
        assert "``" not in html, url
        assert code in html, url
    options = client.options("/jobs/", HTTP_ACCEPT="application/json").json()
    assert options["description"].startswith("GET /jobs/: jobs for asyncjobs.view_job")
    assert "``" not in options["description"]
