"""The prompts an RL run samples from, frozen as TRL's conversational prompt-only rows: a file, a scenario's
question set, or the workspace's prompt pool; a bad file names the row and writes nothing."""

import json

import pytest

from lab.data import DataFileError
from lab.store import Prompt, Store
from lab.train.snapshot import read_rows, snapshot


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "workspace")


def test_a_file_of_prompts_as_text_or_messages(store, tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "Hi"},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Yo"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = snapshot(store, tmp_path / "run", "prompts", str(path))
    assert read_rows(tmp_path / "run" / "data.jsonl") == [
        {"prompt": [{"role": "user", "content": "Hi"}]},
        rows[1],
    ]
    assert (source.source, source.rows) == ("file prompts.jsonl", 2)


def test_a_row_without_a_prompt_is_named_and_nothing_is_written(store, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Hi"}\n{"question": "Yo"}\n')
    with pytest.raises(DataFileError, match="line 2: every row needs a 'prompt'"):
        snapshot(store, tmp_path / "run", "prompts", str(path))
    assert not (tmp_path / "run" / "data.jsonl").exists()


def test_a_scenarios_questions_or_the_workspace_pool(store, tmp_path):
    source = snapshot(store, tmp_path / "a", "prompts", scenario="Truthfulness")
    assert source.rows > 5 and "Truthfulness" in source.source
    with pytest.raises(DataFileError, match="There are no prompts to train on"):
        snapshot(store, tmp_path / "b", "prompts")
    store.add_prompts([Prompt("Why is the sky blue?")])
    assert snapshot(store, tmp_path / "c", "prompts").rows == 1
