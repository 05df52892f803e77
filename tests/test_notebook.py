"""The lab in a notebook: the inline app starts and stops twice in one process without leaking a port, a thread or
its stop state; an interrupt during wait() stops the run with its adapter saved; in a Jupyter kernel wait() shows
a progress bar and a live curve; runs, preference sets, leaderboards, evaluations and experiments render the numbers
a person looks for."""

from __future__ import annotations

import _thread
import json
import re
import socket
import threading
import urllib.request

import nbformat
import pytest
from conftest import wait_for
from nbclient import NotebookClient
from test_train import SIGNOFF
from test_train import config as sft_config

from lab import Lab, jobs
from lab.store import Comparison, Experiment, Run
from lab.train.runs import read_metrics

PROMPT = [{"role": "user", "content": "Name a color."}]
PLOTLY = "application/vnd.plotly.v1+json"


def port_is_free(port: int) -> bool:
    """Can a new server listen on `port` (as servers do, reusing an address whose old connections are closing)?"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def orphan(lab: Lab, run_id: str) -> None:
    """A run left 'running' by a process that is gone: only a job watcher (or a wait) repairs it."""
    lab.store.add_run(Run(run_id, "sft", {"model": "x"}, status="running"))
    lab.store.update_run(run_id, pid=2**22 + 7)
    jobs.run_dir(lab.store, run_id).mkdir(parents=True)


def test_the_inline_app_starts_and_stops_twice_without_leaking(tiny_model_dir, tmp_path):
    lab = Lab(tmp_path / "workspace")
    before, port = set(threading.enumerate()), None
    for round_ in range(2):
        model = lab.load(str(tiny_model_dir), device="cpu")
        app = lab.app(port)  # the second time, on the port the first one freed
        assert lab.app() is app and app.running  # a second call reuses the running app
        assert not port_is_free(app.port)
        with pytest.raises(ValueError, match=f"Port {app.port} is taken: pass lab.app"):
            Lab(tmp_path / "another").app(app.port)
        with urllib.request.urlopen(app.url + "config", timeout=10) as response:
            assert json.loads(response.read())["title"] == "Alignment Lab"
        assert lab.models.loaded is model  # the app serves the model loaded here, not a copy
        orphan(lab, f"sft-orphan-{round_}")  # this app's watcher repairs it: it was not left stopped
        wait_for(lambda r=round_: lab.store.get_run(f"sft-orphan-{r}").status == "failed", 20, "the watcher")
        watcher, port = app.watcher, app.port
        lab.close()
        assert port_is_free(port)
        assert not watcher.is_alive() and lab.models.loaded is None
        wait_for(lambda: set(threading.enumerate()) <= before, 10, "the app's threads to end")
    assert lab._app is None


def test_an_interrupt_during_wait_stops_the_run_with_its_adapter(tiny_model_dir, tmp_path):
    lab = Lab(tmp_path / "workspace")
    run = lab.train("sft", data=SIGNOFF, config=sft_config(tiny_model_dir, max_steps=400, save_steps=2))

    def interrupt() -> None:
        wait_for(lambda: len(read_metrics(run.folder)) >= 2, 120, "two logged steps")
        _thread.interrupt_main()  # what Ctrl-C or a notebook's stop button does to the kernel

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run.wait(timeout=300, poll_s=0.2)
    assert run.status == "stopped" and run.adapter is not None
    assert read_metrics(run.folder)[-1]["step"] < 400


def test_in_a_jupyter_kernel_the_app_shows_inline_wait_is_live_and_objects_draw_charts(tiny_model_dir, tmp_path):
    cells = [
        f"from lab import Lab\nlab = Lab({str(tmp_path / 'workspace')!r})\n"
        f"lab.load({str(tiny_model_dir)!r}, device='cpu')\napp = lab.app()",
        "lab.app()",
        f"run = lab.train('sft', data={str(SIGNOFF)!r}, model={str(tiny_model_dir)!r}, device='cpu', max_steps=6,"
        " batch_size=8, learning_rate=0.02, lora_r=8)\nrun.wait(poll_s=0.2)",
        "run",
        "from lab.store import Comparison\n"
        "for a, b in [('sft-a', 'base')] * 3 + [('base', 'sft-a')]:\n"
        "    answers = [{'text': f'{m} says hi', 'model': m, 'settings': {}} for m in (a, b)]\n"
        "    lab.store.add_comparison(Comparison([{'role': 'user', 'content': 'Hi'}], answers, [0, 1], [1, 2]))\n"
        "lab.leaderboard()",
        "lab.close()",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    started, again, waited, shown, board = (cell.outputs for cell in nb.cells[:5])

    (frame,) = [o["data"]["text/html"] for o in started if "text/html" in o.get("data", {})]
    url = re.search(r'<iframe src="(http://127\.0\.0\.1:\d+/)"', frame).group(1)
    assert [o["data"]["text/html"] for o in again if "text/html" in o.get("data", {})] == [frame]  # shown again
    assert again[-1]["data"]["text/plain"] == f"Alignment Lab on {url} (lab.close() stops it)"
    assert port_is_free(int(url.rsplit(":", 1)[1].strip("/")))  # closed by the last cell

    assert next(o for o in waited if o["output_type"] == "execute_result")["data"]["text/plain"] == "'done'"
    bar = "".join(o.get("text", "") for o in waited if o.get("name") == "stderr")
    assert "6/6" in bar and "loss" in bar  # tqdm's text bar (no ipywidgets here), moved to the last step
    (curve,) = [o for o in waited if PLOTLY in o.get("data", {})]  # one output, redrawn in place
    assert max(x for trace in curve["data"][PLOTLY]["data"] for x in trace.get("x", [])) == 6
    summary, figure = [o["data"] for o in shown]
    assert "done" in summary["text/html"] and "learning_rate <code>0.02</code>" in summary["text/html"]
    assert PLOTLY in figure
    table, chart = [o["data"] for o in board]
    assert "<td>sft-a</td>" in table["text/html"] and chart[PLOTLY]["data"][0]["y"] == ["sft-a", "base"]


def test_a_run_shows_its_status_settings_last_metrics_and_curves(tiny_model_dir, tmp_path):
    lab = Lab(tmp_path / "workspace")
    config = sft_config(tiny_model_dir, max_steps=4, save_steps=4, learning_rate=0.02)
    run = lab.run(jobs.prepare(lab.store, "sft", config, name="short", data_file=str(SIGNOFF)).id)
    assert jobs.execute(lab.store, run.id) == 0  # in this process: the rendering is what is tested
    page = run._repr_html_()
    rows = read_metrics(run.folder)
    last_loss = next(r["loss"] for r in reversed(rows) if "loss" in r)
    assert "<b>short</b> · sft" in page and ">done</b>" in page and "step 4 / 4" in page
    assert "learning_rate <code>0.02</code>" in page and "max_steps <code>4</code>" in page
    assert "batch_size <code>8</code>" in page and "sample_every" in page  # the method's own field
    assert f"<td>{float(f'{last_loss:.4g}')}</td>" in page and str(run.adapter) in page
    assert {trace.name for trace in run.figure().data} == {"short"}


def test_a_preference_set_counts_votes_per_annotator_and_its_pairs(tmp_path):
    lab = Lab(tmp_path / "workspace")

    def vote(annotator: str, verdict: str = "ranked", ranks=(1, 2, 3)) -> None:
        candidates = [{"text": f"{color} it is", "model": "base", "settings": {}} for color in ("Red", "Blue", "Teal")]
        ranks = list(ranks) if verdict == "ranked" else ([1, 1, 1] if verdict == "tie" else None)
        lab.store.add_comparison(Comparison(PROMPT, candidates, [0, 1, 2], ranks, verdict, annotator))

    vote("ann"), vote("ann", ranks=(1, 1, 2)), vote("ann", "tie"), vote("bea", "both-bad"), vote("bea", "skipped")
    votes = lab.comparisons()
    assert len(votes) == 5 and votes[0].annotator == "ann" and [c.verdict for c in votes][-1] == "skipped"
    table = votes.annotators()
    assert table.set_index("annotator").to_dict("index") == {
        "ann": {"votes": 3, "ranked": 2, "ties": 1, "both bad": 0, "skipped": 0, "pairs": 5},  # 3 + 2 pairs
        "bea": {"votes": 1, "ranked": 0, "ties": 0, "both bad": 1, "skipped": 1, "pairs": 0},
    }
    assert repr(votes) == "PreferenceSet(4 votes by 2 annotators (1 skipped) → 5 preference pairs)"
    page = votes._repr_html_()
    assert "<b>4 votes by 2 annotators (1 skipped) → 5 preference pairs</b>" in page
    assert "<td>both-bad</td>" in page and "1: Red it is | 2: Blue it is | 3: Teal it is" in page


def test_a_leaderboard_is_a_dataframe_with_its_chart(tmp_path):
    lab = Lab(tmp_path / "workspace")
    for winner, loser in [("sft-a", "base")] * 4 + [("base", "sft-a")]:
        candidates = [{"text": f"{m} says hi", "model": m, "settings": {}} for m in (winner, loser)]
        lab.store.add_comparison(Comparison(PROMPT, candidates, [0, 1], [1, 2], "ranked", "ann"))
    board = lab.leaderboard()
    assert board["model"].tolist() == ["sft-a", "base"] and board["battles"].tolist() == [5, 5]
    page = board._repr_html_()
    assert "<td>sft-a</td>" in page and f"<td>{board['score'][0]}</td>" in page
    (dots,) = board.figure().data
    assert list(dots.y) == ["sft-a", "base"] and list(dots.error_x.array) == list(board["high"] - board["score"])


def test_an_evaluation_shows_its_table_verdict_and_chart(tiny_model_dir, tmp_path):
    lab = Lab(tmp_path / "workspace")
    sft = jobs.prepare(lab.store, "sft", sft_config(tiny_model_dir, max_steps=2), data_file=str(SIGNOFF))
    assert jobs.execute(lab.store, sft.id) == 0  # in this process: the evaluation is what is tested
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about {t}."}) + "\n" for t in ("rain", "snow")))
    run = lab.evaluate(
        ["base", "base+prompt", sft.id],
        prompts=prompts,
        system="Answer in one sentence.",
        judge="length:20",
        max_new_tokens=6,
        model=str(tiny_model_dir),
        device="cpu",
        start=False,
    )
    assert jobs.execute(lab.store, run.id) == 0
    report = run.report()
    page = run._repr_html_()
    assert "2 prompts; win rates against base, judged by length:20" in page
    for model in report["models"]:
        assert f"<td>{model['model']}</td>" in page
        if "win_rate" in model:
            assert f"{model['win_rate']:.0%} ({model['win_low']:.0%} to {model['win_high']:.0%})" in page
    (verdict,) = report["verdicts"]
    assert f"<li>{verdict['sentence']}</li>" in page
    titles = [annotation.text for annotation in run.figure().layout.annotations]
    assert "win rate vs the reference" in titles


def test_an_experiment_shows_its_grid_and_summary(tiny_model_dir, tmp_path):
    lab = Lab(tmp_path / "workspace")
    variants = [
        {"name": "plain", "system": "", "template": "{question}"},
        {"name": "careful", "system": "Answer truthfully.", "template": "Q: {question}\nA:"},
    ]
    settings = {"temperature": 0.0, "max_new_tokens": 4, "seed": 0}
    eid = lab.store.save_experiment(Experiment("colors", variants, ["Is the sky blue?", "Is grass red?"], settings))
    lab.load(str(tiny_model_dir), device="cpu")
    results = lab.run_experiment(eid)
    assert results.grid["question"].tolist() == ["Is the sky blue?", "Is grass red?"]
    assert results.summary["answered"].tolist() == [2, 2]
    page = results._repr_html_()
    assert "<b>colors</b> · 2 questions × 2 variants" in page
    assert "<th>careful</th>" in page and "Is grass red?" in page and "tok" in page
    assert lab.experiment(eid).grid.equals(results.grid)
    assert repr(results) == "ExperimentResults('colors': 2 questions × 2 variants, 4 answers)"
