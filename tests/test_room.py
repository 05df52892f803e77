"""A workshop room: people under their logins, different items to different people until each has its votes,
answers made ahead or streamed, turns at the model, and votes that never wait behind a generation."""

import threading
import time
from collections import Counter

import gradio as gr
import pytest
from conftest import wait_for

from lab import Lab
from lab.generate import GenerationSettings
from lab.preferences import POOL_QUEUE, queue_source
from lab.room import Turns, coverage, next_item, ready_candidates, roster
from lab.store import Comparison, Demonstration, Prompt, Store
from ui.room import signed

QUESTIONS = [f"Question {n}?" for n in range(12)]
SETTINGS = GenerationSettings(temperature=0.9, top_p=0.95, max_new_tokens=8)


def vote(store: Store, queue: str, question: str, who: str, verdict: str = "ranked") -> None:
    candidates = [{"text": "yes", "model": "base"}, {"text": "no", "model": "base"}]
    ranks = [1, 2] if verdict == "ranked" else None
    prompt = [{"role": "user", "content": question}]
    store.add_comparison(Comparison(prompt, candidates, [0, 1], ranks, verdict, who, "", queue_source(queue)))
    store.release(queue, who)


def test_people_voting_at_once_give_every_item_exactly_the_votes_asked_for(tmp_path):
    store = Store(tmp_path / "ws")
    people = [f"p{n}" for n in range(6)]
    handed: dict[str, list[str]] = {who: [] for who in people}
    start = threading.Barrier(len(people))

    def annotate(who: str) -> None:
        start.wait()  # all ask for their first item together
        while True:
            try:
                question = next_item(store, POOL_QUEUE, QUESTIONS, who, votes_per_item=3)
            except ValueError as err:
                if "others right now" in str(err):
                    time.sleep(0.01)
                    continue
                return
            handed[who].append(question)
            vote(store, POOL_QUEUE, question, who)

    threads = [threading.Thread(target=annotate, args=(who,)) for who in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    votes = Counter(c.prompt[-1]["content"] for c in store.list_comparisons())
    assert votes == {q: 3 for q in QUESTIONS}  # none over- or under-served
    assert all(len(items) == len(set(items)) for items in handed.values())  # nobody got an item twice
    assert coverage(store, POOL_QUEUE, QUESTIONS, 3) == (12, 12)
    assert sum(len(items) > 0 for items in handed.values()) >= 2  # the work was shared


def test_two_people_asking_together_get_different_items_and_an_abandoned_item_comes_back(tmp_path):
    store = Store(tmp_path / "ws")
    first = next_item(store, POOL_QUEUE, QUESTIONS[:2], "ann", 1)
    second = next_item(store, POOL_QUEUE, QUESTIONS[:2], "bea", 1)
    assert {first, second} == set(QUESTIONS[:2])
    with pytest.raises(ValueError, match="being voted on by others right now"):
        next_item(store, POOL_QUEUE, QUESTIONS[:2], "cy", 1)
    vote(store, POOL_QUEUE, first, "ann", verdict="skipped")  # a skip is not a vote: the item is still open
    assert next_item(store, POOL_QUEUE, QUESTIONS[:2], "cy", 1, hold_s=0.0) == first
    assert next_item(store, POOL_QUEUE, QUESTIONS[:2], "dan", 1) == first  # cy's hold ran out: nobody holds it
    with pytest.raises(ValueError, match="being voted on by others"):  # ann skipped it: never handed to her again
        next_item(store, POOL_QUEUE, QUESTIONS[:2], "ann", 1)
    vote(store, POOL_QUEUE, first, "dan")
    vote(store, POOL_QUEUE, second, "bea")
    with pytest.raises(ValueError, match="voted on every item .* gets 1 vote"):
        next_item(store, POOL_QUEUE, QUESTIONS[:2], "cy", 1)


def test_turns_go_round_the_people_and_background_work_waits_for_them():
    turns = Turns()
    now = turns.join("ann")
    background = turns.join("worker", background=True)
    again = turns.join("ann")
    bea = turns.join("bea")
    assert now.granted and turns.ahead(bea) == 1 and turns.ahead(background) == 3
    turns.leave(now)
    assert bea.granted  # ann was served last: bea goes before ann's second request
    turns.leave(bea)
    assert again.granted and not background.granted
    turns.leave(again)
    assert background.granted and not turns.people_waiting()


def test_the_model_says_when_a_request_waits_for_it_so_work_ahead_can_step_aside(tiny_model_dir):
    import threading

    from lab.models import ModelManager

    models = ModelManager()
    models.load(str(tiny_model_dir), "fp32", "cpu")
    got = threading.Event()

    def chat() -> None:
        with models.use():
            got.set()

    with models.use_many(["base"]):  # answers being made ahead hold the model
        assert not models.asked_for()
        asking = threading.Thread(target=chat)
        asking.start()
        wait_for(models.asked_for, timeout=10, what="the chat request counted")
        assert not got.is_set()
    asking.join(10)
    assert got.is_set() and not models.asked_for()


def test_a_login_signs_the_vote_whatever_name_is_sent(tmp_path):
    from ui.ranking import cast_vote

    lab = Lab(tmp_path / "ws")
    outcome = object()
    screen = type("Screen", (), {"task": object(), "outcome": outcome, "progress": object(), "reason": object()})
    task = {
        "prompt": [{"role": "user", "content": "Hi?"}],
        "candidates": [{"text": "a", "model": "base"}, {"text": "b", "model": "base"}],
        "shown": [1, 0],
        "source": "typed",
    }
    handler = signed(cast_vote, lab, screen, choice="A")
    handler(gr.Request(username="ann"), task, "bea", "", POOL_QUEUE, "one model", 1, 2, 3, 4)
    handler(gr.Request(), task, "bea", "", POOL_QUEUE, "one model", 1, 2, 3, 4)  # no logins: the typed name
    assert [c.annotator for c in lab.store.list_comparisons()] == ["ann", "bea"]


def test_the_room_counts_each_persons_votes_and_demonstrations(tmp_path):
    store = Store(tmp_path / "ws")
    for question in QUESTIONS[:3]:
        vote(store, POOL_QUEUE, question, "ann")
    vote(store, POOL_QUEUE, QUESTIONS[3], "bea", verdict="skipped")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    store.add_demonstrations([Demonstration(messages, author="cy")])
    people = roster(store).set_index("person")
    assert people.loc["ann", "votes"] == 3 and people.loc["bea", "skipped"] == 1 and people.loc["bea", "votes"] == 0
    assert people.loc["cy", "demonstrations"] == 1 and not people["flagged"].any()


@pytest.fixture
def lab(tmp_path, tiny_model_dir):
    lab = Lab(tmp_path / "ws")
    lab.load(str(tiny_model_dir), "fp32", "cpu")
    yield lab
    lab.close()


def test_the_background_worker_prepares_a_queue_and_next_shows_those_answers_without_generating(lab):
    from ui.ranking import next_task

    room = lab.room
    progress = room.prepare(POOL_QUEUE, QUESTIONS[:3], 2, SETTINGS)
    wait_for(lambda: progress.done == 3 or progress.problem, timeout=120, what="three items prepared")
    assert progress.text == "3 items prepared: their answers are ready." and not progress.problem
    base = lab.models.loaded.base
    made = lab.store.prepared(POOL_QUEUE, base)
    assert set(made) == set(QUESTIONS[:3]) and all(len(c) == 2 for c in made.values())
    assert ready_candidates(lab.store, POOL_QUEUE, QUESTIONS[0], 2, base) == made[QUESTIONS[0]]

    lab.store.add_prepared(POOL_QUEUE, QUESTIONS[0], base, [{"text": t, "model": "base"} for t in ("one", "two")])
    lab.store.add_prompts([Prompt(q) for q in QUESTIONS[:1]])  # the pool queue holds the first question only
    screen = _screen()
    held = room.turns.join("someone else")  # the model is busy: answers that had to be made would wait
    try:
        steps = list(
            next_task(
                lab,
                screen,
                "ann",
                POOL_QUEUE,
                "",
                "one model, different samples",
                2,
                0.9,
                "base",
                "",
                "base",
                "",
                8,
                use_queue=True,
            )
        )
    finally:
        room.turns.leave(held)
    task = steps[-1][screen.task]
    assert sorted(c["text"] for c in task["candidates"]) == ["one", "two"]


def test_closing_the_lab_stops_the_answers_being_made_ahead_and_keeps_those_made(lab):
    import threading

    base = lab.models.loaded.base
    progress = lab.room.prepare(POOL_QUEUE, QUESTIONS, 2, SETTINGS)
    wait_for(lambda: progress.done >= 1, timeout=120, what="one item prepared")
    lab.close()
    assert not any(t.name == "prepare-candidates" for t in threading.enumerate())
    assert 1 <= len(lab.store.prepared(POOL_QUEUE, base)) < len(QUESTIONS)


def _screen():
    import dataclasses

    from ui.ranking import Screen

    lists = {"panes": 4, "rank_boxes": 4, "pair_votes": 2}
    fields = [f.name for f in dataclasses.fields(Screen)]
    return Screen(**{n: [object() for _ in range(lists[n])] if n in lists else object() for n in fields})


def test_a_scenarios_shipped_answers_are_used_when_the_base_model_made_them(tmp_path, monkeypatch):
    import json

    import lab.scenarios

    monkeypatch.setattr(lab.scenarios, "CANDIDATES_DIR", tmp_path)
    row = {
        "question": "Is the sea salty?",
        "model": "some/base",
        "settings": {"temperature": 0.9},
        "answers": ["Y", "N"],
    }
    (tmp_path / "truthfulness.jsonl").write_text(json.dumps(row) + "\n")
    store = Store(tmp_path / "ws")
    shipped = ready_candidates(store, "Truthfulness", "Is the sea  salty?", 2, "some/base")
    assert [c["text"] for c in shipped] == ["Y", "N"]
    assert ready_candidates(store, "Truthfulness", "Is the sea salty?", 2, "another/base") is None  # not its answers
    assert ready_candidates(store, "Truthfulness", "Is the sea salty?", 3, "some/base") is None  # three asked for


def test_shipped_answers_show_while_the_model_that_made_them_is_still_loading(tmp_path):
    from lab.refs import DEFAULT_MODEL, normalise_base
    from lab.scenarios import shipped_candidates
    from ui.ranking import ONE_MODEL, next_task

    lab = Lab.from_scenario("truthfulness", workspace=tmp_path / "ws")
    lab.models.loading, lab.models._coming = True, normalise_base(DEFAULT_MODEL)  # mid-load, as at the app's start
    screen = _screen()
    try:
        steps = list(
            next_task(lab, screen, "ann", "Truthfulness", "", ONE_MODEL, 2, 0.9, "base", "", "base", "", use_queue=True)
        )
    finally:
        lab.models.loading = False
        lab.close()
    task = steps[-1][screen.task]
    question = task["prompt"][-1]["content"]
    assert task["candidates"] == shipped_candidates("Truthfulness", question) and len(steps) == 1


def test_answers_made_on_demand_stream_into_both_panes_together(lab):
    from ui.ranking import TYPED, next_task

    screen = _screen()
    steps = list(
        next_task(
            lab,
            screen,
            "ann",
            TYPED,
            "Tell me a story.",
            "one model, different samples",
            2,
            0.9,
            "base",
            "",
            "base",
            "",
            24,
            use_queue=False,
        )
    )
    grown = [
        (step[screen.panes[0]]["value"], step[screen.panes[1]]["value"])
        for step in steps[:-1]
        if screen.panes[0] in step
    ]
    assert len(grown) >= 3, "the answers should appear token by token"
    for pane in (0, 1):  # each pane only grows, and both grow together
        texts = [step[pane] for step in grown]
        assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:], strict=False))
        assert len(texts[len(texts) // 2]) > len("**A**\n\n")
    task = steps[-1][screen.task]
    final = [f"**{letter}**\n\n{task['candidates'][c]['text']}" for letter, c in zip("AB", task["shown"], strict=True)]
    assert list(grown[-1]) == final  # the order drawn before streaming is the order voted on


def test_over_http_a_vote_is_signed_by_the_login_and_never_waits_behind_a_generation(lab):
    from browser import free_port
    from gradio_client import Client

    from ui.app import build_app

    lab.store.add_prompts([Prompt(q) for q in QUESTIONS[:2]])
    base = lab.models.loaded.base
    lab.store.add_prepared(POOL_QUEUE, QUESTIONS[0], base, [{"text": t, "model": "base"} for t in ("one", "two")])
    app = build_app(lab)
    port = free_port()
    app.queue(default_concurrency_limit=4).launch(
        server_port=port, prevent_thread_lock=True, auth=[("ann", "pw"), ("bea", "pw")], quiet=True
    )
    url = f"http://127.0.0.1:{port}/"
    setup = (POOL_QUEUE, "", "one model, different samples", 2, 0.9, "base", "", "base", "", 64)
    try:
        ann, bea = Client(url, auth=("ann", "pw"), verbose=False), Client(url, auth=("bea", "pw"), verbose=False)
        shown = ann.predict("pretending to be bea", *setup, api_name="/ranking_next")
        assert shown[0] == QUESTIONS[0]  # the prepared item, at once
        room = lab.room
        busy = room.turns.join("the instructor")  # the model is busy until the test says so
        try:
            waiting = bea.submit("bea", *setup, api_name="/ranking_next")  # the second item has no answers yet
            wait_for(lambda: room.turns.people_waiting(), timeout=30, what="bea's request to wait its turn")
            outcome, _, _ = ann.predict(
                "A", "pretending to be bea", "", POOL_QUEUE, setup[2], 1, 2, None, None, api_name="/ranking_vote"
            )
            assert "Saved (vote #" in outcome and not waiting.done()  # the vote did not wait for the generation
            assert [c.annotator for c in lab.store.list_comparisons()] == ["ann"]
            wait_for(
                lambda: any("waiting for another's answers" in str(update) for update in waiting.outputs()),
                timeout=30,
                what="bea to be told she waits for another's answers",
            )
        finally:
            room.turns.leave(busy)
        assert waiting.result(timeout=120)[0] == QUESTIONS[1]
    finally:
        app.close()


def test_the_arena_says_why_there_is_no_leaderboard_after_votes_on_samples_of_one_model(tmp_path):
    from ui.arena import ArenaView, show_arena
    from ui.room import room_view

    lab = Lab(tmp_path / "ws")
    names = [f for f in ArenaView.__dataclass_fields__ if f != "downloads"]
    view = ArenaView(**{name: object() for name in names}, downloads={False: object(), True: object()})
    assert "No votes yet" in show_arena(lab, view)[view.board_note]
    assert "Nobody has voted" in room_view(lab)[0]
    for who in ("ann", "bea"):
        vote(lab.store, POOL_QUEUE, QUESTIONS[0], who)
    shown = show_arena(lab, view)
    assert "compare samples of one model" in shown[view.board_note] and "two model references" in shown[view.board_note]
    assert shown[view.board]["visible"] is False and shown[view.rates]["visible"] is False  # no table headed 1, 2, 3
    line, people = room_view(lab)
    assert "**2 people**, 2 votes" in line and "agreement 100% on 1 items" in line
    assert people["person"].tolist() == ["ann", "bea"]
