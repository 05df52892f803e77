"""Alignment Lab's Gradio app: one module per tab, all logic in lab/."""
