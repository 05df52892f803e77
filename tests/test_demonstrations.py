"""Demonstrations: search, the rules of saving one, and distillation from a teacher on the tiny model."""

import pytest

from lab.demonstrations import save_demonstration
from lab.distill import Teacher, distill, teacher_messages
from lab.generate import GenerationSettings
from lab.models import ModelManager
from lab.store import Demonstration, Prompt, Store

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path)


def test_same_conversation_is_found_whatever_its_spacing(store):
    [first] = store.add_demonstrations([Demonstration(HI)])
    spaced = [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "Hello!\n"}]
    assert store.find_duplicate(spaced) == first
    assert store.find_duplicate(spaced, exclude=first) is None


def test_delete_is_undoable(store):
    ids = store.add_demonstrations(
        [Demonstration(HI), Demonstration([*HI[:1], {"role": "assistant", "content": "Yo"}])]
    )
    store.delete_demonstrations(ids[:1])
    assert [d.id for d in store.list_demonstrations()] == ids[1:]
    assert store.find_duplicate(HI) is None  # a deleted row is not a duplicate
    store.restore_demonstrations(ids[:1])
    assert sorted(d.id for d in store.list_demonstrations()) == ids


def test_a_bad_row_in_a_batch_writes_nothing(store):
    bad = Demonstration([{"role": "user", "content": "only a question"}])
    with pytest.raises(ValueError, match="demonstration 2: the conversation must end with the assistant"):
        store.add_demonstrations([Demonstration(HI), bad])
    assert store.list_demonstrations(status=None) == []


def test_draft_and_origin_are_kept_through_an_edit(store):
    [demo_id] = store.add_demonstrations([Demonstration(HI, origin="model-edited", draft="Hello there, friend!")])
    demo = store.get_demonstration(demo_id)
    demo.messages[-1]["content"] = "Hello! How can I help?"
    store.update_demonstration(demo)
    again = store.get_demonstration(demo_id)
    assert (again.origin, again.draft, again.messages[-1]["content"]) == (
        "model-edited",
        "Hello there, friend!",
        "Hello! How can I help?",
    )


def test_teacher_prompt_has_system_examples_then_the_question():
    examples = [
        Demonstration(HI),
        Demonstration([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]),
    ]
    messages = teacher_messages(Teacher(system="Be exact.", few_shot=1), examples, "Capital of Peru?")
    assert messages == [
        {"role": "system", "content": "Be exact."},
        *HI,
        {"role": "user", "content": "Capital of Peru?"},
    ]


def test_distilled_answers_wait_for_review_and_keep_their_origin(store, tiny_model_dir):
    models = ModelManager()
    models.load(str(tiny_model_dir), "fp32", "cpu")
    store.add_demonstrations([Demonstration(HI)])
    prompts = [Prompt("Why is the sky blue?", "open QA"), Prompt("Name a fruit.", "brainstorming", ["food"])]
    steps = list(distill(store, models, Teacher(), prompts, GenerationSettings(temperature=0, max_new_tokens=8)))
    assert [s.done for s in steps] == [1, 2]
    pending = store.list_demonstrations(status="pending")
    assert len(pending) == 2 and {d.origin for d in pending} == {"teacher"}
    assert all(d.draft == d.messages[-1]["content"] and "examples" in d.teacher for d in pending)
    assert store.list_demonstrations(origins=["teacher"]) == []  # not trainable until accepted
    store.set_demonstration_status([pending[0].id], "accepted")
    assert [d.id for d in store.list_demonstrations(origins=["teacher"])] == [pending[0].id]
    assert [d.origin for d in store.list_demonstrations(origins=["human"])] == ["human"]


def test_distilling_nothing_is_refused(store):
    with pytest.raises(ValueError, match="at least one prompt"):
        next(distill(store, ModelManager(), Teacher(), [], GenerationSettings()))


def test_every_starter_set_imports(store):
    from lab.data import import_demonstrations
    from lab.presets import demonstration_sets

    counts = {name: import_demonstrations(store, path).imported for name, path in demonstration_sets().items()}
    assert counts["signoff"] == 24 and all(counts.values())


