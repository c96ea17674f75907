"""The web UI in a real headless Chromium (Debian's, driven by Playwright)
against the shared ``genesis serve``: sign-in trades a token for a cookie, the
experiments table fills and updates live, the experiment page shows every
part, an operator cancels, a viewer cannot, CSRF and the cookie's flags hold,
and a hostile change's text stays text.

Experiments are real (Docker sandboxes). Waits are Playwright's own (for an
element or a text), never fixed sleeps. Each page's screenshot is kept in
``test-artifacts/web/``.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from helpers import ROOT, request_body, wait_until

pytestmark = pytest.mark.docker

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "web"
RUN_S = 240  # an experiment's whole life, first snapshot build included
HOSTILE = "<img src=x onerror=window.__pwned=1>"
PATCH = ("diff --git a/UI_NOTES.md b/UI_NOTES.md\nnew file mode 100644\n--- /dev/null\n+++ b/UI_NOTES.md\n"
         f"@@ -0,0 +1,2 @@\n+first line\n+{HOSTILE}\n")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def submit(genesis_api, body: dict) -> str:
    with genesis_api.client("operator") as client:
        response = client.post("/api/v1/experiments", json=body)
    assert response.status_code == 201, response.text
    return response.json()["metadata"]["name"]


def status_of(genesis_api, name: str) -> dict:
    with genesis_api.client("viewer") as client:
        return client.get(f"/api/v1/experiments/{name}").json()["status"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser):
    fresh = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield fresh
    fresh.close()


def sign_in(context, genesis_api, role: str, *, path: str = "") -> Page:
    page = context.new_page()
    page.goto(f"{genesis_api.url}/{path}")
    page.fill("#token", genesis_api.tokens[role])
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#role")).to_have_text(role)
    return page


@pytest.fixture(scope="module")
def finished(genesis_api) -> str:
    """An experiment run to the end whose description and patch carry markup."""
    name = submit(genesis_api, request_body(description=HOSTILE, changes={"patch": PATCH, "description": HOSTILE}))
    wait_until(lambda: status_of(genesis_api, name)["phase"] in ("Succeeded", "Failed"), timeout_s=RUN_S, poll_s=1,
               what=f"experiment {name} to finish")
    status = status_of(genesis_api, name)
    assert status["phase"] == "Succeeded", (status["reason"], status["message"])
    return name


def test_sign_in_shows_the_experiments_table(context, genesis_api, finished):
    page = context.new_page()
    page.goto(f"{genesis_api.url}/")
    expect(page.locator("#sign-in")).to_be_visible()
    shot(page, "sign-in")
    page.fill("#token", "not-a-token")
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#sign-in-status .error")).to_be_visible()
    page.fill("#token", genesis_api.tokens["operator"])
    page.click("#sign-in button[type=submit]")
    row = page.locator(f'#experiments tr[data-name="{finished}"]')
    expect(row).to_be_visible()
    expect(row.locator("td.phase")).to_have_text("Succeeded")
    expect(row.locator("td.recommendation")).not_to_be_empty()
    expect(page.locator("#experiments th")).to_have_text(
        ["Name", "Instance", "Type", "Risk", "Phase", "Recommendation", "Age", "Success", "Regression"])
    shot(page, "experiments")
    # A filter narrows the table (phase is a label; the address keeps it).
    page.select_option("#filter-phase", "Failed")
    expect(page).to_have_url(f"{genesis_api.url}/#/experiments?phase=Failed")
    expect(page.locator(f'#experiments tr[data-name="{finished}"]')).to_have_count(0)
    page.select_option("#filter-phase", "Succeeded")
    expect(page.locator(f'#experiments tr[data-name="{finished}"]')).to_be_visible()


def test_live_update_arrives_without_reload(context, genesis_api):
    page = sign_in(context, genesis_api, "viewer")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    page.evaluate("window.__sameDocument = true")
    name = submit(genesis_api, request_body())
    row = page.locator(f'#experiments tr[data-name="{name}"]')
    expect(row).to_be_visible(timeout=30_000)
    expect(row.locator("td.phase")).to_have_text("Succeeded", timeout=RUN_S * 1000)
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    shot(page, "experiments-live")


def test_experiment_page_shows_every_part(context, genesis_api, finished):
    page = sign_in(context, genesis_api, "operator", path=f"#/experiments/{finished}")
    errors = []  # a CSP violation or a script error shows here
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.reload()  # the cookie keeps the session
    expect(page.locator("#header .phase-Succeeded")).to_be_visible()
    expect(page.locator("#conditions table tbody tr").first).to_be_visible()
    metrics = page.locator("#metrics .metrics-table")
    expect(metrics).to_contain_text("success_rate")
    expect(metrics).to_contain_text("runtime_ms")
    expect(page.locator("#metrics-chart rect.bar-exp")).to_have_count(4)  # three figures and the legend
    expect(page.locator("#metrics-chart rect.bar-base")).to_have_count(4)
    expect(page.locator("#tests table")).to_contain_text("PASS_TO_PASS")
    expect(page.locator("#tests-empty")).to_contain_text("PASS_TO_FAIL")
    expect(page.locator("#patch .add").first).to_have_text("+first line")
    expect(page.locator("#patch .meta").first).to_contain_text("diff --git a/UI_NOTES.md")
    expect(page.locator("#audit table tbody tr").first).to_be_visible()
    expect(page.locator("#logs-state")).to_have_text("ended", timeout=30_000)
    expect(page.locator("#logs-text")).not_to_be_empty()
    # An operator is offered Cancel, disabled once the experiment is over.
    expect(page.locator("#cancel")).to_be_disabled()
    shot(page, "experiment")
    assert errors == []


def test_hostile_text_renders_as_text(context, genesis_api, finished):
    page = sign_in(context, genesis_api, "viewer", path=f"#/experiments/{finished}")
    expect(page.locator('#summary dd[data-field="Description"]')).to_have_text(HOSTILE)
    expect(page.locator("#patch")).to_contain_text(HOSTILE)
    expect(page.locator("#audit table")).to_be_visible()
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.__pwned") is None
    shot(page, "experiment-hostile")


def test_viewer_sees_no_cancel_button(context, genesis_api, finished):
    page = sign_in(context, genesis_api, "viewer", path=f"#/experiments/{finished}")
    expect(page.locator("#header .phase-Succeeded")).to_be_visible()
    expect(page.locator("#summary")).to_be_visible()
    expect(page.locator("#cancel")).to_have_count(0)
    shot(page, "experiment-viewer")


def test_operator_cancels_a_running_experiment(context, genesis_api):
    slow = "import time\nprint('slow started', flush=True)\ntime.sleep(120)\n"
    body = request_body(changes={"files": [{"path": "slow.py", "content": slow}]},
                        validation={"command": ["python3", "slow.py"], "report": "exit_code"}, timeout_ms=300_000)
    name = submit(genesis_api, body)
    page = sign_in(context, genesis_api, "operator", path=f"#/experiments/{name}")
    expect(page.locator("#header .phase-Running")).to_be_visible(timeout=RUN_S * 1000)
    expect(page.locator("#logs-text")).to_contain_text("slow started", timeout=60_000)  # followed live
    page.click("#cancel")
    page.click("#cancel-yes")
    expect(page.locator("#cancel-result")).to_have_text("Cancellation requested; the controller rolls it back.")
    expect(page.locator("#header .phase-Failed")).to_be_visible(timeout=120_000)
    expect(page.locator("#reason")).to_have_text("cancelled")
    expect(page.locator("#audit table")).to_contain_text("test-operator")
    shot(page, "experiment-cancelled")


def test_csrf_and_cookie_flags(context, genesis_api, finished):
    page = sign_in(context, genesis_api, "operator")
    (cookie,) = [c for c in context.cookies() if c["name"] == "genesis_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert "genesis_session" not in page.evaluate("document.cookie")
    status, body = page.evaluate("""async (name) => {
        const response = await fetch(`/api/v1/experiments/${name}`, {method: "DELETE"});
        return [response.status, await response.json()];
    }""", finished)
    assert status == 403 and body["reason"] == "csrf_failed"
    # The same session reads without a token.
    assert page.evaluate("async () => (await fetch('/api/v1/whoami')).status") == 200


def test_sandboxes_images_and_reports_pages(context, genesis_api, finished):
    page = sign_in(context, genesis_api, "viewer")
    page.click("#nav a[data-section=sandboxes]")
    expect(page.locator("#sandboxes h1")).to_have_text("Sandboxes")
    expect(page.locator("#sandboxes table, #sandboxes .empty")).to_be_visible()
    shot(page, "sandboxes")
    page.click("#nav a[data-section=images]")
    expect(page.locator("#images table tbody tr").first).to_be_visible()  # the finished experiment's snapshot
    shot(page, "images")
    page.click("#nav a[data-section=reports]")
    expect(page.locator("#reports h1")).to_have_text("Reports")
    expect(page.locator("#reports table, #reports .empty")).to_be_visible()
    shot(page, "reports")
