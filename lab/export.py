"""Taking a result away: the model card written beside every adapter a run saves."""

from __future__ import annotations

from lab.store import Run


def model_card(run: Run) -> str:
    """README.md for a run's adapter: what it is, what it was trained from, and how to load it."""
    from lab.train import get_method

    method = get_method(run.method)
    p, config = run.provenance, run.config
    data = p.get("data") or {}
    parent = p.get("parent_adapter")
    reward = p.get("reward_model")
    lines = [
        "---",
        f"base_model: {config.get('model', '')}",
        "library_name: peft",
        f"tags: [alignment-lab, lora, {run.method}]",
        "---",
        "",
        f"# {run.name or run.id}",
        "",
        f"A LoRA adapter trained by Alignment Lab with **{run.method}**: {method.summary}",
        "",
        "## Where it came from",
        "",
        f"- Base model: `{p.get('base_model') or config.get('model', '')}` ({config.get('precision', '')})",
        f"- Parent adapter: {_parent(parent)}",
        f"- Data: {data.get('source', 'unknown')}, {data.get('rows', '?')} rows, sha256 `{data.get('sha256', '')}`",
        f"- Reward model: {reward or 'none'}",
        f"- Run: `{run.id}`; `config.yaml` in the run folder reproduces it with "
        f"`python -m lab train {run.method} --config config.yaml`",
        "",
        "## Load it",
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "model = AutoPeftModelForCausalLM.from_pretrained('path/to/this/folder')",
        "```",
        "",
    ]
    return "\n".join(lines)


def _parent(parent: dict | None) -> str:
    if not parent:
        return "none (a new adapter on the base)"
    return f"run `{parent['run']}`" if parent.get("run") else f"`{parent['path']}`"