def said(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


@pytest.mark.parametrize(
    ("search", "found"),
    [
        ("café", ["Un café, s'il vous plaît."]),
        ("CAFÉ", ["Un café, s'il vous plaît."]),
        ("ünïcode", ["Ünïcode is fine."]),
        ("100%", ["It is 100% sure."]),
        ("a_b", ["Use a_b here."]),
        ("role", []),
        ("content", []),
        ('"', []),
    ],
)
def test_search_finds_what_was_said_literally_in_any_script(store, search, found):
    store.add_demonstrations(
        [
            Demonstration(said("Order a coffee", "Un café, s'il vous plaît.")),
            Demonstration(said("Say it", "Ünïcode is fine.")),
            Demonstration(said("How sure?", "It is 100% sure.")),
            Demonstration(said("How many?", "1000 of them.")),
            Demonstration(said("Name it", "Use a_b here.")),
            Demonstration(said("Other name", "Use axb here.")),
        ]
    )
    assert [d.messages[-1]["content"] for d in store.list_demonstrations(search=search)] == found


def test_a_typed_response_is_human_and_accepted(store):
    demo = save_demonstration(store, said("Hi", "Hello!"), category="chat", tags=["greeting", " "], author=" ann ")
    saved = store.get_demonstration(demo.id)
    assert (saved.origin, saved.status, saved.tags, saved.author) == ("human", "accepted", ["greeting"], "ann")


@pytest.mark.parametrize(("response", "origin"), [("Hello there!", "model"), ("Hello, friend.", "model-edited")])
def test_the_origin_says_whether_the_draft_was_changed(store, response, origin):
    demo = save_demonstration(store, said("Hi", response), draft="Hello there! ", category="chat", tags=[], author="")
    assert (demo.origin, store.get_demonstration(demo.id).draft) == (origin, "Hello there! ")


@pytest.mark.parametrize("status", ["pending", "rejected"])
def test_editing_keeps_the_review_status(store, status):
    [demo_id] = store.add_demonstrations([Demonstration(HI, status=status)])
    save_demonstration(store, said("Hi", "Hello, edited!"), demo_id=demo_id, category="chat", tags=[], author="")
    edited = store.get_demonstration(demo_id)
    assert (edited.status, edited.messages[-1]["content"]) == (status, "Hello, edited!")
    assert [d.id for d in store.list_demonstrations()] == []  # still not trainable until accepted


def test_an_edited_teacher_answer_stays_the_teachers(store):
    teacher = Demonstration(HI, origin="teacher", draft="Hello!", teacher="big-model", status="pending")
    [demo_id] = store.add_demonstrations([teacher])
    save_demonstration(store, said("Hi", "Hi there."), demo_id=demo_id, category="chat", tags=[], author="ann")
    edited = store.get_demonstration(demo_id)
    assert (edited.origin, edited.teacher, edited.draft, edited.status) == ("teacher", "big-model", "Hello!", "pending")


def test_a_duplicate_or_invalid_conversation_is_refused_in_one_sentence(store):
    [first] = store.add_demonstrations([Demonstration(HI)])
    with pytest.raises(ValueError, match=rf"^Not saved: demonstration #{first} is the same conversation\.$"):
        save_demonstration(store, said(" hi ", "hello!"), category="chat", tags=[], author="")
    with pytest.raises(ValueError, match="^Not saved: unknown category"):
        save_demonstration(store, said("Bye", "Bye!"), category="poetry", tags=[], author="")
    save_demonstration(store, said("Hi", "Hello!!"), demo_id=first, category="chat", tags=[], author="")  # itself
    assert len(store.list_demonstrations(status=None)) == 1


def test_stop_ends_distillation_before_the_next_answer(store, tiny_model_dir):
    from lab.distill import StopFlag

    models = ModelManager()
    models.load(str(tiny_model_dir), "fp32", "cpu")
    prompts = [Prompt(f"Question {i}?", "open QA") for i in range(4)]
    stop = StopFlag()
    steps = []
    for step in distill(
        store, models, Teacher(), prompts, GenerationSettings(temperature=0, max_new_tokens=8), stop=stop
    ):
        steps.append(step)
        stop.set()  # Stop pressed right after the first answer
    assert [(s.done, s.saved) for s in steps] == [(1, 1)]
    assert len(store.list_demonstrations(status="pending")) == 1


def test_stop_during_an_answer_drops_it_and_stops_generating(store, monkeypatch):
    import lab.distill
    from lab.distill import StopFlag

    stop, tokens = StopFlag(), []

    def endless(hold, messages, settings):
        while True:
            tokens.append("x")
            if len(tokens) == 3:
                stop.set()  # Stop pressed while the teacher is writing
            yield "x" * len(tokens)

    monkeypatch.setattr(lab.distill, "stream_chat", endless)
    steps = list(
        distill(store, ModelManager(), Teacher(), [Prompt("Why?", "open QA")], GenerationSettings(), stop=stop)
    )
    assert steps == [] and len(tokens) == 3
    assert store.list_demonstrations(status=None) == []  # half an answer is not saved


def test_a_stop_flag_is_shared_not_copied_by_session_state():
    import copy

    from lab.distill import StopFlag

    flag = StopFlag()
    assert copy.deepcopy(flag) is flag


def test_bulk_actions_report_only_what_changed(store):
    from lab import demonstrations as demos

    one, two = store.add_demonstrations([Demonstration(HI), Demonstration(said("Bye", "Bye!"))])
    gone = demos.delete(store, [one, two, 9999])
    assert gone.describe("Deleted") == f"Deleted 2 (#{one}, #{two}); not found: #9999."
    assert (
        demos.restore(store, [one, two, 9999]).describe("Restored") == f"Restored 2 (#{one}, #{two}); not found: #9999."
    )
    assert store.set_demonstration_status([two, 9999], "rejected") == [two]
    rejected = demos.set_status(store, [one, two, 9999], "rejected")
    assert rejected.describe("Rejected") == f"Rejected 1 (#{one}); already so: #{two}; not found: #9999."
    assert store.delete_demonstrations([one]) == [one] and store.delete_demonstrations([one]) == []


def test_bulk_review_acts_only_on_the_pending_rows_shown(store):
    from lab.demonstrations import review_shown

    ids = store.add_demonstrations([Demonstration(said(f"Q{i}", f"A{i}"), status="pending") for i in range(8)])
    [human] = store.add_demonstrations([Demonstration(HI)])
    assert review_shown(store, [human], "accepted") == (
        "No pending answers are shown in the table: set Status to pending to review them first."
        " 8 more pending are not shown and stay pending."
    )
    message = review_shown(store, [ids[0], ids[1], human], "accepted")
    assert message.startswith("Marked the 2 pending answer(s) shown as accepted") and "6 more pending" in message
    assert len(store.list_demonstrations(status="pending")) == 6
    assert {d.id for d in store.list_demonstrations(origins=["human"], status="accepted")} == {human, ids[0], ids[1]}


def test_a_long_text_is_previewed_with_an_ellipsis():
    from lab.demonstrations import preview

    assert preview("short") == "short"
    long = preview("word " * 10_000)
    assert len(long) <= 301 and long.endswith("…")


def test_a_demonstration_longer_than_training_keeps_gets_a_warning(tiny_model):
    from lab.demonstrations import length_warning

    short = said("Hi", "Hello!")
    assert length_warning(tiny_model.tokenizer, short, 1024) is None
    warning = length_warning(tiny_model.tokenizer, said("Hi", "Paris. " * 500), 1024)
    assert warning is not None and "longer than the 1024 that training keeps" in warning


@pytest.fixture
def tab(tmp_path):
    import gradio as gr

    from lab import Lab
    from ui.demonstrations import build_demonstrations

    ctx = Lab(Store(tmp_path / "workspace"))
    with gr.Blocks() as app:
        view = build_demonstrations(ctx, app)
    return ctx, view


def test_a_refused_save_replaces_the_success_beside_the_button(tab):
    import pandas as pd

    from ui.demonstrations import save_demonstration

    ctx, view = tab
    empty = pd.DataFrame(columns=["role", "content"])
    saved = save_demonstration(ctx, view, None, None, "", empty, "Hi", "Hello!", "chat", "", "ann")
    assert saved[view.message].startswith("Saved demonstration #1")
    again = save_demonstration(ctx, view, None, None, "", empty, "Hi", "Hello!", "chat", "", "ann")
    assert again == {view.message: "Not saved: demonstration #1 is the same conversation."}


def test_the_table_previews_long_texts_and_offers_only_its_rows_for_picking(tab):
    from lab.store import ORIGINS
    from ui.demonstrations import refresh_table

    ctx, view = tab
    [long_id] = ctx.store.add_demonstrations([Demonstration(said("Tell me", "x" * 50_000))])
    ctx.store.add_demonstrations([Demonstration(HI, status="pending")])
    shown = refresh_table(ctx, view, "", "", list(ORIGINS), "accepted")
    assert len(shown[view.table].loc[0, "response"]) <= 301
    assert [value for _, value in shown[view.selected]["choices"]] == [long_id]


def test_the_draft_streams_into_the_response_box(tab, tiny_model_dir, monkeypatch):
    import ui.demonstrations
    from ui.demonstrations import draft_response

    monkeypatch.setattr(ui.demonstrations, "DRAFT_TOKENS", 32)  # the tiny model's context is 256 tokens
    ctx, view = tab
    ctx.models.load(str(tiny_model_dir), "fp32", "cpu")
    updates = list(draft_response(ctx, view, "", None, "Hello"))
    streamed = [u[view.response] for u in updates if u.get(view.message) == "Drafting…"]
    assert streamed and updates[-1][view.message].startswith("Draft ready")  # the tiny model's text is one piece
    assert updates[-1][view.draft] == updates[-1][view.response] == streamed[-1].strip()
    assert updates[0] == {view.message: "⏳ Waiting for the model (another request may be using it)…"}
