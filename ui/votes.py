"""Which votes a preference run trains on, and what they give: the picker the Training and Reward tabs share.

A scenario's queue or every vote, annotators left out by name or all the flagged ones in one tick, and one line
counting the pairs (with the warning when they are too few) that follows every change.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from lab import Lab
from lab.data import DataFileError

ALL_VOTES = "every vote in the workspace"


@dataclass
class VotePicker:
    box: gr.Group  # shown only for methods that train on preferences
    scenario: gr.Dropdown
    exclude: gr.Dropdown
    flagged: gr.Checkbox
    count: gr.Markdown

    @property
    def inputs(self) -> list:
        return [self.scenario, self.exclude, self.flagged]

    def options(self, values: dict) -> dict:
        """The data options of lab.jobs.prepare (see lab.train.snapshot.preference_votes) from the form's values."""
        scenario = values[self.scenario]
        return {
            "exclude_annotators": values[self.exclude] or [],
            "exclude_flagged": bool(values[self.flagged]),
            "scenario": "" if scenario == ALL_VOTES else scenario,
        }


def build_vote_picker(ctx: Lab, visible: bool = True, elem_prefix: str = "votes") -> VotePicker:
    with gr.Group(visible=visible) as box:
        with gr.Row():
            scenario = gr.Dropdown(
                [ALL_VOTES, *ctx.scenarios],
                value=ALL_VOTES,
                label="Train on votes from",
                info="Every vote, or only those cast in one scenario's queue in the Ranking tab",
            )
            exclude = gr.Dropdown([], multiselect=True, label="Leave out these annotators' votes")
            flagged = gr.Checkbox(
                label="Leave out the annotators the Arena flags",
                info="Raters far below the others' agreement with the majority",
                elem_id=f"{elem_prefix}-flagged",
            )
        count = gr.Markdown(elem_id=f"{elem_prefix}-count")
        gr.Markdown(
            "A ranking of K answers gives every pair of answers it ranks differently; **ties and both-bad votes give "
            "no pair** (neither says which answer is better), the other pairs of a ranking with a tie stay.",
        )
    exclude.focus(lambda: gr.update(choices=annotators(ctx)), outputs=exclude)
    return VotePicker(box, scenario, exclude, flagged, count)


def annotators(ctx: Lab) -> list[str]:
    return sorted({c.annotator for c in ctx.store.list_comparisons() if c.annotator})


def pair_count(ctx: Lab, picker: VotePicker, values: dict, data_file: str | None, eval_fraction: float | None) -> str:
    """The pairs these votes (or this file) give, the prompts held out at `eval_fraction`, and the warning if any;
    a file that cannot be read says why in one sentence."""
    try:
        count = ctx.count_pairs(data_file or "", eval_fraction=eval_fraction or 0.0, **picker.options(values))
    except DataFileError as err:
        return f"⚠ {err}"
    head, _, warning = count.text().partition("\nWarning: ")
    return f"**{head}**" + (f"  \n⚠ {warning}" if warning else "")
