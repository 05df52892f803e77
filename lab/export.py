"""Taking a result away: a run's adapter with its model card, the adapter merged into its base, or one GGUF file.

    python -m lab export adapter RUN --out DIR     # PEFT safetensors + README.md (the model card)
    python -m lab export merged RUN --out DIR      # a full model that plain transformers loads, + the card
    python -m lab export gguf RUN --out DIR        # RUN.f16.gguf for llama.cpp and Ollama, a Modelfile, the card

An export is written into a new folder beside DIR and renamed into place once complete, so a failure leaves
nothing half-written; a folder that already holds something is replaced only when it is a previous export and
the caller says so (`overwrite`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lab.store import Run, Store

if TYPE_CHECKING:
    import numpy as np
    import torch

    from lab.adapters import Adapter

KINDS = ("adapter", "merged", "gguf")
GGUF_DTYPES = ("f16", "bf16", "f32")  # f16: what llama.cpp users expect; f32 keeps the merged weights exactly
MARK = "alignment-lab"  # a tag in every card's front matter: a folder whose README.md has it is an export
EVAL_METRICS = (  # report.json keys shown in the card, in order, with their column titles
    ("mean_reward", "mean reward"),
    ("win_rate", "win rate"),
    ("kl", "KL to base"),
    ("mean_length", "mean length"),
    ("check", "rule check"),
    ("mc1", "MC1"),
    ("mc2", "MC2"),
)

Progress = Callable[[str], None]


def export_run(
    store: Store,
    run_id: str,
    kind: str,
    out: str | Path,
    *,
    dtype: str = "f16",
    overwrite: bool = False,
    progress: Progress = print,
) -> Path:
    """Export a run as `kind` (adapter, merged or gguf) into the folder `out`; returns that folder."""
    if kind not in KINDS:
        raise ValueError(f"Unknown export '{kind}': choose one of {', '.join(KINDS)}.")
    if kind == "adapter":
        return export_adapter(store, run_id, out, overwrite=overwrite)
    if kind == "merged":
        return export_merged(store, run_id, out, progress, overwrite=overwrite)
    return export_gguf(store, run_id, out, progress, dtype=dtype, overwrite=overwrite)


def export_adapter(store: Store, run_id: str, out: str | Path, *, overwrite: bool = False) -> Path:
    """The run's LoRA adapter (PEFT safetensors) with a model card that has its final metrics and evaluations."""
    run, adapter = trained_adapter(store, run_id)
    with staged(out, overwrite) as folder:
        for item in adapter.path.iterdir():
            if item.is_file() and item.name != "README.md":
                shutil.copy2(item, folder / item.name)
        (folder / "README.md").write_text(model_card(run, store), encoding="utf-8")
    return Path(out).expanduser()


def export_merged(
    store: Store, run_id: str, out: str | Path, progress: Progress = print, *, overwrite: bool = False
) -> Path:
    """The adapter merged into a full-precision copy of its base, saved as safetensors with the tokenizer (and its
    chat template) and the card: a folder `AutoModelForCausalLM.from_pretrained` loads without the lab."""
    run, adapter = trained_adapter(store, run_id)
    check_out(Path(out), overwrite)  # before the slow part
    model, tokenizer, precision = merged_model(run, adapter, progress)
    with staged(out, overwrite) as folder:
        progress(f"Writing the merged model to {out}…")
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        (folder / "README.md").write_text(model_card(run, store, "merged", _merge_note(run, precision)), "utf-8")
    return Path(out).expanduser()


def export_gguf(
    store: Store,
    run_id: str,
    out: str | Path,
    progress: Progress = print,
    *,
    dtype: str = "f16",
    overwrite: bool = False,
) -> Path:
    """The merged model as one GGUF file (llama architecture, byte-level BPE vocabulary) for llama.cpp and Ollama,
    with a Modelfile and the card beside it."""
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"Unknown GGUF dtype '{dtype}': choose one of {', '.join(GGUF_DTYPES)}.")
    run, adapter = trained_adapter(store, run_id)
    if adapter.kind != "chat":
        raise ValueError(f"Run {run_id} is a {adapter.kind} model: GGUF is for chat adapters (export it as merged).")
    check_out(Path(out), overwrite)
    model, tokenizer, precision = merged_model(run, adapter, progress)
    name = f"{run.id}.{dtype}.gguf"
    with staged(out, overwrite) as folder:
        progress(f"Writing {name} ({dtype})…")
        write_gguf(model, tokenizer, folder / name, dtype, run.id)
        (folder / "Modelfile").write_text(f"FROM ./{name}\n", encoding="utf-8")
        note = f"{_merge_note(run, precision)} The GGUF holds its 2-D weights in {dtype}, the norms in f32."
        (folder / "README.md").write_text(model_card(run, store, "gguf", note, gguf_name=name), encoding="utf-8")
    return Path(out).expanduser()


