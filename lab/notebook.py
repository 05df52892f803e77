"""The lab in a notebook (Jupyter, JupyterLab, VS Code, Colab): the whole app inline in a cell, a live wait for a
run, and objects that show themselves as tables and charts instead of print-and-squint.

Nothing here imports gradio or IPython on import: the app's modules load on `Lab.app()`, and IPython is used only
where a kernel has already loaded it. Charts go through plotly's own notebook renderer (`display(figure)`), which
picks what each front end draws (JupyterLab and VS Code offline, Colab its own way), below a small HTML summary
(`_repr_html_`) that any front end shows.
"""

from __future__ import annotations

import contextlib
import html
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from lab.session import Lab, TrainingRun

CURVE_EVERY_S = 5.0  # a live curve is redrawn at most this often: each redraw sends the whole figure to the page
FIRST_ROWS = 10  # votes listed under a preference set's counts
KEY_FIELDS = ("model", "learning_rate", "max_steps", "batch_size", "lora_r")  # shown with a method's own fields
STATUS_COLORS = {"done": "#16a34a", "stopped": "#ca8a04", "failed": "#dc2626"}


def in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, JupyterLab, VS Code, Colab); False in a terminal, IPython included."""
    ipython = sys.modules.get("IPython")  # a kernel has imported it already; a script need not pay for it
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def show(summary: str, figure: Any = None) -> None:
    """Display an HTML summary and, below it, a plotly figure through plotly's own renderer."""
    from IPython.display import HTML, display

    display(HTML(summary))
    if figure is not None:
        display(figure)


# The app, inline


@dataclass
class InlineApp:
    """The app serving one Lab from a notebook, with the job watcher it started; `Lab.close()` stops both."""

    blocks: Any  # the launched gradio.Blocks
    watcher: threading.Thread
    stopping: threading.Event

    def __repr__(self) -> str:
        return f"Alignment Lab on {self.url} (lab.close() stops it)"

    @property
    def url(self) -> str:
        return self.blocks.local_url

    @property
    def port(self) -> int:
        return self.blocks.server_port

    @property
    def running(self) -> bool:
        return bool(self.blocks.is_running) and self.watcher.is_alive()

    def show(self) -> None:
        """Show the app in the current cell again: the frame Gradio made when it started (in Colab, its proxied one)."""
        artifact = getattr(self.blocks, "artifact", None)
        if artifact is not None and in_notebook():
            from IPython.display import display

            display(artifact)

    def close(self) -> None:
        """Close the server (its port is free once this returns) and end the job watcher."""
        self.blocks.close(verbose=False)
        self.stopping.set()
        self.watcher.join()


