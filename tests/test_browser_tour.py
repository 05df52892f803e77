"""A newcomer's tour of the real app in headless Chromium, on the tiny model: every tab opens with its closed
"What is this step, and why?", whose paragraph shows when opened, and an empty workspace says in every tab what is
missing and where to get it; a workspace seeded from a scenario shows its work instead where there is some."""

import pytest
from browser import MARKS, app_page, serve_app

from lab.scenarios import open_scenario
from ui.steps import STEPS, TITLE

pytestmark = MARKS

TABS = {tab_id: tab_id.capitalize() for tab_id in ("workshop", *STEPS)}
EMPTY = {  # tab → (element, what it says in an empty workspace)
    "workshop": ("#workshop-status", "Nothing has run yet"),
    "prompting": ("#experiment-status", "No experiment open"),
    "demonstrations": ("#demo-counts", "No demonstrations yet"),
    "training": ("#run-status", "No runs yet"),
    "reward": ("#reward-summary", "No reward model yet"),
    "evaluation": ("#eval-verdict", "No evaluation yet"),
}


def first_sentence(markdown: str) -> str:
    return markdown.split(":")[0].replace("**", "")


def open_step(page, tab_id: str) -> str:
    """Open the tab and its explanation; the explanation's text as shown."""
    page.get_by_role("tab", name=TABS[tab_id]).click()
    panel = page.locator("[role=tabpanel]:visible").first
    explanation = panel.get_by_role("button", name=TITLE).first
    explanation.wait_for(timeout=15_000)
    expected = first_sentence(STEPS[tab_id])
    assert not panel.get_by_text(expected).first.is_visible()  # closed until asked for
    explanation.click()
    shown = panel.get_by_text(expected).first
    shown.wait_for(timeout=10_000)
    return shown.inner_text()


def test_every_tab_explains_its_step_and_an_empty_workspace_says_what_to_do(browser, tmp_path, tiny_model_dir):
    with serve_app(tmp_path, "--model", str(tiny_model_dir)) as url, app_page(browser, url, model_loaded=False) as page:
        for tab_id in TABS:
            assert "Next" in open_step(page, tab_id) or tab_id == "workshop"
            if tab_id in EMPTY:
                element, says = EMPTY[tab_id]
                page.locator(element).get_by_text(says).wait_for(timeout=15_000)


@pytest.mark.parametrize("scenario", ["truthfulness"])
def test_a_seeded_workspace_shows_its_work_where_there_is_some(browser, tmp_path, tiny_model_dir, scenario):
    open_scenario(scenario, tmp_path)
    with serve_app(tmp_path, "--model", str(tiny_model_dir)) as url, app_page(browser, url, model_loaded=False) as page:
        open_step(page, "demonstrations")
        page.locator("#demo-counts").get_by_text("24 shown").wait_for(timeout=15_000)
        open_step(page, "training")
        page.locator("#run-status").get_by_text("No runs yet").wait_for(timeout=15_000)
