"""The example notebooks in notebooks/: stored without outputs, each code cell after a line of why, every cell
valid Python; the CPU notebooks run end to end in a Jupyter kernel (on the tiny model, a few steps) and show what
a reader looks for: the quickstart its before/after table, the TruthfulQA case study its table and chart."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lab import Lab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SAMPLE = Path(__file__).parent / "fixtures" / "truthfulqa" / "sample.csv"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
SHELL = re.compile(r"^\s*[!%]")  # Jupyter's shell (!) and magic (%) lines are not Python


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def parameter_names(nb: nbformat.NotebookNode) -> tuple[int, set[str]]:
    """The index of the cell tagged 'parameters' (papermill's convention) and the names it assigns."""
    (index,) = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    tree = ast.parse(nb.cells[index].source)
    return index, {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets}


def execute(name: str, **parameters) -> nbformat.NotebookNode:
    """Run a notebook in a fresh kernel from notebooks/, with `parameters` set in a cell right after its parameters
    cell, as papermill injects them; a name the parameters cell does not assign is refused."""
    nb = read(name)
    index, names = parameter_names(nb)
    assert set(parameters) <= names, f"{name} has no parameter {sorted(set(parameters) - names)}"
    injected = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(injected))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def cell_with(nb: nbformat.NotebookNode, marker: str) -> nbformat.NotebookNode:
    """The one code cell whose source holds `marker`."""
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    return cell


def shown(cell: nbformat.NotebookNode, mime: str) -> str | dict:
    """What the cell displayed as `mime` ('stdout' for what it printed)."""
    if mime == "stdout":
        return "".join(out["text"] for out in cell.outputs if out.get("name") == "stdout")
    return next(out["data"][mime] for out in cell.outputs if mime in out.get("data", {}))


def test_the_three_notebooks_are_there():
    assert [path.name for path in ALL] == ["colab_gpu.ipynb", "quickstart.ipynb", "truthfulqa.ipynb"]


@pytest.mark.parametrize("path", ALL, ids=lambda path: path.name)
def test_a_notebook_is_stored_valid_and_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    parameter_names(nb)  # exactly one parameters cell
    for before, cell in zip([None, *nb.cells], nb.cells, strict=False):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source
            assert before is not None and before.cell_type == "markdown", f"no line of why: {cell.source[:60]}"
            python = "\n".join(line for line in cell.source.splitlines() if not SHELL.match(line))
            compile(python, f"{path.name}: {cell.id}", "exec")


def test_the_quickstart_ends_in_its_before_and_after_table(tiny_model_dir, tmp_path):
    workspace = tmp_path / "workspace"
    nb = execute("quickstart.ipynb", WORKSPACE=str(workspace), MODEL=str(tiny_model_dir), STEPS=2, MAX_NEW_TOKENS=8)

    runs = {run.record.method: run for run in Lab(workspace).runs()}
    statuses = {method: run.status for method, run in runs.items()}
    assert statuses == dict.fromkeys(("sft", "reward", "dpo", "eval"), "done")
    grid = shown(cell_with(nb, "lab.run_experiment("), "text/html")
    assert "plain" in grid and "asked" in grid and "Why is the sky blue?" in grid
    table = shown(cell_with(nb, "lab.evaluate("), "text/html")
    for model in ("base", "base+prompt", runs["sft"].id, runs["dpo"].id):
        assert f"<td>{model}</td>" in table
    assert "<th>win rate</th>" in table and "<th>check</th>" in table
    assert '<iframe src="http://127.0.0.1:' in shown(cell_with(nb, "lab.app()"), "text/html")  # the app, inline


@pytest.fixture
def long_context_model(tiny_model_dir, tmp_path) -> Path:
    """The tiny model read with a 1024-token context: its byte-level tokens make the helpful prompt ~280 long."""
    folder = shutil.copytree(tiny_model_dir, tmp_path / "tiny-long")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 1024}))
    return folder


def test_the_truthfulqa_case_study_shows_its_table_and_chart(long_context_model, tmp_path):
    workspace = tmp_path / "workspace"
    nb = execute(
        "truthfulqa.ipynb",
        CSV=str(SAMPLE),
        WORKSPACE=str(workspace),
        MODEL=str(long_context_model),
        HELD_OUT=0.5,
        MAX_NEW_TOKENS=8,
    )

    runs = {run.record.method: run for run in Lab(workspace).runs()}
    assert {method: run.status for method, run in runs.items()} == {"dpo": "done", "eval": "done"}
    report = runs["eval"].report()
    assert report["prompts"] == 2 and sum(row["questions"] for row in report["mc_by_category"]["base"]) == 2
    trained = {json.loads(line)["prompt"][-1]["content"] for line in read_lines(runs["dpo"].folder / "data.jsonl")}
    asked = {json.loads(line)["prompt"][-1]["content"] for line in read_lines(runs["eval"].folder / "answers.jsonl")}
    assert len(trained) == len(asked) == 2 and not trained & asked  # no held-out question was trained on
    models = ["base", "base+prompt", runs["dpo"].id]
    evaluation = cell_with(nb, "lab.evaluate(")
    table = shown(evaluation, "text/html")
    for model in models:
        assert f"<td>{model}</td>" in table
    assert "<th>MC1</th>" in table and "<th>MC2</th>" in table
    assert f"No clear winner between the prompt (base+prompt) and the fine-tune ({runs['dpo'].id})" in table
    chart = shown(evaluation, "application/vnd.plotly.v1+json")
    assert [bar["x"] for bar in chart["data"]] == [models] * len(chart["data"]) and len(chart["data"]) >= 2
