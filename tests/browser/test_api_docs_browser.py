"""The example project's ``/api/docs/`` in a real browser with every request outside the
test server blocked (as offline): Swagger UI comes from the installed sidecar and renders
the job API's operations."""

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra installs it
    expect = None


@pytest.mark.urls("example_project.urls")
def test_swagger_ui_renders_offline(browser, live_server):
    own = urlsplit(live_server.url).netloc
    outside = []
    page = browser.new_page(viewport={"width": 1280, "height": 800})

    def route(route_):
        if urlsplit(route_.request.url).netloc == own:
            route_.continue_()
        else:
            outside.append(route_.request.url)
            route_.abort()

    page.route("**/*", route)
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("asyncjobs")
    expect(page.locator(".opblock-summary-path", has_text="/jobs/{job_id}/").first).to_be_visible()
    assert outside == []
