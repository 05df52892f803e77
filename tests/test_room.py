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
from lab.room import Turns, coverage, next_item, ready_candidates, room_of, roster
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
    with pytest.raises(ValueError, match="has its 1 vote"):
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

    room = room_of(lab)
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


def _screen():
    import dataclasses

    from ui.ranking import Screen

    lists = {"panes": 4, "rank_boxes": 4, "pair_votes": 2}
    fields = [f.name for f in dataclasses.fields(Screen)]
    return Screen(**{n: [object() for _ in range(lists[n])] if n in lists else object() for n in fields})