def trained_adapter(store: Store, run_id: str) -> tuple[Run, Adapter]:
    """The run and its saved adapter, or ValueError saying why there is none to export."""
    from lab.adapters import list_adapters

    try:
        run = store.get_run(run_id)
    except KeyError:
        raise ValueError(f"There is no run {run_id} in this workspace.") from None
    adapter = list_adapters(store, kind=None).get(run_id)
    if adapter is None:
        raise ValueError(f"Run {run_id} ({run.method}, {run.status}) has no trained adapter to export.")
    return run, adapter


# merging


def merge_precision(precision: str) -> str:
    """The dtype to merge in: the run's own when it is a float type, fp32 for a run trained on an 8- or 4-bit base
    (adding LoRA weights to quantized ones would round them away)."""
    return precision if precision in ("fp32", "bf16", "fp16") else "fp32"


def merged_model(run: Run, adapter: Adapter, progress: Progress = print) -> tuple[torch.nn.Module, Any, str]:
    """(model, tokenizer, precision): the run's base loaded on the CPU in `merge_precision`, the adapter merged in."""
    from peft import PeftModel

    from lab.models import load_model

    precision = merge_precision(run.config.get("precision", "fp32"))
    lm = load_model(run.config["model"], precision, "cpu", kind=adapter.kind, progress=progress)
    progress(f"Merging the adapter of {run.id} into {lm.base} ({precision})…")
    model = PeftModel.from_pretrained(lm.model, str(adapter.path)).merge_and_unload()
    model.eval()
    return model, lm.tokenizer, precision


def _merge_note(run: Run, precision: str) -> str:
    trained = run.config.get("precision", "fp32")
    if trained == precision:
        return f"The adapter is merged into the base in {precision}, the precision it trained in."
    return (
        f"The adapter trained on a {trained} base and is merged into a {precision} copy of it: its outputs differ "
        f"slightly from those of the {trained} model it trained with."
    )


# GGUF


