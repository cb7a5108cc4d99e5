"""The UIs a user promotes and watches in, opened in headless Chromium (Debian's package, driven by Playwright).

The project behind them (two registered versions of the balancer, a rejected snapshot, the ``retrain``
deployment, the servers) is the session's ``ui_project`` (tests/ui/conftest.py). Each test saves a
screenshot to $AIPRIM_SCREENSHOTS (a temporary folder by default; the README shows those in docs/screenshots/,
refreshed with ``AIPRIM_SCREENSHOTS=docs/screenshots``).

``AIPRIM_CHROMIUM`` names another Chromium binary than /usr/bin/chromium; without one the module is
skipped with one line saying so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("AIPRIM_CHROMIUM") or "/usr/bin/chromium")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"browser tests: no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run does; "
                "or set AIPRIM_CHROMIUM)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="browser tests: Playwright is not installed (pip install -e '.[dev]')")

from tests.ui.conftest import post_json  # noqa: E402  (after the skips: a module without a browser imports nothing more)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The README's screenshots are refreshed on purpose (AIPRIM_SCREENSHOTS=docs/screenshots), never as a side effect of
# a test run in someone's checkout.
SCREENSHOTS = Path(os.environ.get("AIPRIM_SCREENSHOTS") or Path(tempfile.gettempdir()) / "aiprim-screenshots")
THIRTY_S = 30_000  # ms: what a page of a busy two-core machine may take to render its data
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 # Nothing leaves the machine: CDN assets (Data Docs' stylesheets) fail at once instead of timing out.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
# MLflow 3 opens its Assistant panel over the right third of every page on a browser's first visit; a returning
# user's browser remembers it closed (MLflow's own localStorage keys), so the pages are seen as they will be.
MLFLOW_ASSISTANT_CLOSED = ("localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
                           "localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');")


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as driver:
        playwright_api.expect.set_options(timeout=THIRTY_S)
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(THIRTY_S)
    context.add_init_script(MLFLOW_ASSISTANT_CLOSED)
    yield context.new_page()
    context.close()


def _screenshot(page, name: str, **options) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), **options)
    assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000


def _serving_digests(project, refs: tuple[str, ...]) -> subprocess.Popen:
    """A fresh process (as a service loading its model) printing a digest of the routes
    ``load_runtime("balancer", ref)`` serves for each ref; read it with ``_digests``."""
    code = """
import hashlib, json, sys
import pandas as pd
from aiprim import load_runtime
requests = pd.read_parquet(sys.argv[1] + "/requests.parquet").head(4000)
servers = pd.read_parquet(sys.argv[1] + "/servers.parquet")
def digest(ref):
    return hashlib.sha256(",".join(map(str, load_runtime("balancer", ref).route(requests, servers))).encode()).hexdigest()
