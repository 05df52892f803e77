"""A decoding step made lean: what `model.generate` spends a step on, written for inference on the shapes it has.

`decoding(model, rows, views)` holds both of these for one generate call:

- Few-row products in the faster orientation (`few_rows`). Each step multiplies every weight matrix by one row
  per sequence, a product bound by reading the weights. How fast a BLAS reads them depends on how the product is
  written: on a 2-core AMD EPYC with PyTorch's MKL, `x @ Wᵀ` (what `nn.Linear` calls) ran one row single-threaded
  at about 12 GB/s, while `W @ xᵀ` with at least two columns used both cores. SmolLM2-135M's linear layers took
  47 ms a step for one row as `x @ Wᵀ` and 21 ms as `W @ xᵀ` with a zero row added, 99 ms and 32 ms for three
  rows. In bf16 and fp16 the same CPU ran `x @ Wᵀ` faster. CPUs and libraries differ, so the orientation is timed
  on the model's own largest weight once per process, dtype and row count, and the faster one kept.
- LoRA per row (`row_adapters`). Each LoRA layer computes `base(x) + s·(x Aᵀ) Bᵀ` for its active adapters, or,
  in a batch whose rows run different views, each adapter's term masked to its rows, without PEFT's general
  forward (argument checks, dtype casts, dropout, one gather and scatter per adapter in every layer): on the same
  CPU that forward cost more than the LoRA products themselves.

Same numbers as the library's paths up to float rounding.

Every in-process model call runs on one thread (`on_model_thread`). GNU OpenMP, which PyTorch's CPU products run
on, keeps a pool of worker threads for each thread that ever ran a parallel product, and once the process holds
more of them than there are cores it stops letting idle workers spin: each parallel product then waits for a
worker to wake up. A decoding step is some two hundred products of a few hundred microseconds, so on 2 cores a
step took 2.5x as long from a second thread as from the first (the app's request threads, the candidate worker and
the compare batches each would have been one). One model thread keeps one pool.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

FEW = 8  # up to this many rows a product counts as a decoding step's; a prompt's pass has more
TRIES = 3  # timings of each orientation; the fastest of each is compared

_faster: dict[tuple, bool] = {}  # (dtype, weight shape, rows) -> whether W @ xᵀ was faster
_calls: queue.SimpleQueue = queue.SimpleQueue()  # (function, future) for the model thread
_model_thread: threading.Thread | None = None
_starting = threading.Lock()

T = TypeVar("T")


def generate(model: torch.nn.Module, views: list[str] | None = None, **kwargs) -> torch.Tensor:
    """`model.generate(**kwargs)` with the lean decoding step, on the model thread, without gradients. The rows are
    those of `input_ids`; `views` as in `decoding`."""

    def call() -> torch.Tensor:
        import torch

        rows = kwargs["input_ids"].shape[0] * kwargs.get("num_return_sequences", 1)
        with torch.inference_mode(), decoding(model, rows, views):
            return model.generate(**kwargs)

    return on_model_thread(call)


def on_model_thread(call: Callable[[], T]) -> T:
    """`call()` run on the process's one model thread, the caller waiting for its result (or its exception).

    The caller holds whatever lock guards the model: the model thread only computes, never waits for a lock, so
    callers cannot deadlock it. A call made on the model thread itself runs at once."""
    global _model_thread
    if threading.current_thread() is _model_thread:
        return call()
    with _starting:
        if _model_thread is None:
            _model_thread = threading.Thread(target=_serve, name="model", daemon=True)
            _model_thread.start()
    done: Future = Future()
    _calls.put((call, done))
    return done.result()


def _forget_model_thread() -> None:
    """A forked child has no model thread: its first call starts its own."""
    global _calls, _model_thread, _starting
    _calls, _model_thread, _starting = queue.SimpleQueue(), None, threading.Lock()


os.register_at_fork(after_in_child=_forget_model_thread)


def _serve() -> None:
    while True:
        call, done = _calls.get()
        try:
            done.set_result(call())
        except BaseException as err:  # handed to the waiting caller
            done.set_exception(err)


class MixedBatchError(ValueError):
    """A batch mixes views, and an adapter's layers are of a kind that cannot be masked to rows."""


@contextlib.contextmanager
def decoding(model: torch.nn.Module, rows: int, views: list[str] | None = None) -> Iterator[None]:
    """While `rows` sequences generate together on `model`: few-row products in the faster orientation, and LoRA
    per row. `views` gives each row its view ('base' or an adapter's name) where they differ; None runs every row
    on the view the model holds now."""
    with few_rows(model, rows), row_adapters(model, views):
        yield


@contextlib.contextmanager
def few_rows(model: torch.nn.Module, rows: int) -> Iterator[None]:
    """While `rows` sequences generate together on `model`, run each linear layer's few-row products as `W @ xᵀ`
    where that was measured faster on this CPU; products of more rows (the prompt's pass) stay as they are."""
    import torch

    layers = _big_linears(model)
    if rows > FEW or not layers or not transposed_is_faster(max((m.weight for m in layers), key=torch.numel), rows):
        yield
        return
    with _forwards({layer: functools.partial(_transposed, layer) for layer in layers}):
        yield


