"""The "Try it" page in a real browser: fill in a version's inputs, run it, read the outputs."""

from playwright.sync_api import expect

from executions.models import Execution
from tests.support.browser import screenshot
from tests.support.engines import ECHO_ENGINE
from tests.support.factories import ProviderFactory, SignatureVersionFactory
from tests.support.specs import QA_LEVEL_SPEC


def test_try_it_runs_a_version_and_shows_its_outputs(browser_page):
    ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    version = SignatureVersionFactory(signature__name="qa", spec=QA_LEVEL_SPEC)
    page = browser_page
    page.goto(f"/admin/registry/signatureversion/{version.pk}/change/")
    page.click("a.try-it-link")
    page.fill("#id_inputs-question", "What is the capital of France?")
    page.fill("#id_inputs-level", "1")
    page.select_option("#id_run-provider", "echo")
    page.click("input[name=run]")
    result = page.locator("#try-it-result")
    expect(result.locator(".try-it-status")).to_have_text("Succeeded")
    expect(result.locator(".try-it-outputs")).to_contain_text('"answer": "Paris"')
    expect(result.locator(".try-it-prompt").first).to_be_visible()
    screenshot(page, "try-it-version")
    assert Execution.objects.get().status == "succeeded"


def test_a_bad_input_shows_a_form_error(browser_page):
    ProviderFactory(name="echo", engine_path=ECHO_ENGINE)
    version = SignatureVersionFactory(signature__name="qa", spec=QA_LEVEL_SPEC)
    page = browser_page
    page.goto(f"/admin/try-it/version/{version.pk}/")
    page.fill("#id_inputs-question", "What is the capital of France?")
    # The number box refuses letters, so the value that reaches the server is out of range.
    page.fill("#id_run-temperature", "9")
    page.fill("#id_inputs-level", "1")
    page.evaluate("document.querySelector('#try-it-form').noValidate = true")
    page.click("input[name=run]")
    expect(page.locator(".errornote").first).to_contain_text("nothing was run")
    expect(page.locator(".try-it-run .errorlist")).to_be_visible()
    screenshot(page, "try-it-form-error")
    assert not Execution.objects.exists()
