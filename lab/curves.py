"""Training curves and progress from metrics.jsonl rows, as plotly figures and one line of text."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLUMNS = 3


def curves(runs: dict[str, list[dict]], panels: tuple[tuple[str, str], ...]) -> go.Figure:
    """One panel per (metric key, title) of the method; each run is one coloured line in every panel,
    so two runs compare at a glance."""
    rows_of_panels = max(1, -(-len(panels) // COLUMNS))
    fig = make_subplots(
        rows=rows_of_panels, cols=COLUMNS, subplot_titles=[title for _, title in panels], horizontal_spacing=0.07
    )
    colors = ["#ea580c", "#2563eb", "#16a34a", "#9333ea"]
    for number, (label, rows) in enumerate(runs.items()):
        for panel, (key, _) in enumerate(panels):
            points = [(r["step"], r[key]) for r in rows if key in r]
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=values,
                    name=label,
                    legendgroup=label,
                    showlegend=panel == 0,
                    mode="lines+markers" if len(points) < 30 else "lines",
                    line={"color": colors[number % len(colors)]},
                ),
                row=panel // COLUMNS + 1,
                col=panel % COLUMNS + 1,
            )
    fig.update_layout(
        height=60 + 230 * rows_of_panels,
        margin={"l": 40, "r": 20, "t": 40, "b": 30},
        legend={"orientation": "h", "y": -0.08},
    )
    fig.update_xaxes(title_text="step", row=rows_of_panels)
    return fig


def progress(rows: list[dict], status: str) -> tuple[float, str]:
    """(fraction done, "step 12 / 40 · 3.1 s/step · about 1 min 27 s left")."""
    if not rows:
        return 0.0, "waiting for the first step…" if status in ("queued", "running") else "no steps logged"
    last = rows[-1]
    step, total = int(last["step"]), int(last.get("max_steps") or 0)
    if total <= 0:
        return 0.0, f"step {step}"
    text = f"step {step} / {total}"
    per_step = next((r["seconds_per_step"] for r in reversed(rows) if "seconds_per_step" in r), None)
    if per_step:
        text += f" · {per_step:.1f} s/step"
        if status == "running" and step < total:
            text += f" · about {duration(per_step * (total - step))} left"
    return min(step / total, 1.0), text


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def kl_note(labels: tuple[str, str], configs: tuple[dict, dict]) -> str:
    """One line on why two RL runs' KL curves part, when one has no KL penalty and the other has one."""
    coefficients = [config.get("kl_coef") for config in configs]
    if None in coefficients or (coefficients[0] == 0) == (coefficients[1] == 0):
        return ""
    free, held = (0, 1) if coefficients[0] == 0 else (1, 0)
    return (
        f"{labels[free]} has no KL penalty (kl_coef 0): nothing holds it near the base, so its KL grows as far as "
        f"the reward pulls it (watch its samples for reward hacking); {labels[held]}'s penalty "
        f"(kl_coef {coefficients[held]}) trades reward for staying close."
    )
