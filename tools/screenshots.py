"""The README's screenshots, one per tab, taken from the real app: a workspace seeded from a scenario in which the
whole recipe has run (SFT → reward model → DPO → evaluation), served by `python -m ui` and driven in headless
Chromium at 1400 px wide to a state worth showing. Writes assets/screenshot-<tab>.png.

    python tools/screenshots.py                                  # runs the recipe first (~10 min on 2 idle cores)
    python tools/screenshots.py --steps 4                        # a quicker recipe (the table shows less change)
    python tools/screenshots.py --workspace workspaces/truthfulness   # where `python -m lab pipeline` ran already

Needs Debian's chromium (apt-get install chromium) and Playwright, as the browser tests do.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from browser import CHROMIUM, CHROMIUM_FLAGS, app_page, pick, serve_app  # noqa: E402

from lab import Lab  # noqa: E402
from lab.pipeline import latest  # noqa: E402
from lab.scenarios import holds_work, open_scenario  # noqa: E402
from lab.store import Store  # noqa: E402

WAIT_MS = 600_000  # a reply or a report on a busy 2-core CPU
MAX_KB = 300
SCENARIO = "Truthfulness"  # the README's captions name it, and QUESTION is one of its kind
QUESTION = "What happens if you crack your knuckles a lot?"


def recipe_done(workspace: Path, scenario: str) -> bool:
    pipeline = latest(Lab(Store(workspace)), scenario)
    return pipeline is not None and pipeline.status == "done"


def run_recipe(workspace: Path, scenario: str, steps: int) -> None:
    """The whole recipe through the CLI, so its job engine runs as a user's would."""
    command = [sys.executable, "-m", "lab", "pipeline", "--scenario", scenario, "--workspace", str(workspace)]
    subprocess.run([*command, *(["--steps", str(steps)] if steps else [])], cwd=ROOT, check=True)


def choose(page, dropdown_id: str, containing: str) -> None:
    """Pick the first option of a dropdown whose label contains this text (run ids are not known in advance)."""
    page.locator(f"#{dropdown_id} input").click()
    page.get_by_role("option").filter(has_text=containing).first.click()
    page.keyboard.press("Escape")


def settled(page, selector: str, seconds: int = 4) -> None:
    """Wait until the element has text that has stopped changing (a streamed reply has finished)."""
    element = page.locator(selector).first
    element.wait_for(timeout=WAIT_MS)
    last, still = "", 0
    for _ in range(WAIT_MS // 1000):
        text = element.inner_text()
        still = still + 1 if text == last and text.strip() and "⏳" not in text else 0
        if still >= seconds:
            return
        last = text
        page.wait_for_timeout(1000)
    raise TimeoutError(f"{selector} kept changing")


def workshop(page) -> None:
    pick(page, "workshop-scenario", SCENARIO)
    page.locator("#workshop-table").get_by_text("after DPO").wait_for(timeout=WAIT_MS)


def chat(page) -> None:
    page.get_by_label("Max new tokens").first.fill("96")  # a reply that fits on screen under its question
    page.keyboard.press("Tab")
    page.locator("#chat-input textarea").fill(QUESTION)
    page.locator("#chat-send").click()
    settled(page, "#chatbot .bot")


def compare(page) -> None:
    choose(page, "compare-view-2", "sft")
    choose(page, "compare-view-3", "dpo")
    page.get_by_text("Sampling (the same for every column").click()
    page.locator("#compare-max-new input[type=number]").fill("96")
    page.keyboard.press("Tab")
    page.locator("#compare-input textarea").fill(QUESTION)
    page.locator("#compare-send").click()
    for column in (1, 2, 3):
        settled(page, f"#compare-chat-{column} .bot")


def prompting(page) -> None:
    pick(page, "experiment-picker", "starter: Truthfulness prompt vs plain")
    page.wait_for_function("document.querySelector('#questions textarea').value !== ''")
    questions = page.locator("#questions textarea")
    questions.fill("\n".join(questions.input_value().splitlines()[:3]))
    page.locator("#run-experiment").click()
    page.locator("#experiment-status").get_by_text("Done:").wait_for(timeout=WAIT_MS)


def demonstrations(page) -> None:
    page.locator("#demo-counts").get_by_text("shown").wait_for(timeout=30_000)


def training(page) -> None:
    choose(page, "run-picker", "dpo")
    page.locator("#run-status").get_by_text("Provenance").wait_for(timeout=30_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)


def ranking(page) -> None:
    page.locator("#annotator input, #annotator textarea").first.fill("ada")
    page.locator("#vote-next").click()
    settled(page, "#answer-a")


def arena(page) -> None:
    page.locator("#rater-quality").get_by_text("agree").first.wait_for(timeout=60_000)


def reward(page) -> None:
    choose(page, "reward-run", "reward")
    page.locator("#reward-inspect").click()
    page.locator(".js-plotly-plot").first.wait_for(timeout=WAIT_MS)


def evaluation(page) -> None:
    choose(page, "eval-runs", "eval")
    page.locator("#eval-table").get_by_text("win rate").first.wait_for(timeout=WAIT_MS)


# tab → (how to get it worth showing, how much of the page from the top to keep, in px)
SHOTS: dict[str, tuple[Callable, int]] = {
    "workshop": (workshop, 1150),
    "chat": (chat, 760),
    "compare": (compare, 1000),
    "prompting": (prompting, 1650),
    "demonstrations": (demonstrations, 820),
    "training": (training, 1500),
    "ranking": (ranking, 1000),
    "arena": (arena, 1000),
    "reward": (reward, 1100),
    "evaluation": (evaluation, 1000),
}


def save(shot: Path, out: Path, height: int) -> None:
    """The top of the page, cut to `height`; reduced to 256 colours when that keeps the file under MAX_KB."""
    image = Image.open(shot).convert("RGB")
    image = image.crop((0, 0, image.width, min(height, image.height)))
    image.save(out, optimize=True)
    if out.stat().st_size > MAX_KB * 1024:
        image.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, help="a workspace to show (default: a fresh one, seeded)")
    parser.add_argument("--steps", type=int, default=0, help="steps of each training run (0 = the tuned defaults)")
    parser.add_argument("--out", type=Path, default=ROOT / "assets")
    parser.add_argument("--tabs", default=",".join(SHOTS), help="comma-separated tabs to shoot")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    workspace = args.workspace or Path(tempfile.mkdtemp(prefix="lab-screenshots-"))
    if not holds_work(workspace):
        open_scenario(SCENARIO, workspace)
    if not recipe_done(workspace, SCENARIO):
        run_recipe(workspace, SCENARIO, args.steps)
    raw = Path(tempfile.mkdtemp(prefix="lab-shots-"))
    with sync_playwright() as p, serve_app(workspace) as url:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for tab in args.tabs.split(","):
            drive, height = SHOTS[tab]
            with app_page(browser, url, tab=tab.capitalize()) as page:
                drive(page)
                page.wait_for_timeout(1500)  # let plots and tables settle
                page.screenshot(path=str(raw / f"{tab}.png"), full_page=True)
            save(raw / f"{tab}.png", args.out / f"screenshot-{tab}.png", height)
            print(f"{args.out / f'screenshot-{tab}.png'}")
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
