"""Votes in the workspace, their export as TRL preference pairs, preference imports, and vote quality."""

import dataclasses
import json
import threading

import numpy as np
import pandas as pd
import pytest

from lab.arena import agreement, annotator_report, battles, leaderboard, position_bias, win_rates
from lab.data import DataFileError
from lab.preferences import export_preferences, import_preferences, preference_rows, ranked_pairs
from lab.store import Comparison, Store

PROMPT = [{"role": "user", "content": "Name a color."}]


def vote(texts, ranks, verdict="ranked", annotator="ann", shown=None, models=None, prompt=PROMPT) -> Comparison:
    models = models or ["m"] * len(texts)
    candidates = [{"text": t, "model": m, "settings": {"temperature": 0.7}} for t, m in zip(texts, models, strict=True)]
    return Comparison(prompt, candidates, shown or list(range(len(texts))), ranks, verdict, annotator)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path)


def test_k_way_ranking_gives_its_ordered_pairs_and_ties_give_none():
    assert ranked_pairs([1, 2]) == [(0, 1)]
    assert ranked_pairs([2, 1]) == [(1, 0)]
    assert sorted(ranked_pairs([3, 1, 2, 4])) == sorted([(1, 0), (2, 0), (0, 3), (1, 2), (1, 3), (2, 3)])  # 4·3/2
    assert sorted(ranked_pairs([1, 1, 2])) == [(0, 2), (1, 2)]  # the tie between 0 and 1 gives no pair
    assert ranked_pairs([1, 1]) == []


def test_votes_export_exactly_as_trl_preference_rows(store, tmp_path):
    store.add_comparison(vote(["red", "blue"], [2, 1]))  # B better
    store.add_comparison(vote(["green", "pink", "gray"], [1, 3, 2]))
    store.add_comparison(vote(["a", "b"], [1, 1], verdict="tie"))
    store.add_comparison(vote(["bad1", "bad2"], None, verdict="both-bad"))
    store.add_comparison(vote(["x", "y"], None, verdict="skipped"))
    rows = preference_rows(store.list_comparisons())
    simple = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows]
    assert simple == [("blue", "red"), ("green", "pink"), ("green", "gray"), ("gray", "pink")]
    assert rows[0]["prompt"] == PROMPT and rows[0]["chosen"][0]["role"] == "assistant"

    path = tmp_path / "prefs.jsonl"
    assert export_preferences(store, path) == 4
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    negatives = tmp_path / "negatives.jsonl"
    assert export_preferences(store, negatives, negatives=True) == 2
    assert {json.loads(line)["label"] for line in negatives.read_text().splitlines()} == {False}

    from datasets import load_dataset

    loaded = load_dataset("json", data_files=str(path), split="train")
    assert loaded.column_names == ["prompt", "chosen", "rejected"]


def test_undo_withdraws_only_the_annotators_last_vote(store):
    first = store.add_comparison(vote(["a", "b"], [1, 2], annotator="ann"))
    store.add_comparison(vote(["c", "d"], [1, 2], annotator="bob"))
    second = store.add_comparison(vote(["e", "f"], [2, 1], annotator="ann"))
    assert store.undo_last_comparison("ann").id == second
    assert [c.id for c in store.list_comparisons() if c.annotator == "ann"] == [first]
    assert store.undo_last_comparison("nobody") is None


def test_votes_survive_a_restart_and_bad_votes_are_refused(store):
    store.add_comparison(vote(["a", "b"], [1, 2], shown=[1, 0]))
    again = Store(store.root).list_comparisons()
    assert again[0].shown == [1, 0] and again[0].candidates[0]["settings"] == {"temperature": 0.7}
    with pytest.raises(ValueError, match="same rank"):
        store.add_comparison(vote(["a", "b"], [1, 2], verdict="tie"))
    with pytest.raises(ValueError, match="no ranks"):
        store.add_comparison(vote(["a", "b"], [1, 2], verdict="both-bad"))
    with pytest.raises(ValueError, match="empty"):
        store.add_comparison(vote(["a", " "], [1, 2]))