def start_app(lab: Lab, port: int | None, height: int) -> InlineApp:
    """Serve the app over `lab` (its workspace, its loaded model) on 127.0.0.1, shown in the cell inside a notebook.

    Gradio opens a public share link by default in Colab; `share=False` makes it show the app through Colab's own
    proxy instead, which only this notebook's user reaches. The default model starts loading if none is loaded.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # as `python -m ui`: read when gradio loads
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from lab import jobs, limits
    from lab.experiments import seed_prompt_pool
    from lab.presets import question_sets
    from lab.refs import DEFAULT_MODEL
    from ui.app import CSS, build_app

    seed_prompt_pool(lab.store, question_sets())
    blocks = build_app(lab)
    try:
        blocks.queue(default_concurrency_limit=4).launch(
            inline=in_notebook(),
            share=False,
            server_name="127.0.0.1",
            server_port=port,
            height=height,
            prevent_thread_lock=True,
            quiet=True,
            css=CSS,
            footer_links=[],
            show_error=False,
            max_file_size=f"{limits.UPLOAD_MB}mb",
        )
    except OSError as err:  # Gradio tries the one port given, or a hundred from 7860
        taken = f"Port {port} is taken" if port else "No port from 7860 up is free"
        raise ValueError(f"{taken}: pass lab.app() a free port.") from err
    if lab.models.loaded is None and not lab.models.loading:
        lab.load_in_background(DEFAULT_MODEL, "fp32", "auto")
    stopping = threading.Event()
    return InlineApp(blocks, jobs.watch(lab.store, stop=stopping), stopping)


# Waiting for a run


def follow(run: TrainingRun, timeout: float | None, poll_s: float) -> str:
    """Wait for `run` to finish, driving the queue, with a progress bar (tqdm.auto: a widget in a notebook, text in a
    terminal) and, in a notebook, the run's curves redrawn as steps arrive; returns the final status.

    An interrupt (Ctrl-C, the notebook's stop button) stops the run, waits until it has saved its adapter, then
    raises KeyboardInterrupt again, so that the cells after this one do not run on a half-finished plan.
    """
    from tqdm.auto import tqdm

    from lab import jobs
    from lab.train import get_method
    from lab.train.runs import MetricsTail

    status = run.status
    if status in jobs.FINISHED:
        return status
    deadline = None if timeout is None else time.monotonic() + timeout
    tail = MetricsTail(run.folder)
    log = None if get_method(run.record.method).panels else run.folder  # an evaluation: no steps, a log of stages
    curve = LiveCurve(run) if in_notebook() else None
    with tqdm(desc=run.id, unit="step") as bar:
        try:
            while (status := run.status) not in jobs.FINISHED:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"Run {run.id} is still {status} after {timeout} s.")
                jobs.start_next(run.lab.store)
                _advance(bar, tail.read(), status, log)
                if curve is not None:
                    curve.update(len(tail.rows))
                time.sleep(poll_s)
        except KeyboardInterrupt:
            bar.set_postfix_str("stopping: the current step ends and what it learned is saved")
            with contextlib.suppress(jobs.JobError):  # it may have finished meanwhile: nothing to stop
                run.stop()
            while (status := run.status) not in jobs.FINISHED:
                time.sleep(poll_s)
            raise
        finally:
            _advance(bar, tail.read(), status, log)
            if curve is not None:
                curve.update(len(tail.rows), now=True)
    return status


def _advance(bar: Any, rows: list[dict], status: str, log: Path | None) -> None:
    """Move the bar to the run's last logged step, with its status and loss beside it; a run without steps (an
    evaluation) shows the last line of its `log` instead."""
    from lab.curves import progress
    from lab.train.runs import log_tail

    if rows:
        total = int(rows[-1].get("max_steps") or 0)
        if total > 0 and bar.total != total:
            bar.reset(total=total)
        bar.update(int(rows[-1]["step"]) - bar.n)
    loss = next((r["loss"] for r in reversed(rows) if "loss" in r), None)
    if loss is not None:
        detail = f"loss {loss:.4g}"
    else:
        detail = log_tail(log, 1)[:60] if log is not None else progress(rows, status)[1]
    text = f"{status} · {detail}" if detail else status
    if text != bar.postfix:  # redraw only on news: a notebook keeps every line a text bar writes
        bar.set_postfix_str(text)


class LiveCurve:
    """A run's curves in one notebook output, redrawn in place as metrics rows arrive (at most every
    CURVE_EVERY_S, unless `now`)."""

    def __init__(self, run: TrainingRun) -> None:
        self.run, self.handle, self.rows, self.drawn_at = run, None, 0, 0.0

    def update(self, rows: int, now: bool = False) -> None:
        if rows == self.rows or (not now and time.monotonic() - self.drawn_at < CURVE_EVERY_S):
            return
        from IPython.display import display

        # The bundle plotly's renderer would show, sent raw: displaying the figure itself would bypass the id.
        bundle = self.run.figure()._repr_mimebundle_()
        if self.handle is None:
            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)
        self.rows, self.drawn_at = rows, time.monotonic()


# Objects that render


def run_html(run: TrainingRun) -> str:
    """A run at a glance: status and progress, its key settings, and its last metrics or its evaluation report."""
    from lab.curves import progress
    from lab.train import get_method
    from lab.train.runs import read_metrics

    status = run.status  # first: it repairs a run whose process died
    record, rows = run.record, read_metrics(run.folder)
    method = get_method(record.method)
    color = STATUS_COLORS.get(status, "#2563eb")
    title = html.escape(record.name or record.id)
    parts = [
        f"<p><b>{title}</b> · {html.escape(record.method)} · <b style='color:{color}'>{status}</b>"
        f" · {html.escape(progress(rows, status)[1])}</p>",
        f"<p>{_settings(method.config, record.config)}</p>",
    ]
    if record.name:
        parts.insert(1, f"<p><small>{html.escape(record.id)}</small></p>")
    if record.error:
        parts.append(f"<p style='color:#dc2626'><b>Error:</b> {html.escape(record.error)}</p>")
    if run.adapter is not None:
        parts.append(f"<p>Adapter: <code>{html.escape(str(run.adapter))}</code></p>")
    report = run.report()
    if report is not None:
        parts.append(report_html(run.id, report))
    elif rows:
        parts.append(_last_metrics(rows, [key for key, _ in method.panels]).to_html(index=False))
    return "\n".join(parts)


def _settings(config_cls: type, config: dict) -> str:
    """The fields that tell runs apart: the method's own (and its rollouts') and a few shared ones."""
    from lab.train.config import group_of

    own = [k for k in config if group_of(config_cls, k) not in ("model", "LoRA", "optimisation", "data")]
    shown = [k for k in (*KEY_FIELDS, *own) if config.get(k) not in (None, "")]
    return " · ".join(f"{html.escape(k)} <code>{html.escape(str(config[k]))}</code>" for k in dict.fromkeys(shown))


def _last_metrics(rows: list[dict], keys: list[str]) -> pd.DataFrame:
    """One row: the last step and, for each curve, its latest value (validation rows come less often)."""
    latest = {"step": rows[-1]["step"]}
    for key in keys:
        value = next((r[key] for r in reversed(rows) if key in r), None)
        if value is not None:
            latest[key] = float(f"{value:.4g}")
    return pd.DataFrame([latest])


def report_html(run_id: str, report: dict) -> str:
    """An evaluation report: the metrics with their 95% intervals, one row per model, then the verdicts."""
    from lab.evaluate import report_table, summary_table
    from lab.train.evaluation import report_head

    verdicts = "".join(f"<li>{html.escape(v['sentence'])}</li>" for v in report.get("verdicts", []))
    table = summary_table(report_table({run_id: report})).to_html(index=False)
    return f"<p>{html.escape(report_head(report))}</p>\n{table}" + (f"\n<ul>{verdicts}</ul>" if verdicts else "")


def show_run(run: TrainingRun) -> None:
    """A run in a notebook: its summary, then its curves (or its evaluation's chart) once there is anything to draw."""
    from lab.train.runs import read_metrics

    drawable = run.report() is not None or bool(read_metrics(run.folder))
    show(run_html(run), run.figure() if drawable else None)


class PreferenceSet(list):
    """`Lab.comparisons()`: the votes (lab.store.Comparison, oldest first) as a list, which in a notebook shows the
    counts per annotator, the TRL preference pairs they export as, and the first votes."""

    def annotators(self) -> pd.DataFrame:
        """Per annotator: votes cast (skips are not votes), how many ranked, tied or found both answers bad, the
        skips, and the preference pairs their votes export as."""
        from lab.preferences import preference_rows

        rows = []
        for name in sorted({c.annotator for c in self}):
            theirs = [c for c in self if c.annotator == name]
            verdicts = [c.verdict for c in theirs]
            rows.append(
                {
                    "annotator": name or "(none)",
                    "votes": len(verdicts) - verdicts.count("skipped"),
                    "ranked": verdicts.count("ranked"),
                    "ties": verdicts.count("tie"),
                    "both bad": verdicts.count("both-bad"),
                    "skipped": verdicts.count("skipped"),
                    "pairs": len(preference_rows(theirs)),
                }
            )
        columns = ["annotator", "votes", "ranked", "ties", "both bad", "skipped", "pairs"]
        return pd.DataFrame(rows, columns=columns)

    def first_rows(self, count: int = FIRST_ROWS) -> pd.DataFrame:
        """The first votes as a table: who, the verdict, the prompt's last turn, and each answer with its rank."""

        def answers(c) -> str:
            ranked = [(c.ranks[i] if c.ranks else "–", a["text"]) for i, a in enumerate(c.candidates)]
            return " | ".join(f"{rank}: {_short(text)}" for rank, text in ranked)

        rows = [
            {
                "id": c.id,
                "annotator": c.annotator,
                "verdict": c.verdict,
                "prompt": _short(c.prompt[-1]["content"]),
                "answers (rank: text)": answers(c),
            }
            for c in self[:count]
        ]
        return pd.DataFrame(rows, columns=["id", "annotator", "verdict", "prompt", "answers (rank: text)"])

    def summary(self, table: pd.DataFrame | None = None) -> str:
        """One line: the votes, by how many annotators, the skips, and the preference pairs they export as."""
        table = self.annotators() if table is None else table
        return (
            f"{int(table['votes'].sum())} votes by {len(table)} annotators ({int(table['skipped'].sum())} skipped) "
            f"→ {int(table['pairs'].sum())} preference pairs"
        )

    def __repr__(self) -> str:  # the whole list would be pages of conversations
        return f"PreferenceSet({self.summary()})"

    def _repr_html_(self) -> str:
        table = self.annotators()
        shown = f"; the first {FIRST_ROWS}" if len(self) > FIRST_ROWS else ""
        head = f"<p><b>{html.escape(self.summary(table))}</b> (TRL prompt / chosen / rejected){shown}:</p>"
        return "\n".join([head, table.to_html(index=False), self.first_rows().to_html(index=False)])


def _short(text: str, most: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 1] + "…"


@dataclass(repr=False)
class ExperimentResults:
    """A prompt experiment as answered so far: `grid` (questions down, one column per variant) and `summary` (per
    variant: answered, good and bad marks, mean time and length), shown together in a notebook."""

    name: str
    grid: pd.DataFrame
    summary: pd.DataFrame

    def __repr__(self) -> str:
        return f"ExperimentResults({self.name!r}: {self._size()}, {int(self.summary['answered'].sum())} answers)"

    def _size(self) -> str:
        return f"{len(self.grid)} questions × {len(self.summary)} variants"

    def _repr_html_(self) -> str:
        grid = self.grid.to_html(index=False).replace("<td>", "<td style='white-space:pre-wrap;text-align:left'>")
        head = f"<p><b>{html.escape(self.name)}</b> · {self._size()}</p>"
        return "\n".join([head, self.summary.to_html(index=False), grid])
