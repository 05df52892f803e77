"""Benchmark the app's generation paths against plain `model.generate`, and the app's cold start.

Usage: python bench/generate.py [--max-new-tokens N] [--rounds R] [--start-rounds S] [--only generation|compare|start]

On the embedded SmolLM2-135M-Instruct (fp32, CPU) one run prints:
- tokens/s of `lab.generate.stream_chat` and `lab.generate.generate` against plain `model.generate` on the
  same model object and input ids, greedy, over interleaved rounds after one warm-up (medians; the target is
  app/plain >= 0.95). Every model call, the plain ones too, runs on the lab's one model thread
  (`lab.decoding.on_model_thread`), so the process holds one OpenMP pool as the app does;
- the time to first token of the streaming path (its first yielded text);
- the time to the first page of `python -m ui` (until GET / answers 200) next to a bare Gradio app's (one
  gr.Blocks with one Markdown), measured the same way on the same machine over interleaved rounds (medians; the
  target is at most 1.5 s more than the bare app), and until the app's status bar reports the model loaded;
- the peak RSS of this process after the generation runs, and of the app's process;
- compare chat: one message answered by three columns (the base, the base with a system prompt, a random LoRA
  adapter, r 16 on every linear layer) in one batched pass through `lab.generate.stream_columns` on the app's
  ModelManager, against one column (the base) alone, greedy, every row held to the same length (EOS waits for
  min_new_tokens); medians over interleaved rounds, the target is three/one <= 1.6. Beside them, the plain
  library's path for the same batches: `model.generate` with PEFT's `adapter_names`.

Every figure assumes the embedded GGUF is already converted into the cache ($LAB_CACHE or
~/.cache/alignment-lab); the header says whether it was. The lab's very first start converts it (~25 s).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `lab` importable

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from lab.decoding import on_model_thread  # noqa: E402
from lab.generate import (  # noqa: E402
    Column,
    Generation,
    GenerationSettings,
    Message,
    build_messages,
    encode_batch,
    encode_chat,
    generate,
    stream_chat,
    stream_columns,
)
from lab.models import (  # noqa: E402
    DEFAULT_MODEL,
    LoadedModel,
    ModelManager,
    default_model_dir,
    free_memory,
    is_converted,
    load_model,
)
from lab.refs import BASE_VIEW  # noqa: E402

PROMPT = "Write a long, detailed essay about the history of computing, from the abacus to modern laptops."
TARGET = 0.95
COMPARE_TARGET = 1.6  # three columns in one batch may take at most this many times one column alone
SYSTEM = "You are a patient teacher. Answer truthfully, with examples."
ADAPTER = "random-lora"
PAGE_TARGET_S = 1.5  # the app's first page may come at most this much later than a bare Gradio app's
POLL_S = 0.1
START_TIMEOUT_S = 180.0
BARE_APP = """
import sys
import gradio as gr

with gr.Blocks() as demo:
    gr.Markdown("A bare Gradio app")
demo.queue().launch(server_name="127.0.0.1", server_port=int(sys.argv[1]))
"""


@dataclass
class Run:
    seconds: float
    tokens: int
    first_token_s: float | None = None
    exact_tokens: bool = True  # False where the count is re-tokenized text

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


@dataclass
class ColdStart:
    page_s: list[float]  # one per round: the app's time to its first page
    bare_page_s: list[float]  # the same rounds, for the bare Gradio app
    model_s: float | None  # None when the app has no status endpoint to ask
    peak_rss_mib: float  # of the app's process, once its model is loaded


# --- generation paths --------------------------------------------------------------------------------------------

PLAIN = "plain model.generate"
APP_GENERATE = "lab.generate.generate"
APP_STREAM = "lab.generate.stream_chat"
PREFILL = "plain model.generate, 1 new token"


def run_plain(lm: LoadedModel, ids: torch.Tensor, new_tokens: int, mask: torch.Tensor | None = None, **kw) -> Run:
    """Plain `model.generate`, greedy, forced to exactly `new_tokens` new tokens for every row."""
    start = time.perf_counter()
    out = lm.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids) if mask is None else mask,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=lm.tokenizer.pad_token_id,
        **kw,
    )
    return Run(time.perf_counter() - start, (out.shape[1] - ids.shape[1]) * out.shape[0])


def run_generate(lm: LoadedModel, messages: list[Message], settings: GenerationSettings) -> Run:
    """The app's non-streaming path, timed around the whole call (templating and decoding included)."""
    start = time.perf_counter()
    reply = generate(lm, messages, settings)
    return Run(time.perf_counter() - start, reply.new_tokens)


