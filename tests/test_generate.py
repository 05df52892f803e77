"""Streaming, batched candidates, stop strings and over-long prompts on the tiny model."""

import pytest

from lab.generate import (
    GenerationSettings,
    PromptTooLongError,
    build_messages,
    generate,
    plain_messages,
    sample_candidates,
    stream_chat,
)

GREEDY = GenerationSettings(temperature=0, max_new_tokens=12)


def test_messages_keep_system_history_and_new_turn():
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "text", "text": "yo"}]}]
    messages = build_messages("again", system="Be brief.", history=plain_messages(history))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "yo"
    assert build_messages("x", system="  ")[0]["role"] == "user"


def test_stream_grows_and_ends_at_the_full_reply(tiny_model):
    messages = build_messages("What is the capital of France?")
    chunks = list(stream_chat(tiny_model, messages, GREEDY))
    assert len(chunks) > 1
    assert all(later.startswith(earlier) for earlier, later in zip(chunks, chunks[1:], strict=False))
    assert chunks[-1].strip() == generate(tiny_model, messages, GREEDY).text


def test_seed_makes_sampling_repeatable(tiny_model):
    messages = build_messages("Tell me something")
    settings = GenerationSettings(temperature=1.0, max_new_tokens=10, seed=7)
    assert generate(tiny_model, messages, settings).text == generate(tiny_model, messages, settings).text


def test_stop_string_cuts_the_reply(tiny_model):
    messages = build_messages("Hello")
    full = generate(tiny_model, messages, GenerationSettings(temperature=0, max_new_tokens=30)).text
    stop = full.strip()[3:5]
    assert stop, "the tiny model should say something to cut"
    settings = GenerationSettings(temperature=0, max_new_tokens=30, stop=[stop])
    cut = generate(tiny_model, messages, settings).text
    assert stop not in cut and full.startswith(cut)
    assert stop not in list(stream_chat(tiny_model, messages, settings))[-1]


def test_k_candidates_come_from_one_batched_call(tiny_model, monkeypatch):
    calls = []
    original = tiny_model.model.generate
    monkeypatch.setattr(tiny_model.model, "generate", lambda **kw: calls.append(kw) or original(**kw))
    settings = GenerationSettings(temperature=1.0, max_new_tokens=8, seed=0)
    candidates = sample_candidates(tiny_model, build_messages("Name a color"), settings, k=4)
    assert len(candidates) == 4 and len(calls) == 1
    assert calls[0]["num_return_sequences"] == 4
    assert len({c.text for c in candidates}) > 1


def test_greedy_candidates_are_refused(tiny_model):
    with pytest.raises(ValueError, match="temperature above 0"):
        sample_candidates(tiny_model, build_messages("x"), GREEDY, k=2)


def test_prompt_longer_than_the_context_is_a_clear_error(tiny_model):
    long = "mirror " * 400  # the tiny model has a 256-token context
    with pytest.raises(PromptTooLongError, match="shorten it"):
        generate(tiny_model, build_messages(long), GREEDY)
    with pytest.raises(PromptTooLongError):
        next(stream_chat(tiny_model, build_messages(long), GREEDY))


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_p": 0}, {"max_new_tokens": 0}])
def test_bad_settings_name_the_field(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        GenerationSettings(**kwargs)


def test_closing_a_stream_stops_generation_and_frees_the_model(tiny_model_dir):
    """What the Stop button and a closed browser tab do: another user must not wait on an abandoned reply."""
    import threading
    from functools import partial

    from lab.models import ModelManager

    manager = ModelManager()
    manager.load(str(tiny_model_dir), "fp32", "cpu")
    stream = stream_chat(partial(manager.use), build_messages("Hello"), GenerationSettings(max_new_tokens=200))
    first = next(stream)
    stream.close()
    free = threading.Event()

    def other_user() -> None:
        with manager.use():
            free.set()

    threading.Thread(target=other_user, daemon=True).start()
    assert free.wait(timeout=10)
    assert first


def test_stream_can_be_read_from_several_threads(tiny_model_dir):
    """Gradio may resume a streaming handler on a different worker thread each time."""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    from lab.models import ModelManager

    manager = ModelManager()
    manager.load(str(tiny_model_dir), "fp32", "cpu")
    stream = stream_chat(partial(manager.use), build_messages("Hello"), GREEDY)
    chunks = []
    with ThreadPoolExecutor(4) as pool:
        while (chunk := pool.submit(next, stream, None).result()) is not None:
            chunks.append(chunk)
    assert chunks
    with manager.use():  # the lock is free again
        pass


def test_limits_refuse_what_would_stall_everyone_and_name_the_key():
    from lab import limits

    at_limit = ["x" * limits.STOP_STRING_CHARS] * limits.STOP_STRINGS
    assert GenerationSettings(stop=at_limit).stop == at_limit
    for bad, named in [
        ({"stop": ["x" * (limits.STOP_STRING_CHARS + 1)]}, "stop"),
        ({"stop": ["s"] * (limits.STOP_STRINGS + 1)}, "stop"),
        ({"seed": 10**30}, "seed"),
        ({"temperature": float("nan")}, "temperature"),
        ({"max_new_tokens": limits.NEW_TOKENS + 1}, "max_new_tokens"),
    ]:
        with pytest.raises(ValueError, match=f"key '{named}'"):
            GenerationSettings(**bad)
    build_messages("x" * limits.MESSAGE_CHARS)
    with pytest.raises(ValueError, match="limit is"):
        build_messages("x" * (limits.MESSAGE_CHARS + 1))
    with pytest.raises(ValueError, match="system prompt"):
        build_messages("hi", system="s" * (limits.SYSTEM_PROMPT_CHARS + 1))


def test_stop_strings_end_each_candidate_without_a_vocabulary_scan(tiny_model, monkeypatch):
    """Stop strings are matched on the decoded tail of each reply, not through transformers' stop_strings,
    whose set-up scans the vocabulary per character while the request holds the model."""
    import transformers.generation.stopping_criteria as criteria

    def refuse(*args, **kwargs):
        raise AssertionError("StopStringCriteria was built")

    monkeypatch.setattr(criteria.StopStringCriteria, "__init__", refuse)
    messages = build_messages("Hello")
    full = generate(tiny_model, messages, GenerationSettings(temperature=0, max_new_tokens=30)).text
    stop = full.strip()[3:5]
    cut = generate(tiny_model, messages, GenerationSettings(temperature=0, max_new_tokens=30, stop=[stop]))
    assert stop not in cut.text and cut.new_tokens < 30
    many = ["zzzz" * 16] * 7 + [stop]
    candidates = sample_candidates(tiny_model, messages, GenerationSettings(0.8, 1.0, 30, 0, many), 3)
    assert all(stop not in c.text for c in candidates)
