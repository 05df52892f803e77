"""The README's Python example, executed as written, on the real default model."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.default_model


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## In Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example

    lab, run = namespace["lab"], namespace["run"]
    assert run.status == "done" and run.adapter is not None
    losses = run.metrics["loss"].dropna()
    assert losses.iloc[-1] < losses.iloc[0]
    assert run.record.provenance["data"]["rows"] == len(lab.demonstrations())
    out = capsys.readouterr().out
    assert "done" in out and "sha256" in out