def run_stream(lm: LoadedModel, messages: list[Message], settings: GenerationSettings, reference: Generation) -> Run:
    """The app's streaming path, with the time until its first piece of text.

    stream_chat yields only text. Greedy on the same ids it must equal the non-streaming `reference`,
    whose token count is exact; otherwise the count falls back to re-tokenizing the text.
    """
    start = time.perf_counter()
    first: float | None = None
    text = ""
    for reply in stream_chat(lm, messages, settings):
        if first is None:
            first = time.perf_counter() - start
        text = reply
    seconds = time.perf_counter() - start
    if text.strip() == reference.text:
        return Run(seconds, reference.new_tokens, first)
    return Run(seconds, len(lm.tokenizer(text, add_special_tokens=False)["input_ids"]), first, exact_tokens=False)


def measure_throughput(lm: LoadedModel, new_tokens: int, rounds: int) -> dict[str, list[Run]]:
    """One warm-up call, then `rounds` rounds of every path, the order rotating each round."""
    messages = build_messages(PROMPT)
    settings = GenerationSettings(temperature=0.0, max_new_tokens=new_tokens)
    ids = encode_chat(lm, messages, new_tokens)
    reference = generate(lm, messages, settings)  # the warm-up, and the reply stream_chat must reproduce
    paths: dict[str, Callable[[], Run]] = {
        PLAIN: lambda: on_model_thread(lambda: run_plain(lm, ids, new_tokens)),
        APP_GENERATE: lambda: run_generate(lm, messages, settings),
        APP_STREAM: lambda: run_stream(lm, messages, settings, reference),
        PREFILL: lambda: on_model_thread(lambda: run_plain(lm, ids, 1)),
    }
    names = list(paths)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(paths[name]())
    return runs


# --- compare chat: three columns in one batched pass -------------------------------------------------------------

ONE_COLUMN = "one column: base"
THREE_COLUMNS = f"three columns: base, base + system prompt, {ADAPTER}"
IN_A_ROW = "the same three, one after another"
PLAIN_ONE = "plain model.generate, one column"
PLAIN_THREE = "plain model.generate, three (PEFT adapter_names)"


