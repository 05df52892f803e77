"""The Gradio app: a status bar and one tab per stage of the recipe."""

from __future__ import annotations

import gradio as gr

from lab import Lab
from ui.arena import build_arena
from ui.chat import build_chat
from ui.compare import build_compare
from ui.demonstrations import build_demonstrations
from ui.downloads import forget_session
from ui.evaluation import build_evaluation
from ui.prompting import build_prompting
from ui.ranking import build_ranking
from ui.reward import build_reward
from ui.steps import step_tab
from ui.training import build_training
from ui.workshop import build_workshop

CSS = """
#status-bar { font-size: 0.9em; opacity: 0.85; }
#results-grid td { vertical-align: top; }
"""


def build_app(ctx: Lab) -> gr.Blocks:
    # Uploads in Gradio's cache are deleted after a day (checked hourly); a session's exports when it ends.
    with gr.Blocks(title="Alignment Lab", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        with gr.Row():
            gr.Markdown("## Alignment Lab")
            status = gr.Markdown(ctx.models.status, elem_id="status-bar")

        def model_status() -> str:
            return f"**Model:** {ctx.models.status}"

        gr.Timer(1.0).tick(model_status, outputs=status, show_progress="hidden", api_name="model_status")
        with step_tab("Workshop", "workshop"):
            build_workshop(ctx)
        with step_tab("Chat", "chat"):
            build_chat(ctx)
        with step_tab("Compare", "compare"):
            build_compare(ctx)
        with step_tab("Prompting", "prompting"):
            build_prompting(ctx)
        with step_tab("Demonstrations", "demonstrations"):
            build_demonstrations(ctx, app)
        with step_tab("Training", "training") as training:
            build_training(ctx, training)
        with step_tab("Ranking", "ranking"):
            build_ranking(ctx, app)
        with step_tab("Arena", "arena") as arena:
            build_arena(ctx, arena)
        with step_tab("Reward", "reward") as reward:
            build_reward(ctx, reward)
        with step_tab("Evaluation", "evaluation") as evaluation:
            build_evaluation(ctx, evaluation)

        def forget(request: gr.Request) -> None:  # Gradio injects the request by this annotation
            forget_session(ctx, request)

        app.unload(forget)
    return app