def test_eight_browsers_voting_at_once_lose_nothing(store):
    errors = []

    def annotator(n: int) -> None:
        try:
            tab = Store(store.root)
            for i in range(50):
                tab.add_comparison(vote([f"{n}-{i}-a", f"{n}-{i}-b"], [1, 2], annotator=f"rater{n}"))
        except Exception as err:  # collected so the assertion reports it
            errors.append(err)

    threads = [threading.Thread(target=annotator, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(store.list_comparisons()) == 400


def test_excluding_an_annotator_drops_their_votes_from_the_export(store, tmp_path):
    store.add_comparison(vote(["a", "b"], [1, 2], annotator="good"))
    store.add_comparison(vote(["c", "d"], [1, 2], annotator="spam"))
    assert export_preferences(store, tmp_path / "p.jsonl", exclude_annotators=("spam",)) == 1


def make_items(n: int = 30) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Question {i}?"}] for i in range(n)]


def test_a_random_annotator_is_flagged_and_an_agreeing_one_is_not():
    rng = np.random.default_rng(0)
    comparisons = []
    for i, prompt in enumerate(make_items()):
        truth = i % 2  # which of the two answers is better
        for name in ("ann", "bob", "cat", "dan", "rnd"):
            better = int(rng.integers(0, 2)) if name == "rnd" else truth
            if name == "dan" and i % 10 == 0:
                better = 1 - truth  # an honest rater who sometimes disagrees
            ranks = [1, 2] if better == 0 else [2, 1]
            comparisons.append(vote([f"good {i}", f"other {i}"], ranks, annotator=name, prompt=prompt))
    report = annotator_report(comparisons).set_index("annotator")
    assert bool(report.loc["rnd", "flagged"]) is True
    assert not report.drop("rnd")["flagged"].any()
    assert report.loc["ann", "agreement with majority"] == 1.0
    stats = agreement(comparisons)
    assert stats["items"] == 30 and 0.5 < stats["percent"] < 1.0
    assert stats["cohen"][("ann", "bob")] == 1.0 and stats["cohen"][("ann", "rnd")] < 0.5
    assert 0.3 < stats["fleiss"] < 0.95


def test_position_bias_counts_the_first_shown_answer():
    comparisons = [vote(["a", "b"], [1, 2], shown=[0, 1]) for _ in range(3)]
    comparisons.append(vote(["a", "b"], [1, 2], shown=[1, 0]))  # 'a' won but was shown second
    bias = position_bias(comparisons)
    assert (bias["decisive"], bias["first_wins"], bias["rate"], bias["chance"]) == (4, 3, 0.75, 0.5)


def test_leaderboard_recovers_a_known_order():
    rng = np.random.default_rng(1)
    strength = {"strong": 2.0, "good": 1.0, "fair": 0.0, "weak": -1.0}
    comparisons = []
    for _ in range(300):
        a, b = rng.choice(list(strength), 2, replace=False)
        p_a = 1 / (1 + np.exp(strength[b] - strength[a]))
        ranks = [1, 2] if rng.random() < p_a else [2, 1]
        comparisons.append(vote(["x", "y"], ranks, models=[a, b]))
    frame = battles(comparisons)
    board = leaderboard(frame, rounds=50)
    assert list(board["model"]) == ["strong", "good", "fair", "weak"]
    assert (board["low"] <= board["score"]).all() and (board["score"] <= board["high"]).all()
    rates = win_rates(frame).set_index("model")
    assert rates.loc["strong", "weak"] > 0.85 and rates.loc["weak", "strong"] < 0.15


def test_same_model_pairs_are_not_battles():
    assert battles([vote(["a", "b"], [1, 2], models=["m", "m"])]).empty


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}], [("Hello!", "Go away.")]),
        (
            [
                {
                    "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}],
                    "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "No."}],
                }
            ],
            [("Hello!", "No.")],
        ),
        (
            [
                {
                    "prompt": "Hi?",
                    "responses": [
                        {"text": "meh", "score": 2},
                        {"text": "great", "score": 9},
                        {"text": "bad", "score": 1},
                    ],
                }
            ],
            [("great", "meh"), ("meh", "bad"), ("great", "bad")],
        ),
    ],
)
def test_the_usual_preference_shapes_import(store, tmp_path, rows, expected):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = import_preferences(store, path)
    assert len(result.ids) == 1
    pairs = [
        (r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in preference_rows(store.list_comparisons())
    ]
    assert sorted(pairs) == sorted(expected)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "", "rejected": "b"}],
            "line 2: 'chosen' is empty",
        ),
        (
            [
                {
                    "chosen": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a"}],
                    "rejected": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}],
                }
            ],
            "line 1: chosen and rejected do not share",
        ),
        (
            [{"prompt": "q", "responses": [{"text": "a", "score": "high"}, {"text": "b", "score": 1}]}],
            "line 1: each response needs a text and a numeric score",
        ),
        ([{"question": "q", "answer": "a"}], "Unknown format"),
    ],
)
def test_a_bad_preference_file_names_the_problem_and_imports_nothing(store, tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataFileError, match=message):
        import_preferences(store, path)
    assert store.list_comparisons() == []