@contextlib.contextmanager
def row_adapters(model: torch.nn.Module, views: list[str] | None = None) -> Iterator[None]:
    """While `model` generates, run each LoRA layer as `base(x) + Σ mask · (x Aᵀ)(s Bᵀ)` over its adapters.

    With `views` (one per row, differing), each adapter in them is on for its own rows only and the base rows run
    none, whatever the model has active; otherwise the adapters the model has active run on every row, or none
    while its adapters are disabled. Dropout is left out: generation runs in eval mode, where it is off.
    Layers of other kinds (DoRA, LoRA on embeddings, merged weights) keep PEFT's forward, and cannot take part
    in a mixed batch (MixedBatchError)."""
    layers = _lora_layers(model)
    mixed = views is not None and len(set(views)) > 1
    if not layers:
        yield
        return
    if not all(map(_plain_lora, layers)):
        if mixed:
            raise MixedBatchError(
                "These adapters are not plain LoRA on linear layers (DoRA, embeddings or merged weights), so "
                "they cannot answer side by side in one batch: compare them one at a time."
            )
        yield
        return
    terms = functools.partial(_mixed_terms, _row_masks(views)) if mixed else _active_terms
    with _forwards({layer: functools.partial(_lora_forward, layer.base_layer, terms(layer)) for layer in layers}):
        yield


@contextlib.contextmanager
def _forwards(replacements: dict) -> Iterator[None]:
    """Give each module its replacement forward, as an instance attribute (the class and other models are
    untouched), and take them off after."""
    for module, forward in replacements.items():
        module.forward = forward
    try:
        yield
    finally:
        for module in replacements:
            del module.forward


def _lora_layers(model: torch.nn.Module) -> list:
    if getattr(model, "peft_config", None) is None:
        return []
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def _big_linears(model: torch.nn.Module) -> list:
    """The model's plain linear layers on a CPU, without LoRA's A and B matrices: those stay in cache, where the
    orientation makes no difference."""
    import torch

    lora = {id(matrix) for layer in _lora_layers(model) for m in (layer.lora_A, layer.lora_B) for matrix in m.values()}
    return [
        m for m in model.modules() if type(m) is torch.nn.Linear and m.weight.device.type == "cpu" and id(m) not in lora
    ]


def _transposed(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` computed as `W @ xᵀ` when x has at most FEW rows (one row gets a zero row beside it)."""
    import torch

    flat = x.reshape(-1, x.shape[-1])
    n = flat.shape[0]
    if n > FEW:
        return torch.nn.functional.linear(x, layer.weight, layer.bias)
    out = (layer.weight @ _two_rows(flat).T)[:, :n].T.contiguous()
    if layer.bias is not None:
        out += layer.bias
    return out.reshape(*x.shape[:-1], -1)


def _two_rows(flat: torch.Tensor) -> torch.Tensor:
    """At least two rows: with one column, `W @ xᵀ` falls back to the same single-threaded matrix-vector product."""
    import torch

    return torch.cat([flat, torch.zeros_like(flat)]) if flat.shape[0] == 1 else flat


def transposed_is_faster(weight: torch.Tensor, rows: int) -> bool:
    """Whether `W @ xᵀ` beat `x @ Wᵀ` for `rows` rows on this weight, timed once per dtype, shape and row count."""
    import torch

    key = (weight.dtype, tuple(weight.shape), rows)
    if key not in _faster:
        x = torch.randn(rows, weight.shape[1], dtype=weight.dtype)
        with torch.inference_mode():
            plain = _fastest(lambda: torch.nn.functional.linear(x, weight))
            transposed = _fastest(lambda: weight @ _two_rows(x).T)
        _faster[key] = transposed < plain
    return _faster[key]


def _fastest(product) -> float:
    times = []
    for _ in range(TRIES):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    return min(times)


def _plain_lora(layer) -> bool:
    """A LoRA layer whose adapters are each `s·(x Aᵀ) Bᵀ` added to its base layer's output."""
    return (
        not layer.merged
        and not getattr(layer, "lora_variant", None)
        and not any(getattr(layer, "lora_bias", {}).values())
        and not getattr(layer, "lora_embedding_A", None)
    )


def _term(layer, name: str, mask=None) -> tuple:
    """(Aᵀ, s·Bᵀ, row mask or None) of one adapter in one layer."""
    a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
    return a.T, (b * layer.scaling[name]).T, None if mask is None else mask.to(a.device, a.dtype)


def _active_terms(layer) -> list[tuple]:
    if layer.disable_adapters:
        return []
    return [_term(layer, name) for name in layer.active_adapters if name in layer.lora_A]


def _row_masks(views: list[str]) -> dict:
    """Each adapter's rows, as a (rows, 1, 1) mask of ones and zeros."""
    import torch

    from lab.refs import BASE_VIEW

    names = sorted(set(views) - {BASE_VIEW})
    return {name: torch.tensor([float(view == name) for view in views])[:, None, None] for name in names}


def _mixed_terms(masks: dict, layer) -> list[tuple]:
    return [_term(layer, name, mask) for name, mask in masks.items() if name in layer.lora_A]


def _lora_forward(base, terms: list[tuple], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """The base layer's output plus each adapter's term; a term with a mask counts on its rows only."""
    import torch

    out = base(x, *args, **kwargs)
    flat, total = x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])
    for a, b, mask in terms:
        low = flat.to(a.dtype) @ a  # (rows · T, r)
        if mask is not None:
            low = (low.view(x.shape[0], -1, low.shape[-1]) * mask).view_as(low)
        # an adapter kept in another dtype than its base's output (fp32 beside bf16) adds in the wider one, as PEFT
        same = b.dtype == total.dtype
        total = torch.addmm(total, low, b) if same else (total + low @ b).to(total.dtype)
    return total.view_as(out)
