"""Sorting the Ranking tab's answers by a reward model: best-first, each with its reward, and the vote records the
order shown, so the candidates' ranks and the position-bias counts stay right."""

import dataclasses

import pytest

from lab import Lab
from lab.arena import position_bias
from lab.preferences import order_by_reward, vote_ranks
from ui.ranking import ONE_MODEL, TYPED, Screen, cast_vote, sort_by_reward
from ui.reward_models import NO_REWARD


@pytest.mark.parametrize(
    ("shown", "rewards", "expected"),
    [
        ([0, 1], [0.1, 0.9], [1, 0]),
        ([2, 0, 1], [0.5, -1.0, 2.0], [2, 0, 1]),
        ([3, 1, 0, 2], [0.0, 3.0, -2.0, 1.0], [1, 3, 0, 2]),
        ([1, 0, 2], [1.0, 1.0, 0.0], [1, 0, 2]),  # a tie keeps its current positions
    ],
)
def test_the_shown_order_is_sorted_best_first_by_reward(shown, rewards, expected):
    assert order_by_reward(shown, rewards) == expected
    assert order_by_reward(expected, rewards) == expected  # sorting again changes nothing


def test_rewards_for_other_candidates_are_refused():
    with pytest.raises(ValueError, match="2 answers shown but 3 rewards"):
        order_by_reward([1, 0], [0.0, 1.0, 2.0])


def test_a_vote_after_sorting_ranks_the_candidates_it_names():
    shown = order_by_reward([0, 1, 2], [0.2, 0.9, -0.5])  # candidate 1 is now A, 0 is B, 2 is C
    assert shown == [1, 0, 2]
    ranks, verdict = vote_ranks("ranking", shown, [3, 1, 2])  # the voter disagrees: B best, A last
    assert (ranks, verdict) == ([1, 3, 2], "ranked")
    assert vote_ranks("A", [1, 0])[0] == [2, 1]


@pytest.fixture
def screen() -> Screen:
    lists = {"panes": 4, "rank_boxes": 4, "pair_votes": 2}
    fields = [f.name for f in dataclasses.fields(Screen)]
    return Screen(**{n: [object() for _ in range(lists[n])] if n in lists else object() for n in fields})


def test_sorting_by_the_reward_model_shows_the_marked_answer_first_and_the_vote_records_that_order(trained, screen):
    store, run = trained
    ctx = Lab(store)
    plain, marked = "It is nice.", "banana! It is nice."
    task = {
        "prompt": [{"role": "user", "content": "Tell me about the sea, please (7)."}],
        "candidates": [{"text": plain, "model": "base"}, {"text": marked, "model": "base"}],
        "shown": [0, 1],
        "source": "typed",
    }
    sorted_view = sort_by_reward(ctx, screen, task, run.id)
    sorted_task = sorted_view[screen.task]
    assert sorted_task["shown"] == [1, 0]  # the run learned to prefer the marker
    rewards = sorted_task["rewards"]
    assert rewards[1] > rewards[0]
    assert sorted_view[screen.panes[0]] == f"**A** · reward {rewards[1]:+.2f}\n\n{marked}"
    assert sorted_view[screen.panes[1]] == f"**B** · reward {rewards[0]:+.2f}\n\n{plain}"
    assert [sorted_view[box] for box in screen.rank_boxes[:2]] == [1, 2]
    assert task["shown"] == [0, 1]  # the state is replaced, never changed in place

    voted = cast_vote(ctx, screen, sorted_task, "ann", "", TYPED, ONE_MODEL, choice="B")  # B is now the plain answer
    assert "A was **base**" in voted[screen.outcome]
    [stored] = store.list_comparisons()
    assert stored.shown == [1, 0]
    assert stored.ranks == [1, 2]  # the plain answer (candidate 0) won, whatever position it had
    assert position_bias([stored]) | {"chance": None} == {"decisive": 1, "first_wins": 0, "rate": 0.0, "chance": None}


def test_sorting_says_in_one_sentence_why_it_cannot(trained, screen):
    store, run = trained
    ctx = Lab(store)
    task = {
        "prompt": [{"role": "user", "content": "Hi"}],
        "candidates": [{"text": "Hello", "model": "base"}, {"text": "banana " * 300, "model": "base"}],
        "shown": [1, 0],
        "source": "typed",
    }
    note = screen.reward_note
    assert sort_by_reward(ctx, screen, task, NO_REWARD) == {note: "**Pick a reward model first.**"}
    assert sort_by_reward(ctx, screen, None, run.id) == {
        note: "**Press Next prompt first:** there are no answers to sort yet."
    }
    too_long = sort_by_reward(ctx, screen, task, run.id)
    assert list(too_long) == [note] and "Response 2 is" in too_long[note] and "the model reads" in too_long[note]
    assert "no trained reward model" in sort_by_reward(ctx, screen, task, "no-such-run")[note]