print(json.dumps({ref: digest(ref) for ref in sys.argv[2:]}))
"""
    return subprocess.Popen([sys.executable, "-c", code, project["snapshot"], *refs], env=project["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _digests(process: subprocess.Popen) -> dict[str, str]:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_mlflow_model_page_shows_versions_alias_and_descriptions_and_moving_the_alias_promotes(ui_project, page):
    expect = playwright_api.expect
    mlflow = ui_project["urls"]["mlflow"]
    serving_before = _serving_digests(ui_project, ("champion", "1", "2"))  # while the pages load

    page.goto(f"{mlflow}/#/models/aiprim-balancer")
    version_1 = page.get_by_role("row").filter(has_text="Version 1")
    version_2 = page.get_by_role("row").filter(has_text="Version 2")
    expect(version_2).to_be_visible()
    expect(page.get_by_text("Replaces consistent / rendezvous hashing")).to_be_visible()  # the model's description
    expect(page.get_by_text("Primary metric:")).to_contain_text("lower is better")
    expect(version_1).to_contain_text("@ champion")
    expect(version_2).to_contain_text("@ challenger")
    expect(version_1).to_contain_text("Version 1, evaluated on")  # each version's description
    _screenshot(page, "mlflow-model", full_page=True)

    # The version's page: its metrics against the best classical peer, and the promotion decision.
    page.goto(f"{mlflow}/#/models/aiprim-balancer/versions/1")
    table = page.locator("table").filter(has_text="this version")  # not the tags table, whose decision tag names the peer
    expect(table).to_contain_text("peak_to_mean")
    expect(page.get_by_text(re.compile(r"Promotion: promoted to champion: no champion yet"))).to_be_visible()
    _screenshot(page, "mlflow-version", full_page=True)

    before = _digests(serving_before)
    assert before["1"] != before["2"], "the two versions route differently, so what serves is observable"
    assert before["champion"] == before["1"]

    # Promote by hand, through the UI's own alias editor on version 2's row.
    page.goto(f"{mlflow}/#/models/aiprim-balancer")
    expect(version_2).to_be_visible()
    version_2.get_by_role("button").nth(1).click()  # the pencil under its aliases (the first is the row's checkbox cell)
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Add/Edit alias for model version 2")
    dialog.get_by_role("combobox").fill("champion")
    page.keyboard.press("Enter")
    expect(dialog).to_contain_text('The "champion" alias is also being used on version 1')
    with page.expect_response(lambda r: r.url.endswith("/registered-models/alias") and r.request.method == "POST") as moved:
        dialog.get_by_role("button", name="Save aliases").click()
    assert moved.value.ok and json.loads(moved.value.request.post_data) == {"alias": "champion", "name": "aiprim-balancer",
                                                                           "version": "2"}
    expect(dialog).to_have_count(0)
    page.reload()
    expect(version_2).to_contain_text("@ champion")
    expect(version_1).not_to_contain_text("@ champion")
    # The page scrolls inside a pane of its own (full_page adds nothing): a window tall enough for both rows.
    page.set_viewport_size({"width": 1280, "height": 1800})
    version_1.scroll_into_view_if_needed()
    _screenshot(page, "mlflow-alias-moved")

    # What a service loads now: version 2's routes, where before the move it was version 1's.
    after = _digests(_serving_digests(ui_project, ("champion",)))
    assert after["champion"] == before["2"] != before["champion"]


def test_prefect_ui_lists_the_deployment_the_last_run_and_its_table_artifacts(ui_project, page):
    expect = playwright_api.expect
    prefect = ui_project["urls"]["prefect"]
    api = prefect + "/api"
    # The run `aiprim run` made (no deployment); the deployment's next scheduled run is another flow run of it.
    [run] = post_json(api + "/flow_runs/filter", {"flows": {"name": {"any_": ["retrain"]}},
                                                   "flow_runs": {"deployment_id": {"is_null_": True}},
                                                   "sort": "START_TIME_DESC", "limit": 1})

    page.goto(f"{prefect}/deployments")
    expect(page.get_by_role("link", name="retrain", exact=True).first).to_be_visible()

    page.goto(f"{prefect}/runs")
    expect(page.get_by_text(run["name"])).to_be_visible()
    page.goto(f"{prefect}/runs/flow-run/{run['id']}")
    expect(page.get_by_text(run["name"]).first).to_be_visible()
    expect(page.get_by_text(run["state"]["name"]).first).to_be_visible()
    assert run["state"]["name"] == "Completed"
    _screenshot(page, "prefect-flow-run")

    [artifact] = post_json(api + "/artifacts/filter", {"artifacts": {"key": {"any_": ["balancer-evaluation"]}},
                                                       "sort": "CREATED_DESC", "limit": 1})
    page.goto(f"{prefect}/artifacts/artifact/{artifact['id']}")
    table = page.locator("table")
    expect(table).to_contain_text("learned")
    for peer in ("maglev", "rendezvous"):
        expect(table).to_contain_text(peer)
    expect(table).to_contain_text("peak_to_mean")
    _screenshot(page, "prefect-artifact")


def test_data_docs_of_a_rejected_snapshot_show_the_failed_expectation(ui_project, page):
    expect = playwright_api.expect
    docs = ui_project["data_docs"]
    [result] = list((docs.parent / "validations").glob("balancer/requests/**/*.html"))
    # Data Docs load their stylesheets and scripts from public CDNs: the page is read without them.
    page.goto(result.as_uri(), wait_until="domcontentloaded")
    expect(page.get_by_text("Status: Failed").first).to_be_visible()
    column = page.locator("div.ge-section").filter(has_text="1 unexpected values found")
    expect(column).to_have_count(1)
    expect(column).to_contain_text("cost_io")
    failed = column.locator("tr").filter(has_text="1 unexpected values found")
    expect(failed).to_contain_text("values must be greater than or equal to 0.0")
    expect(failed).to_contain_text("-1.0")  # the offending value itself
    column.scroll_into_view_if_needed()
    _screenshot(page, "data-docs-rejected")


def test_optuna_dashboard_shows_the_balancer_study(ui_project, page):
    expect = playwright_api.expect
    page.goto(ui_project["urls"]["optuna"] + "/dashboard")
    study = page.get_by_text(re.compile(r"balancer-[0-9a-f]{16}-[0-9a-f]+$"))
    expect(study.first).to_be_visible()
    study.first.click()
    expect(page.get_by_text("Best Trial").first).to_be_visible()
    _screenshot(page, "optuna-study")