def random_adapter(folder: Path, model_dir: Path) -> Path:
    """A LoRA adapter of the model in `model_dir` with random weights, shaped as cpu-default trains one (r 16, every
    linear layer): its speed is a trained adapter's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir)
    get_peft_model(base, LoraConfig(r=16, target_modules="all-linear", init_lora_weights=False)).save_pretrained(folder)
    return folder


def run_columns(manager: ModelManager, columns: list[Column], settings: GenerationSettings) -> Run:
    """The Compare tab's path: every column's reply streamed from one batched generate, held as the tab holds it."""
    hold = functools.partial(manager.use_many, [column.view for column in columns])
    start = time.perf_counter()
    first: float | None = None
    for _ in stream_columns(hold, columns, settings):
        first = first if first is not None else time.perf_counter() - start
    return Run(time.perf_counter() - start, settings.max_new_tokens * len(columns), first)


def run_in_a_row(manager: ModelManager, columns: list[Column], settings: GenerationSettings) -> Run:
    """What the batch saves: each column generated alone, one after another."""
    runs = [run_columns(manager, [column], settings) for column in columns]
    return Run(sum(r.seconds for r in runs), sum(r.tokens for r in runs), runs[0].first_token_s)


def run_plain_columns(lm: LoadedModel, columns: list[Column], new_tokens: int) -> Run:
    """The library's own path for the same batch: `model.generate` with PEFT's `adapter_names` (one gather and
    scatter per adapter in every layer), base rows '__base__'; one base column runs with the adapters disabled."""
    ids, mask = encode_batch(lm, [column.messages for column in columns], new_tokens)
    views = [column.view for column in columns]
    kwargs = {"adapter_names": [v if v != BASE_VIEW else "__base__" for v in views]} if len(set(views)) > 1 else {}
    with lm.model.disable_adapter() if set(views) == {BASE_VIEW} else contextlib.nullcontext():
        return run_plain(lm, ids, new_tokens, mask, **kwargs)


def measure_compare(
    new_tokens: int, rounds: int, model: str = DEFAULT_MODEL, precision: str = "fp32", device: str = "cpu"
) -> dict[str, list[Run]]:
    """One warm-up of each, then `rounds` rounds of one column and three in one batch (the lab's path and the plain
    library's) and of three in a row, the order rotating."""
    manager = ModelManager()
    manager.load(model, precision, device)
    model_dir = default_model_dir() if model == DEFAULT_MODEL else Path(model)
    with tempfile.TemporaryDirectory(prefix="bench-adapter-") as tmp:
        manager.add_adapter(ADAPTER, on_model_thread(lambda: random_adapter(Path(tmp) / "adapter", model_dir)))
    manager.loaded.model.generation_config.min_new_tokens = new_tokens  # every row exactly new_tokens long
    settings = GenerationSettings(temperature=0.0, max_new_tokens=new_tokens)
    base = build_messages(PROMPT)
    three = [Column(base), Column(build_messages(PROMPT, SYSTEM)), Column(base, ADAPTER)]
    paths: dict[str, Callable[[], Run]] = {
        ONE_COLUMN: lambda: run_columns(manager, [Column(base)], settings),
        THREE_COLUMNS: lambda: run_columns(manager, three, settings),
        IN_A_ROW: lambda: run_in_a_row(manager, three, settings),
        PLAIN_ONE: lambda: on_model_thread(lambda: run_plain_columns(manager.loaded, [Column(base)], new_tokens)),
        PLAIN_THREE: lambda: on_model_thread(lambda: run_plain_columns(manager.loaded, three, new_tokens)),
    }
    names = list(paths)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for name in names:
        if name != IN_A_ROW:  # it runs the shapes of the first
            paths[name]()  # warm-up
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append(paths[name]())
    return runs


# --- cold start of the app ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def page_served(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def model_status(url: str) -> str:
    """The status bar's text, through the API endpoint of its 1 s timer (`/model_status`, in ui/app.py)."""
    call = f"{url}/gradio_api/call/model_status"
    request = urllib.request.Request(call, data=b'{"data": []}', headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        event = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{call}/{event}", timeout=5) as response:
        return response.read().decode()


def model_loaded(url: str) -> bool:
    status = model_status(url)
    if "Failed to load" in status:
        raise RuntimeError(f"The app could not load its model: {status.strip()}")
    return "Loaded " in status


def wait_until(check: Callable[[], bool], proc: subprocess.Popen, start: float, log: Path) -> float:
    """Seconds from `start` until `check()` holds, polling every POLL_S; fails if the app exits or hangs."""
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"python -m ui exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        if time.perf_counter() - start > START_TIMEOUT_S:
            raise RuntimeError(f"python -m ui did not get there in {START_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    return time.perf_counter() - start


def serve(
    command: Callable[[int, Path], list[str]], then: Callable[[str, subprocess.Popen, float, Path], None] | None = None
) -> float:
    """Start `command(port, scratch folder)` and return the seconds until its GET / answers 200; then stop it.

    `then(url, proc, start, log)` runs while the server is still up, for figures that need it running.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("w") as stderr:
            start = time.perf_counter()
            proc = subprocess.Popen(command(port, Path(tmp)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                page_s = wait_until(lambda: page_served(url), proc, start, log)
                if then:
                    then(url, proc, start, log)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    return page_s


def the_app(port: int, tmp: Path) -> list[str]:
    """`python -m ui` on a fresh workspace."""
    return [sys.executable, "-m", "ui", "--port", str(port), "--workspace", str(tmp / "workspace")]


def bare_gradio(port: int, tmp: Path) -> list[str]:
    """A Gradio app with nothing in it: the floor any Gradio app's first page stands on."""
    return [sys.executable, "-c", BARE_APP, str(port)]


def measure_cold_start(rounds: int) -> ColdStart:
    """The first page of `python -m ui` and of a bare Gradio app, alternating which starts first each round.

    The app's last round also waits until its model is loaded and reads its peak memory.
    """
    app: list[float] = []
    bare: list[float] = []
    after: dict[str, float | None] = {}

    def model_and_memory(url: str, proc: subprocess.Popen, start: float, log: Path) -> None:
        try:
            after["model_s"] = wait_until(lambda: model_loaded(url), proc, start, log)
        except urllib.error.HTTPError:
            after["model_s"] = None
        after["peak"] = peak_rss_mib(proc.pid)

    for r in range(rounds):
        for which in ("app", "bare") if r % 2 == 0 else ("bare", "app"):
            if which == "bare":
                bare.append(serve(bare_gradio))
            else:
                app.append(serve(the_app, model_and_memory if len(app) == rounds - 1 else None))
    return ColdStart(app, bare, after["model_s"], after["peak"])


def peak_rss_mib(pid: int) -> float:
    """A live process's peak RSS (VmHWM, Linux).

    Not RUSAGE_CHILDREN: a child's ru_maxrss starts from the RSS of this process at the fork.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


# --- report ------------------------------------------------------------------------------------------------------


def median(runs: list[Run], value: Callable[[Run], float]) -> float:
    return statistics.median(value(run) for run in runs)


def throughput_rows(runs: dict[str, list[Run]]) -> list[str]:
    speed = {name: median(runs[name], lambda r: r.tokens_per_s) for name in (PLAIN, APP_GENERATE, APP_STREAM)}
    rows = [f"  {'path':<40}{'tokens':>7}{'tok/s':>8}{'vs plain':>10}{'target':>10}  result"]
    for name, value in speed.items():
        exact = all(run.exact_tokens for run in runs[name])
        tokens = f"{runs[name][0].tokens}{'' if exact else '~'}"
        row = f"  {name:<40}{tokens:>7}{value:>8.1f}"
        ratio = value / speed[PLAIN]
        if name != PLAIN:
            row += f"{ratio:>10.3f}{'>= ' + str(TARGET):>10}  {'PASS' if ratio >= TARGET else 'FAIL'}"
        rows.append(row)
    if not all(run.exact_tokens for run in runs[APP_STREAM]):
        rows.append("  ~ stream_chat's text differed from generate's reply: its count is re-tokenized text")
    return rows


def header_rows(args: argparse.Namespace, loads: tuple[float, float], warm_cache: bool) -> list[str]:
    cache = "warm (already converted)" if warm_cache else "COLD: load_model converted the GGUF first"
    return [
        f"\nAlignment Lab generation benchmark: {DEFAULT_MODEL}, fp32, cpu, torch threads {torch.get_num_threads()}",
        f"CPU: {cpu_name()}",
        f"greedy, {args.max_new_tokens} new tokens, 1 warm-up + {args.rounds} rounds of every path, order rotating",
        f"model cache: {cache}",
        f"load average at start / end: {loads[0]:.2f} / {loads[1]:.2f} on {os.cpu_count()} cores",
    ]


def cpu_name() -> str:
    """The CPU's model name and whether it has native bf16 (Linux's /proc/cpuinfo)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = [flag for flag in ("avx512_bf16", "amx_bf16", "avx2") if f" {flag}" in info]
    return f"{name} ({', '.join(flags) or 'no avx2'})"


def generation_rows(load_s: float, runs: dict[str, list[Run]], rss_mib: float) -> list[str]:
    ttft = median(runs[APP_STREAM], lambda r: r.first_token_s or r.seconds) * 1000
    prefill = median(runs[PREFILL], lambda r: r.seconds) * 1000
    return [
        "\nThroughput (median tokens/s)",
        *throughput_rows(runs),
        "\nLatency (medians)",
        f"  {'time to first token (first text), stream_chat':<48}{ttft:>8.0f} ms",
        f"  {PREFILL:<48}{prefill:>8.0f} ms",
        f"  {'load_model in-process (first load here)':<48}{load_s:>8.2f} s",
        "\nPeak memory (RSS)",
        f"  {'this process, after the generation runs':<48}{rss_mib:>8.0f} MiB",
    ]


def cold_rows(cold: ColdStart) -> list[str]:
    page, bare = statistics.median(cold.page_s), statistics.median(cold.bare_page_s)
    verdict = "PASS" if page - bare <= PAGE_TARGET_S else "FAIL"
    model_s = "n/a (no status endpoint)" if cold.model_s is None else f"{cold.model_s:.2f} s"
    return [
        f"\nCold start, fresh workspace: GET / returns 200 (median of {len(cold.page_s)} interleaved rounds)",
        f"  {'python -m ui':<48}{page:>8.2f} s   {_seconds(cold.page_s)}",
        f"  {'bare Gradio app (gr.Blocks + one Markdown)':<48}{bare:>8.2f} s   {_seconds(cold.bare_page_s)}",
        f"  {'difference (target <= ' + str(PAGE_TARGET_S) + ' s)':<48}{page - bare:>8.2f} s   {verdict}",
        f"  {'status bar says the model is loaded':<48}{model_s:>10}",
        f"  {'peak RSS of the app process, model loaded':<48}{cold.peak_rss_mib:>8.0f} MiB",
    ]


def compare_rows(runs: dict[str, list[Run]], new_tokens: int) -> list[str]:
    rows = [
        f"\nCompare chat: one message, {new_tokens} new tokens per column, greedy, one batched pass "
        f"(median of {len(runs[ONE_COLUMN])} interleaved rounds)",
        f"  {'path':<60}{'seconds':>9}{'first text':>12}{'tok/s':>8}",
    ]
    for name, measured in runs.items():
        seconds = median(measured, lambda r: r.seconds)
        first = f"{median(measured, lambda r: r.first_token_s) * 1000:>9.0f} ms" if measured[0].first_token_s else ""
        rows.append(f"  {name:<60}{seconds:>9.2f}{first:>12}{median(measured, lambda r: r.tokens_per_s):>8.1f}")

    def ratio(over: str, under: str) -> float:
        return median(runs[over], lambda r: r.seconds) / median(runs[under], lambda r: r.seconds)

    three = ratio(THREE_COLUMNS, ONE_COLUMN)
    label = f"three columns / one column (target <= {COMPARE_TARGET})"
    rows.append(f"  {label:<60}{three:>9.2f}   {'PASS' if three <= COMPARE_TARGET else 'FAIL'}")
    rows.append(f"  {'three in a row / one column':<60}{ratio(IN_A_ROW, ONE_COLUMN):>9.2f}")
    rows.append(f"  {'plain: three columns / one column':<60}{ratio(PLAIN_THREE, PLAIN_ONE):>9.2f}")
    faster = ratio(PLAIN_ONE, ONE_COLUMN)
    rows.append(f"  {'one column: plain / the lab (the lab is this much faster)':<60}{faster:>9.2f}")
    rows.append(f"  {'three columns: plain / the lab':<60}{ratio(PLAIN_THREE, THREE_COLUMNS):>9.2f}")
    return rows


def _seconds(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


PARTS = ("generation", "compare", "start")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=128, help="new tokens per generation (default 128)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds of every path (default 3)")
    parser.add_argument(
        "--start-rounds", type=int, default=3, help="cold starts of the app and of a bare Gradio app (default 3)"
    )
    parser.add_argument(
        "--only", choices=PARTS, action="append", help="measure only this part (repeatable; default: all of them)"
    )
    args = parser.parse_args(argv)
    if min(args.max_new_tokens, args.rounds, args.start_rounds) < 1:
        parser.error("--max-new-tokens, --rounds and --start-rounds must be at least 1")
    args.only = args.only or list(PARTS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hf_logging.disable_progress_bar()  # keep the report readable
    warm_cache = is_converted(default_model_dir())
    load_at_start = os.getloadavg()[0]
    report: list[str] = []
    if "generation" in args.only:
        start = time.perf_counter()
        lm = on_model_thread(lambda: load_model(DEFAULT_MODEL, "fp32", "cpu", progress=lambda _: None))
        load_s = time.perf_counter() - start
        runs = measure_throughput(lm, args.max_new_tokens, args.rounds)
        report += generation_rows(load_s, runs, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        del lm
        free_memory()
    if "compare" in args.only:
        report += compare_rows(measure_compare(args.max_new_tokens, args.rounds), args.max_new_tokens)
    if "start" in args.only:
        report += cold_rows(measure_cold_start(args.start_rounds))
    print("\n".join(header_rows(args, (load_at_start, os.getloadavg()[0]), warm_cache) + report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
