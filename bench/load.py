"""Load test: a room of participants votes at once over HTTP on the real app while one of them has answers generated.

Usage: python bench/load.py [--participants 20] [--seconds 60] [--model PATH_OR_ID] [--items 600] [--votes-per-item 3]

Starts `python -m ui` on a free port with a fresh temporary workspace and an --auth-file holding one login per
participant. Before the start it fills the workspace prompt pool with `--items` questions whose two answers are
prepared ahead (as a scenario ships them or "prepare N items" makes them), so a vote never waits for the model.
Then every participant, a thread with its own `gradio_client.Client` logged in as itself, asks for the next item
(/ranking_next) and votes on it (/ranking_vote) until time is up, while participant 1 in a second session (a
second browser tab) has answers made on demand for a typed prompt (/ranking_generate), one after another.
Afterwards it reads the workspace's SQLite: every vote the app acknowledged ("vote #N") must be there, under the
login that cast it.

Prints: errors (must be 0), votes acknowledged against found in the database, items that got more votes than asked
for (must be 0: the queue hands different items to different people), p50/p95/max time to record a vote and to get
the next item, the generations completed and their median time, the CPU seconds the app and the clients used
meanwhile (the clients share the machine with the app, where real participants' browsers would not), the CPU (model,
cores, native bf16) and the load average before and after. Exits 1 when a request failed, a vote is missing or an
item is over-voted.

tests/test_load.py runs a short version on a tiny model; tests/test_drills.py kills the app mid-storm with the
same pieces (App, write_logins, prepare_pool, Storm).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: make `lab` importable

from lab.experiments import seed_prompt_pool  # noqa: E402
from lab.models import BASE_VIEW, DEFAULT_MODEL  # noqa: E402
from lab.preferences import POOL_QUEUE, TYPED_QUEUE, queue_source  # noqa: E402
from lab.presets import question_sets  # noqa: E402
from lab.refs import normalise_base  # noqa: E402
from lab.store import Prompt, Store  # noqa: E402
from ui.ranking import ONE_MODEL  # noqa: E402

PREPARED = "prepared"  # the model label of the prepared answers, so a vote on them can be told from a generated one
ACK = re.compile(r"vote #(\d+)")


@dataclass
class App:
    """`python -m ui` as a child process on its own port; `kill()` is SIGKILL, as a crash or a pulled plug."""

    workspace: Path
    model: str
    logins: Path
    port: int = 0
    process: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, preexec_fn: Callable[[], None] | None = None) -> App:
        """Start the app and return once it answers HTTP (the model may still be loading)."""
        self.port = self.port or free_port()
        self.log = self.workspace.parent / f"app-{self.port}.log"
        command = [sys.executable, "-m", "ui", "--port", str(self.port), "--workspace", str(self.workspace)]
        with self.log.open("a", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [*command, "--model", self.model, "--auth-file", str(self.logins)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec_fn,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.url}/config", timeout=2)
                return self
            except urllib.error.HTTPError:  # 401 before login: it is serving
                return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"the app did not answer on {self.url} within 120 s")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_logins(path: Path, count: int) -> dict[str, str]:
    """An --auth-file of `count` logins, user01:pass-01 …; returns user → password."""
    logins = {f"user{n:02d}": f"pass-{n:02d}" for n in range(1, count + 1)}
    path.write_text("".join(f"{user}:{password}\n" for user, password in logins.items()), encoding="utf-8")
    return logins


def prepare_pool(workspace: Path, items: int, base: str, votes_per_item: int = 1) -> str:
    """Fill the workspace prompt pool with `items` questions (and the app's own seed prompts), each with two answers
    prepared ahead for `base` and wanting `votes_per_item` votes; returns the queue to vote in."""
    store = Store(workspace)
    store.set_votes_per_item(POOL_QUEUE, votes_per_item)
    store.add_prompts(
        [Prompt(f"Question {n}: is this item {n} of the load test?", source="load") for n in range(items)]
    )
    seed_prompt_pool(store, question_sets())  # what the app adds at start: prepared too, so nobody waits
    for prompt in store.list_prompts():
        answers = [{"text": f"Prepared answer {side} to “{prompt.text}”.", "model": PREPARED} for side in "AB"]
        store.add_prepared(POOL_QUEUE, prompt.text, normalise_base(base), answers)
    return POOL_QUEUE


@dataclass
class Storm:
    """Participants voting in one queue of a running app, each a thread with its own logged-in client; with
    `generate`, one more session (of the first login) asks for answers made on demand meanwhile.

    A participant stops at its first failed request (the test wants none; after a kill every request fails).
    """

    url: str
    logins: dict[str, str]
    queue: str
    generate: bool = True
    acknowledged: dict[int, str] = field(default_factory=dict)  # vote id → login, as the app confirmed it
    vote_s: list[float] = field(default_factory=list)
    next_s: list[float] = field(default_factory=list)
    generation_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unserved: list[str] = field(default_factory=list)  # a Next or a vote that did not end in a vote: what the app said

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def run(self, seconds: float) -> Storm:
        """Connect every client first (a failure is an error and nobody votes), then vote for `seconds` (or until
        `stop()`); returns self."""
        people = list(self.logins.items())
        sessions = people + people[:1] if self.generate else people
        clients: list = [None] * len(sessions)

        def connect(index: int) -> None:
            try:
                clients[index] = client(self.url, sessions[index])
            except Exception as err:  # noqa: BLE001 — every failure is counted and reported, none is expected
                self._failed(sessions[index][0], err)

        connect(0)  # the first login makes the app build its API description (1.9 MB), which it then keeps
        connecting = [threading.Thread(target=connect, args=(i,)) for i in range(1, len(sessions))]
        for thread in connecting:
            thread.start()
        for thread in connecting:
            thread.join()
        if not self.errors:
            deadline = time.monotonic() + seconds
            workers = [
                threading.Thread(target=self._vote, args=(clients[i], user, deadline))
                for i, (user, _) in enumerate(people)
            ]
            if self.generate:
                workers.append(threading.Thread(target=self._generate, args=(clients[-1], people[0][0], deadline)))
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        for session in clients:
            if session is not None:
                session.close()  # ends its heartbeat thread
        return self

    def stop(self) -> None:
        self._stop.set()

    def _failed(self, user: str, err: Exception) -> None:
        with self._lock:
            self.errors.append(f"{user}: {type(err).__name__}: {err}")

    def _vote(self, client, user: str, deadline: float) -> None:
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                start = time.monotonic()
                shown = client.predict(
                    user, self.queue, "", ONE_MODEL, 2, 0.9, BASE_VIEW, "", BASE_VIEW, "", api_name="/ranking_next"
                )
                shown_at = time.monotonic()
                said = client.predict("A", user, "", self.queue, ONE_MODEL, 1, 2, 1, 2, api_name="/ranking_vote")
                voted_at = time.monotonic()
            except Exception as err:  # noqa: BLE001 — every failure is counted and reported, none is expected
                self._failed(user, err)
                return
            ack = ACK.search(str(said))
            with self._lock:
                if ack:
                    self.acknowledged[int(ack.group(1))] = user
                    self.next_s.append(shown_at - start)
                    self.vote_s.append(voted_at - shown_at)
                else:
                    self.unserved.append(f"{user}: next said {shown!s:.300}; the vote said {said!s:.300}")
            if not ack:
                return  # the queue has nothing left for this person, or the app refused the vote and said why

    def _generate(self, client, user: str, deadline: float) -> None:
        n = 0
        while time.monotonic() < deadline and not self._stop.is_set():
            n += 1
            prompt = f"Write one sentence about load test request {n}."
            start = time.monotonic()
            try:
                client.predict(
                    user, TYPED_QUEUE, prompt, ONE_MODEL, 2, 0.9, BASE_VIEW, "", BASE_VIEW, "",
                    api_name="/ranking_generate",
                )  # fmt: skip
            except Exception as err:  # noqa: BLE001
                self._failed(f"{user} (generating)", err)
                return
            with self._lock:
                self.generation_s.append(time.monotonic() - start)


def client(url: str, login: tuple[str, str]):
    """A gradio_client session logged in as `login`. A connection fetches the app's whole configuration and API
    description (~2.5 MB): a room connecting at once takes seconds, past httpx's default 5 s timeout."""
    from gradio_client import Client

    return Client(
        url, auth=login, verbose=False, download_files=False, analytics_enabled=False, httpx_kwargs={"timeout": 120}
    )


def missing_votes(workspace: Path, acknowledged: dict[int, str]) -> list[int]:
    """The acknowledged votes that are not in the workspace's database under the login that cast them."""
    stored = {c.id: c.annotator for c in Store(workspace).list_comparisons()}
    return sorted(vote for vote, user in acknowledged.items() if stored.get(vote) != user)


def made_on_demand(workspace: Path, acknowledged: dict[int, str]) -> int:
    """How many acknowledged votes were on answers generated while the voter waited, not prepared ahead."""
    return sum(
        c.candidates[0]["model"] != PREPARED for c in Store(workspace).list_comparisons() if c.id in acknowledged
    )


def over_voted(workspace: Path, queue: str) -> int:
    """How many items of the queue got more votes than asked for (two people handed the same last slot)."""
    store = Store(workspace)
    counted = Counter(
        c.prompt[-1]["content"] for c in store.list_comparisons(source=queue_source(queue)) if c.verdict != "skipped"
    )
    return sum(votes > store.votes_per_item(queue) for votes in counted.values())


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def machine() -> str:
    """The CPU this ran on: model, cores, whether bf16 is native (avx512_bf16)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    return f"{name}, {os.cpu_count()} cores, avx512_bf16 {'yes' if 'avx512_bf16' in info else 'no'}"


def wait_for_model(url: str, login: tuple[str, str], timeout: float = 600) -> None:
    """Until the app's status bar says the model is loaded (the generating participant needs it)."""
    session = client(url, login)
    deadline = time.monotonic() + timeout
    while "Loaded" not in str(session.predict(api_name="/model_status")):
        if time.monotonic() > deadline:
            raise TimeoutError("the model did not load in time")
        time.sleep(1)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def spread(values: list[float]) -> str:
    p50, p95, top = (round(v * 1000) for v in (percentile(values, 50), percentile(values, 95), max(values)))
    return f"p50 {p50} ms  p95 {p95} ms  max {top} ms"


def report(storm: Storm, workspace: Path, seconds: float, load: tuple[float, ...], cpu: tuple[float, float]) -> str:
    missing = missing_votes(workspace, storm.acknowledged)
    votes = storm.vote_s
    lines = [
        f"machine: {machine()}",
        f"load average before: {load[0]:.2f}  after: {os.getloadavg()[0]:.2f} (1 min)",
        f"participants: {len(storm.logins)} voting for {seconds:.0f} s, one more session generating",
        f"errors: {len(storm.errors)}",
        *(f"  {e}" for e in storm.errors[:5]),
        f"votes acknowledged: {len(storm.acknowledged)}  in the database: "
        f"{len(storm.acknowledged) - len(missing)}  missing: {len(missing)}",
        f"items with more votes than asked: {over_voted(workspace, storm.queue)}",
        f"votes on answers made while the voter waited: {made_on_demand(workspace, storm.acknowledged)}",
        f"votes per second: {len(votes) / seconds:.1f}",
        f"CPU used while connecting and voting: the app {cpu[0]:.0f} s, these clients {cpu[1]:.0f} s (the voting alone"
        f" had {os.cpu_count() * seconds:.0f} core-seconds, shared with whatever else runs)",
    ]
    if votes:
        lines.append(f"time to record a vote: {spread(votes)}")
        lines.append(f"time to get the next item (prepared): {spread(storm.next_s)}")
    if storm.generation_s:
        lines.append(
            f"generations completed: {len(storm.generation_s)}  median {statistics.median(storm.generation_s):.1f} s"
        )
    else:
        lines.append("generations completed: 0")
    if storm.unserved:
        lines.append(f"participants who stopped early: {len(storm.unserved)} (first: {storm.unserved[0]})")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="what the app loads (default: the embedded model)")
    parser.add_argument("--items", type=int, default=600, help="questions with answers prepared ahead")
    parser.add_argument("--votes-per-item", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lab-load-") as tmp:
        folder = Path(tmp)
        logins = write_logins(folder / "logins", args.participants)
        queue = prepare_pool(folder / "workspace", args.items, args.model, args.votes_per_item)
        app = App(folder / "workspace", args.model, folder / "logins").start()
        try:
            wait_for_model(app.url, next(iter(logins.items())))
            load = os.getloadavg()
            storm = Storm(app.url, logins, queue)
            before = cpu_seconds(app.process.pid), own_cpu_seconds()
            storm.run(args.seconds)
            cpu = cpu_seconds(app.process.pid) - before[0], own_cpu_seconds() - before[1]
        finally:
            app.stop()
        print(report(storm, folder / "workspace", args.seconds, load, cpu))
        faults = missing_votes(folder / "workspace", storm.acknowledged) or over_voted(folder / "workspace", queue)
    return 1 if storm.errors or faults else 0


if __name__ == "__main__":
    sys.exit(main())