def write_gguf(model: torch.nn.Module, tokenizer: Any, path: Path, dtype: str, name: str) -> None:
    """Write a Llama model and its byte-level BPE tokenizer as llama.cpp's convert_hf_to_gguf does, with gguf's own
    tables: tensor names from its TensorNameMap, q/k rows permuted to llama.cpp's rotary layout (the reader in
    transformers undoes it), special tokens marked CONTROL so that they stay whole."""
    import gguf

    config = model.config
    if config.model_type != "llama":
        raise ValueError(f"GGUF export supports Llama-architecture bases, as SmolLM2; this is {config.model_type}.")
    rope = getattr(config, "rope_parameters", None) or {"rope_type": "default", "rope_theta": config.rope_theta}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"GGUF export supports plain rotary embeddings; this base uses {rope['rope_type']} scaling.")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
    writer.add_file_type(file_types.get(dtype, gguf.LlamaFileType.MOSTLY_BF16))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(rope["rope_theta"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    add_vocabulary(writer, tokenizer, config.vocab_size)
    for tensor_name, data, raw_dtype in gguf_tensors(model, dtype):
        writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def gguf_tensors(model: torch.nn.Module, dtype: str) -> Iterator[tuple[str, np.ndarray, Any]]:
    """(GGUF name, data, raw GGML type or None) for every weight; 1-D tensors (norms) stay f32 as in llama.cpp."""
    import gguf
    import numpy as np

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads = {gguf.MODEL_TENSOR.ATTN_Q: config.num_attention_heads, gguf.MODEL_TENSOR.ATTN_K: config.num_key_value_heads}
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied to token_embd: a file without output.weight says so
        found = names.get_type_and_name(hf_name, try_suffixes=(".weight", ".bias"))
        if found is None:
            raise ValueError(f"The model's tensor {hf_name} has no GGUF name: this is not a plain Llama model.")
        kind, gguf_name = found
        data = tensor.detach().float().numpy()
        if kind in heads:
            data = _rotary_permute(data, heads[kind])
        if data.ndim == 1 or dtype == "f32":
            yield gguf_name, data.astype(np.float32), None
        elif dtype == "f16":
            yield gguf_name, data.astype(np.float16), None
        else:
            bf16 = gguf.GGMLQuantizationType.BF16
            yield gguf_name, gguf.quants.quantize(data, bf16), bf16


def _rotary_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF's q/k rows (two rotary halves per head) → llama.cpp's interleaved pairs; shape (n_head·head_dim, …) kept."""
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def add_vocabulary(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """tokenizer.ggml.*: the tokens by id (padded to the embedding size), their types, the merges, the special
    ids, whether a BOS is added (as the tokenizer does it, not as its config says) and the chat template."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model["type"] != "BPE" or model.get("byte_fallback") or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise ValueError("GGUF export supports byte-level BPE tokenizers (GPT-2 style, as SmolLM2's) only.")
    if len(tokenizer) > vocab_size:
        raise ValueError(f"The tokenizer has {len(tokenizer)} tokens but the model only {vocab_size} embeddings.")
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:  # special ones (<|im_end|>) must stay whole: CONTROL; others (<think>) USER_DEFINED
            tokens.append(by_id[index])
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(spec.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    for role in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{role}_token_id")
        if token_id is not None:
            getattr(writer, f"add_{role}_token_id")(token_id)
    first = tokenizer("a")["input_ids"][:1]
    writer.add_add_bos_token(tokenizer.bos_token_id is not None and first == [tokenizer.bos_token_id])
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _pre_tokenizer(pre: dict | None) -> str:
    """llama.cpp's name for how the text is split before BPE: GPT-2's regex, or SmolLM's (digits one by one first)."""
    parts = (pre or {}).get("pretokenizers") or ([pre] if pre else [])
    shape = [part["type"] for part in parts]
    if shape == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if shape == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"
    raise ValueError(f"GGUF export cannot name this tokenizer's pre-tokenizer ({' + '.join(shape) or 'none'}).")


# the output folder


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a folder that would lose something: a file, or a non-empty folder that is not a previous export (or
    is one and `overwrite` is off)."""
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: give a folder to export into.")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_export(out):
        raise ValueError(f"{out} holds files that are not an Alignment Lab export: choose a new or empty folder.")
    if not overwrite:
        raise ValueError(f"{out} already holds an export: choose a new or empty folder, or overwrite it.")


def is_export(folder: Path) -> bool:
    card = folder / "README.md"
    return card.is_file() and f"tags: [{MARK}" in card.read_text(encoding="utf-8", errors="replace")[:500]


@contextmanager
def staged(out: str | Path, overwrite: bool) -> Iterator[Path]:
    """A new folder beside `out` to write the export into: renamed to `out` when the block ends, removed if it
    fails, so `out` is always either as it was or the whole export."""
    out = Path(out).expanduser()
    check_out(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield staging
        check_out(out, overwrite)  # again: a merge is long enough for someone else to write there meanwhile
        staging.chmod(0o755)  # mkdtemp made it private; an export is for the user's other tools (Ollama)
        if out.is_dir() and any(out.iterdir()):
            previous = staging.with_name(f"{staging.name}-previous")
            os.replace(out, previous)
            os.replace(staging, out)
            shutil.rmtree(previous)
        else:
            os.replace(staging, out)  # a rename onto an empty folder replaces it
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# the model card


def model_card(run: Run, store: Store | None = None, kind: str = "adapter", note: str = "", gguf_name: str = "") -> str:
    """README.md of an export: what it is, where it came from (base, method, data with its rows and hash), the
    resolved config, and with a store the final metrics and evaluation results; then how to load it."""
    from lab.train import get_method

    method = get_method(run.method)
    p, config = run.provenance, run.config
    data = p.get("data") or {}
    base = p.get("base_model") or config.get("model", "")
    what = {
        "adapter": "A LoRA adapter",
        "merged": "A full model (a LoRA adapter merged into its base)",
        "gguf": "A GGUF model for llama.cpp and Ollama (a LoRA adapter merged into its base)",
    }[kind]
    lines = [
        "---",
        f"base_model: {config.get('model', '')}",
        f"library_name: {'peft' if kind == 'adapter' else kind if kind == 'gguf' else 'transformers'}",
        f"tags: [{MARK}, lora, {run.method}]",
        "---",
        "",
        f"# {run.name or run.id}",
        "",
        f"{what} trained by Alignment Lab with **{run.method}**: {method.summary}",
        "",
        *([note, ""] if note else []),
        "## Where it came from",
        "",
        f"- Base model: `{base}` ({config.get('precision', '')})",
        f"- Parent adapter: {_parent(p.get('parent_adapter'))}",
        f"- Data: {data.get('source', 'unknown')}, {data.get('rows', '?')} rows, sha256 `{data.get('sha256', '')}`",
        f"- Reward model: {p.get('reward_model') or 'none'}",
        f"- Run: `{run.id}`; `config.yaml` in the run folder reproduces it with "
        f"`python -m lab train {run.method} --config config.yaml`",
        "",
        "## Config",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip(),
        "```",
        "",
    ]
    if store is not None:
        lines += _final_metrics(store.runs_dir / run.id / "final_metrics.json")
        lines += _evaluations(store, run.id)
    lines += ["## Load it", "", *_loading(kind, method.adapter_kind or "chat", gguf_name), ""]
    return "\n".join(lines)


def _parent(parent: dict | None) -> str:
    if not parent:
        return "none (a new adapter on the base)"
    return f"run `{parent['run']}`" if parent.get("run") else f"`{parent['path']}`"


def _loading(kind: str, adapter_kind: str, gguf_name: str) -> list[str]:
    head = "SequenceClassification" if adapter_kind == "reward" else "CausalLM"
    if kind == "adapter":
        code = [f"from peft import AutoPeftModelFor{head}", f"model = AutoPeftModelFor{head}.from_pretrained('.')"]
    elif kind == "merged":
        code = [
            f"from transformers import AutoModelFor{head}, AutoTokenizer",
            f"model = AutoModelFor{head}.from_pretrained('.')",
            "tokenizer = AutoTokenizer.from_pretrained('.')",
        ]
    else:
        return [
            f"`llama-cli -m {gguf_name} -cnv`, or `ollama create NAME -f Modelfile && ollama run NAME`, or:",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM",
            f"model = AutoModelForCausalLM.from_pretrained('.', gguf_file='{gguf_name}')",
            "```",
        ]
    return ["```python", *code, "```"]


def _final_metrics(path: Path) -> list[str]:
    metrics = _read_json(path)
    numbers = {k: v for k, v in metrics.items() if _number(v) is not None} if isinstance(metrics, dict) else {}
    if not numbers:
        return []
    rows = [f"| {key} | {_fmt(value)} |" for key, value in numbers.items()]
    return ["## Final metrics", "", "| metric | value |", "| --- | --- |", *rows, ""]


def evaluations(store: Store, run_id: str) -> list[tuple[str, dict, list[dict]]]:
    """(eval run id, report, rows) for each finished evaluation that scored this run: the reference row, then the
    rows of this run (alone or with the evaluation's prompt, 'RUN+prompt'); unreadable reports are skipped."""
    found = []
    for other in store.list_runs(("done",)):
        if other.method != "eval":
            continue
        report = _read_json(store.runs_dir / other.id / "report.json")
        models = report.get("models") if isinstance(report, dict) else None
        rows = [row for row in models if isinstance(row, dict)] if isinstance(models, list) else []
        mine = [row for row in rows if _is_run(str(row.get("model")), run_id)]
        if not mine:
            continue
        reference = [row for row in rows if row.get("model") == report.get("reference") and row not in mine]
        found.append((other.id, report, reference[:1] + mine))
    return found


def _is_run(model: str, run_id: str) -> bool:
    """Whether an evaluated model is this run's adapter, alone or with the evaluation's prompt ('RUN+prompt')."""
    return model == run_id or model.startswith(f"{run_id}+")


def _evaluations(store: Store, run_id: str) -> list[str]:
    lines = []
    for eval_id, report, rows in evaluations(store, run_id):
        filled = {key for row in rows for key in row if _number(row[key]) is not None}
        columns = [(key, title) for key, title in EVAL_METRICS if key in filled]
        judge, reference = report.get("judge") or "none", report.get("reference")
        lines += [
            f"### `{eval_id}`: {report.get('prompts', '?')} prompts, judge {judge}, reference {reference}",
            "",
            "| model | " + " | ".join(title for _, title in columns) + " |",
            "| --- |" + " --- |" * len(columns),
        ]
        lines += ["| " + " | ".join([_label(row), *(_cell(row, key) for key, _ in columns)]) + " |" for row in rows]
        lines.append("")
    return ["## Evaluation", "", *lines] if lines else []


def _label(row: dict) -> str:
    model, label = str(row.get("model", "")), str(row.get("label") or "")
    return f"{label} (`{model}`)" if label and label != model else f"`{model}`"


def _cell(row: dict, key: str) -> str:
    value = _number(row.get(key))
    if value is None:
        return "–"
    low, high = _number(row.get("win_low")), _number(row.get("win_high"))
    if key == "win_rate" and low is not None and high is not None:
        return f"{_fmt(value)} [{_fmt(low)}, {_fmt(high)}]"
    return _fmt(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