def test_leaderboard_of_nothing_is_empty():
    assert leaderboard(pd.DataFrame(columns=["model_a", "model_b", "winner"])).empty


def test_undo_never_touches_imported_votes_or_anonymous_ones(store):
    imported = vote(["a", "b"], [1, 2], annotator="ann")
    imported.source = "import:file.jsonl"
    store.add_comparison(imported)
    assert store.undo_last_comparison("ann") is None
    assert store.undo_last_comparison("  ") is None
    assert len(store.list_comparisons()) == 1


def test_a_prompt_with_a_broken_message_is_refused_before_it_is_stored(store, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps({"prompt": [{"role": "user", "content": None}], "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(DataFileError, match="line 1: .*content must be text"):
        import_preferences(store, path)
    assert store.list_comparisons() == []


@pytest.mark.parametrize(
    ("choice", "shown", "positions", "expected"),
    [
        ("A", [1, 0], [], ([2, 1], "ranked")),  # the left answer was candidate 1
        ("B", [1, 0], [], ([1, 2], "ranked")),
        ("tie", [0, 1], [], ([1, 1], "tie")),
        ("both-bad", [0, 1], [], (None, "both-bad")),
        ("skipped", [0, 1], [], (None, "skipped")),
        ("ranking", [2, 0, 1], [1, 3, 2], ([3, 2, 1], "ranked")),  # shown left to right: c2, c0, c1
        ("ranking", [2, 0, 1], [1, 1, 1], ([1, 1, 1], "tie")),
    ],
)
def test_a_voters_choice_becomes_ranks_of_the_candidates(choice, shown, positions, expected):
    from lab.preferences import vote_ranks

    assert vote_ranks(choice, shown, positions) == expected


def test_a_pair_vote_on_three_answers_asks_for_a_ranking():
    from lab.preferences import vote_ranks

    with pytest.raises(ValueError, match="give each a rank"):
        vote_ranks("A", [0, 1, 2])


# ranking queues


def test_a_queue_holds_its_scenarios_questions_the_workspace_prompts_or_none(store):
    from lab.preferences import POOL_QUEUE, TYPED_QUEUE, queue_questions
    from lab.presets import scenario_presets
    from lab.store import Prompt

    scenarios = scenario_presets()
    name = next(iter(scenarios))
    assert queue_questions(store, scenarios, TYPED_QUEUE) == []
    assert queue_questions(store, scenarios, POOL_QUEUE) == []
    store.add_prompts([Prompt("Is the sky green?", "open QA", [], "typed")])
    assert queue_questions(store, scenarios, POOL_QUEUE) == ["Is the sky green?"]
    assert len(queue_questions(store, scenarios, name)) > 2


def test_queue_status_counts_this_annotators_votes_and_names_the_next_question(store):
    from lab.preferences import POOL_QUEUE, TYPED_QUEUE, queue_source, queue_status
    from lab.store import Prompt

    store.add_prompts([Prompt(q, "open QA", [], "typed") for q in ("One?", "Two?")])
    status = queue_status(store, {}, POOL_QUEUE, "ann")
    assert (status.done, status.total, status.upcoming) == (0, 2, "One?")
    assert status.text == f"**0 of 2 done** in '{POOL_QUEUE}' by ann"

    def on(question: str, annotator: str, source: str = queue_source(POOL_QUEUE)) -> Comparison:
        asked = vote(["a", "b"], [1, 2], annotator=annotator, prompt=[{"role": "user", "content": question}])
        return dataclasses.replace(asked, source=source)

    store.add_comparisons([on("One?", "ann"), on("Two?", "bea"), on("Two?", "ann", source="typed")])
    status = queue_status(store, {}, POOL_QUEUE, "ann")
    assert (status.done, status.upcoming) == (1, "Two?")  # bea's vote, and a typed one, count for nobody else

    store.add_comparison(on("Two?", "ann"))
    done = queue_status(store, {}, POOL_QUEUE, "ann")
    assert (done.done, done.upcoming) == (2, None)
    assert queue_status(store, {}, TYPED_QUEUE, "ann").text == ""


def test_a_queue_done_on_samples_of_one_model_can_be_ranked_again_between_models(store):
    from lab.preferences import POOL_QUEUE, queue_source, queue_status
    from lab.store import Prompt

    store.add_prompts([Prompt(q, "open QA", [], "typed") for q in ("One?", "Two?")])
    for question in ("One?", "Two?"):
        asked = vote(["a", "b"], [1, 2], prompt=[{"role": "user", "content": question}], models=["base", "base"])
        store.add_comparison(dataclasses.replace(asked, source=queue_source(POOL_QUEUE)))
    samples = queue_status(store, {}, POOL_QUEUE, "ann", between_models=False)
    assert (samples.done, samples.upcoming) == (2, None)
    assert samples.text == f"**2 of 2 done** on samples of one model in '{POOL_QUEUE}' by ann"
    models = queue_status(store, {}, POOL_QUEUE, "ann", between_models=True)
    assert (models.done, models.upcoming) == (0, "One?")
    assert queue_status(store, {}, POOL_QUEUE, "ann").done == 2  # without a mode every vote counts


def test_two_identical_sides_are_refused_since_they_never_reach_the_leaderboard():
    from lab.preferences import Side, check_sides

    with pytest.raises(ValueError, match="Model A and model B are the same"):
        check_sides([Side("base"), Side("base", " ")])
    check_sides([Side("base"), Side("base", "Answer truthfully.")])


def test_candidates_stream_from_one_batch_and_say_what_is_happening(store, tiny_model_dir):
    from lab.generate import GenerationSettings
    from lab.models import ModelManager
    from lab.preferences import Side
    from lab.room import Room

    models = ModelManager()
    models.load(str(tiny_model_dir), "fp32", "cpu")
    room = Room(store, models)
    settings = GenerationSettings(temperature=0.9, top_p=0.95, max_new_tokens=4, seed=0)
    steps = list(room.answers("ann", "Name a color.", [Side("base"), Side("base", "Be brief.")], 2, settings))
    assert steps[0] == "Writing 2 answers…" and all(isinstance(s, list) for s in steps[1:])
    assert [c["model"] for c in steps[-1]] == ["base", "base + system prompt"]
    assert sum(len(c["text"]) for c in steps[1]) <= sum(len(c["text"]) for c in steps[-1])  # the answers grow
    batch = list(room.answers("ann", "Name a color.", [Side("base")], 3, settings))
    assert [c["model"] for c in batch[-1]] == ["base"] * 3
    assert room.turns.ahead(room.turns.join("bea")) == 0  # every turn taken was given back


# the Ranking tab's handlers, without a browser


def test_a_queue_ranked_on_samples_is_ranked_again_between_two_models(store, tiny_model_dir):
    from lab import Lab
    from lab.models import ModelManager
    from lab.store import Prompt
    from ui.ranking import ONE_MODEL, POOL, TWO_SIDES, Screen, cast_vote, next_task

    ctx = Lab(store)
    ctx.models = ModelManager()
    ctx.models.load(str(tiny_model_dir), "fp32", "cpu")
    store.add_prompts([Prompt("One?", "open QA", [], "typed")])
    names = [f.name for f in dataclasses.fields(Screen) if f.name not in ("panes", "rank_boxes", "pair_votes")]
    screen = Screen(
        **{name: object() for name in names},
        panes=[object() for _ in range(4)],
        rank_boxes=[object() for _ in range(4)],
        pair_votes=[object(), object()],
    )

    def ask(mode: str, system_b: str = "") -> list[dict]:
        return list(next_task(ctx, screen, "ann", POOL, "", mode, 2, 0.9, "base", "", "base", system_b, use_queue=True))

    nameless = list(next_task(ctx, screen, " ", POOL, "", ONE_MODEL, 2, 0.9, "base", "", "base", "", use_queue=True))
    assert nameless == [{screen.note: "**Type your name first:** votes are counted per person."}]

    steps = ask(ONE_MODEL)
    assert steps[0][screen.note] == "Writing 2 answers…" and steps[-1][screen.note] == ""
    cast_vote(ctx, screen, steps[-1][screen.task], "ann", "", POOL, ONE_MODEL, choice="A")
    [done] = ask(ONE_MODEL)
    assert "You have voted on every item" in done[screen.note]

    assert "the same" in ask(TWO_SIDES)[-1][screen.note]  # base against base would never reach the leaderboard
    steps = ask(TWO_SIDES, "Answer briefly.")
    assert steps[0][screen.note] == "Writing 2 answers…" and steps[-1][screen.note] == ""
    # the vote on samples does not fill the item for a vote between models
    assert (
        steps[-1][screen.progress]
        == f"**0 of 1 done** between models in '{POOL}' by ann · 0 of 1 items have their 1 vote"
    )
    voted = cast_vote(ctx, screen, steps[-1][screen.task], "ann", "", POOL, TWO_SIDES, choice="B")
    assert (
        voted[screen.progress] == f"**1 of 1 done** between models in '{POOL}' by ann · 1 of 1 items have their 1 vote"
    )
