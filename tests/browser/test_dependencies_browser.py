"""The job page's dependencies, in a real headless browser at a laptop's width: a chain
step lists the step it waits for and the step waiting for it, each linked, and the page does
not scroll sideways."""

import pytest

from asyncjobs import chain, step
from tests import tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

try:
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover - the dev extra installs it
    expect = None


def test_a_chain_steps_page_links_its_dependency_and_dependent(
    browser, live_server, django_user_model
):
    first, middle, last = chain(
        step(tasks.add, 1, 2), step(tasks.add, 10), step(tasks.add, 100)
    ).enqueue()
    django_user_model.objects.create_superuser("ops", password="secret-pw")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", "secret-pw")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_be_visible()
    page.goto(f"{live_server.url}/admin/asyncjobs/job/{middle.id}/change/")
    section = page.locator("fieldset", has_text="Dependencies").first
    expect(section).to_contain_text("waiting")
    expect(section).to_contain_text("pending")
    assert section.locator(f'a[href$="/job/{first.id}/change/"]').count() == 1
    assert section.locator(f'a[href$="/job/{last.id}/change/"]').count() == 1
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    section.locator(f'a[href$="/job/{first.id}/change/"]').click()
    expect(page.locator("fieldset", has_text="Dependencies").first).to_contain_text("pending")
