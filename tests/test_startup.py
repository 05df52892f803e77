"""The app's page comes up without the heavy libraries: they load lazily, once a model or training is needed."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "peft")


def heavy_modules_after(imports: str) -> list[str]:
    """Which of the heavy libraries a fresh interpreter holds after `import <imports>`."""
    check = f"import sys, {imports}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return [m for m in result.stdout.strip().split(",") if m]


def test_importing_the_app_loads_no_torch_transformers_trl_or_peft():
    assert heavy_modules_after("ui.app") == []


def test_starting_the_app_loads_none_of_them_before_the_page():
    assert heavy_modules_after("ui.__main__") == []


def test_the_lab_modules_behind_the_arena_and_ranking_tabs_load_no_torch():
    assert heavy_modules_after("lab.presets, lab.models, lab.generate, lab.preferences, lab.arena, ui.arena") == []
