"""Import and export of demonstrations: every format and file type, duplicates, and each error a user can cause."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lab.data import (
    DataFileError,
    detect_format,
    export_demonstrations,
    import_demonstrations,
    preview_import,
    read_records,
    sft_examples,
    to_demonstrations,
)
from lab.store import Demonstration, Store


def conversation(question: str, answer: str, system: str = "") -> list[dict]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]


MULTI_TURN = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]


def write(path: Path, rows: list[dict]) -> Path:
    """Write rows the way people produce such files: json/jsonl by hand, csv and parquet with pandas."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    elif path.suffix == ".csv":
        cells = [{k: cell(k, v) for k, v in r.items()} for r in rows]
        pd.DataFrame(cells).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


def cell(column: str, value: object) -> object:
    """How a CSV holds a list: messages as JSON text, tags comma-separated."""
    if isinstance(value, list):
        return json.dumps(value) if column == "messages" else ", ".join(value)
    return value


def count(store: Store) -> int:
    return len(store.list_demonstrations(status=None))


@pytest.fixture
def store(tmp_path) -> Store:
    """A workspace that already holds one demonstration, so 'nothing written' means the count stays 1."""
    store = Store(tmp_path / "ws")
    store.add_demonstrations([Demonstration(conversation("Already here?", "Yes."))])
    return store


# formats × file types

FORMAT_ROWS = {
    "messages": (
        [
            {"messages": conversation("Hi", "Hello!", system="Be kind."), "category": "chat", "tags": ["greet"]},
            {"messages": MULTI_TURN, "author": "ana"},
        ],
        [conversation("Hi", "Hello!", system="Be kind."), MULTI_TURN],
    ),
    "alpaca": (
        [
            {"instruction": "Summarize.", "input": "A long text.", "output": "Short.", "category": "summarization"},
            {"instruction": "Say hi.", "input": "", "output": "Hi!", "system": "Be warm.", "tags": "a, b"},
        ],
        [conversation("Summarize.\n\nA long text.", "Short."), conversation("Say hi.", "Hi!", system="Be warm.")],
    ),
    "prompt-completion": (
        [
            {"prompt": "2+2?", "completion": "4"},
            {"prompt": "Sky colour?", "completion": "Blue.", "category": "open QA"},
        ],
        [conversation("2+2?", "4"), conversation("Sky colour?", "Blue.")],
    ),
}


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
@pytest.mark.parametrize("form", list(FORMAT_ROWS))
def test_each_format_imports_from_each_file_type(store, tmp_path, form, suffix):
    rows, expected = FORMAT_ROWS[form]
    path = write(tmp_path / f"data{suffix}", rows)
    assert detect_format(read_records(path)) == form

    report = import_demonstrations(store, path)

    assert (report.format, report.imported, report.duplicates) == (form, 2, 0)
    imported = [store.get_demonstration(i) for i in report.ids]
    assert [d.messages for d in imported] == expected
    assert all(d.origin == "human" and d.status == "accepted" for d in imported)
    assert imported[0].source == f"import:data{suffix}"
    assert count(store) == 3


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_conversational_prompt_completion_imports(store, tmp_path, suffix):
    rows = [{"prompt": MULTI_TURN[:4], "completion": MULTI_TURN[4:]}]
    report = import_demonstrations(store, write(tmp_path / f"pc{suffix}", rows))
    assert report.format == "prompt-completion"
    assert store.get_demonstration(report.ids[0]).messages == MULTI_TURN


def test_optional_columns_are_carried_over():
    demos = to_demonstrations(FORMAT_ROWS["messages"][0], "test")
    assert (demos[0].category, demos[0].tags, demos[0].author) == ("chat", ["greet"], "")
    assert (demos[1].category, demos[1].author) == ("other", "ana")


def test_instruction_rows_carry_category_and_comma_separated_tags(tmp_path):
    path = write(tmp_path / "data.csv", FORMAT_ROWS["alpaca"][0])
    first, second = to_demonstrations(read_records(path), "test")
    assert (first.category, first.tags) == ("summarization", [])
    assert (second.category, second.tags) == ("other", ["a", "b"])


def test_json_file_holding_json_lines_is_read(tmp_path):
    """`datasets.Dataset.to_json` writes JSON Lines under a .json name."""
    path = tmp_path / "hub.json"
    path.write_text("".join(json.dumps({"messages": conversation(f"q{i}", "a")}) + "\n" for i in range(3)))
    assert len(read_records(path)) == 3


# round trip and export


def test_export_then_import_in_a_fresh_store_gives_identical_messages(store, tmp_path):
    store.add_demonstrations(
        [
            Demonstration(MULTI_TURN, category="chat"),
            Demonstration(conversation('Ünïcode ✓ and "quotes"\nnewline?', "Oui — très bien.")),
            Demonstration(conversation("Pending?", "Not exported."), status="pending"),
        ]
    )
    path = tmp_path / "out.jsonl"

    assert export_demonstrations(store, path) == 3

    fresh = Store(tmp_path / "fresh")
    report = import_demonstrations(fresh, path)
    assert report.imported == 3
    assert [d.messages for d in fresh.list_demonstrations()] == [d.messages for d in store.list_demonstrations()]


def test_export_is_readable_by_datasets(store, tmp_path):
    from datasets import load_dataset

    store.add_demonstrations([Demonstration(MULTI_TURN)])
    path = tmp_path / "train.jsonl"
    export_demonstrations(store, path)

    dataset = load_dataset("json", data_files=str(path), split="train")
    assert dataset.column_names == ["messages"]
    assert dataset[0]["messages"] == conversation("Already here?", "Yes.")
    assert dataset[1]["messages"] == MULTI_TURN


def test_export_filters_by_origin(store, tmp_path):
    store.add_demonstrations([Demonstration(conversation("Drafted?", "Edited."), origin="model-edited")])
    path = tmp_path / "edited.jsonl"
    assert export_demonstrations(store, path, origins=["model-edited"]) == 1
    assert json.loads(path.read_text())["messages"][0]["content"] == "Drafted?"


def test_export_with_nothing_to_export_is_an_error_and_writes_no_file(tmp_path):
    path = tmp_path / "out.jsonl"
    with pytest.raises(DataFileError, match=r"^No accepted demonstrations to export\.$"):
        export_demonstrations(Store(tmp_path / "empty"), path)
    assert not path.exists()


def test_failed_export_leaves_the_old_file_and_no_temp_file(store, tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")

    def broken_replace(*_):
        raise OSError("disk full")

    monkeypatch.setattr("lab.formats.read.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        export_demonstrations(store, path)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir() if p.name != "ws"] == ["out.jsonl"]


def test_export_to_another_extension_is_refused(store, tmp_path):
    with pytest.raises(DataFileError, match=r"'out\.csv'.*\.jsonl"):
        export_demonstrations(store, tmp_path / "out.csv")


# training examples


def test_sft_examples_give_one_example_per_assistant_turn():
    from trl.data_utils import is_conversational

    examples = sft_examples([Demonstration(conversation("Hi", "Hello!")), Demonstration(MULTI_TURN)])

    assert len(examples) == 3
    assert examples[0] == {
        "prompt": [{"role": "user", "content": "Hi"}],
        "completion": [{"role": "assistant", "content": "Hello!"}],
    }
    assert examples[1] == {"prompt": MULTI_TURN[:2], "completion": [MULTI_TURN[2]]}
    assert examples[2] == {"prompt": MULTI_TURN[:4], "completion": [MULTI_TURN[4]]}
    assert all(is_conversational(e) for e in examples)


# duplicates and preview


def test_duplicates_within_the_file_and_against_the_store_are_skipped_and_counted(store, tmp_path):
    rows = [
        {"messages": conversation("New?", "Yes.")},
        {"messages": conversation("  already HERE? ", "yes.")},  # same as the stored one, up to case and spacing
        {"messages": conversation("New?", "Yes.")},  # repeats row 1
        {"messages": conversation("Also new?", "Yes.")},
    ]
    path = write(tmp_path / "dups.jsonl", rows)

    preview = preview_import(store, path)
    assert (len(preview.demonstrations), preview.duplicates) == (2, 2)
    assert preview.summary() == (
        "chat messages (TRL conversational / OpenAI fine-tuning), 4 rows: 2 new demonstrations"
        " (2 duplicates will be skipped)."
    )
    assert count(store) == 1  # a preview writes nothing

    report = import_demonstrations(store, path)
    assert (report.imported, report.duplicates) == (2, 2)
    assert report.summary().startswith(
        "Imported 2 demonstrations from 'dups.jsonl' (2 duplicates skipped). Recognised: "
    )
    assert count(store) == 3

    again = import_demonstrations(store, path)
    assert (again.imported, again.duplicates) == (0, 4)
    assert count(store) == 3


def test_preview_table_shows_first_prompt_last_response_and_turns(store, tmp_path):
    path = write(tmp_path / "t.jsonl", [{"messages": MULTI_TURN, "category": "chat"}])
    table = preview_import(store, path).table()
    assert list(table.columns) == ["prompt", "response", "turns", "category"]
    assert table.iloc[0].to_dict() == {
        "prompt": "Capital of France?",
        "response": "Rome.",
        "turns": 4,
        "category": "chat",
    }


# errors: each names the line or row and the problem, and nothing is written

GOOD = json.dumps({"messages": conversation("Fine?", "Fine.")})


def jsonl_with_bad_line_3(tmp_path: Path, bad: str) -> Path:
    lines = [json.dumps({"messages": conversation(f"Good {i}?", "Good.")}) for i in range(5)]
    lines[2] = bad
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def bad_messages(messages: list[dict], **extra) -> str:
    return json.dumps({"messages": messages, **extra})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"messages": [}', r"^line 3: not valid JSON \(Expecting value at column 15\)\.$"),
        ("[1, 2]", r"^line 3: expected a JSON object, got list\.$"),
        (json.dumps({"instruction": "x", "output": "y"}), r"^line 3: missing field 'messages'\.$"),
        (bad_messages(conversation("Hi", "   ")), r"^line 3: message 2 \(assistant\) has empty text\.$"),
        (
            bad_messages([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
            r"^line 3: turn 2 is 'user' but should be 'assistant'",
        ),
        (
            bad_messages([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]),
            r"^line 3: message 2 in 'messages' has role 'bot' \(the lab keeps system, user and assistant turns\)\.$",
        ),
        (
            bad_messages(
                [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            ),
            r"^line 3: the conversation must end with the assistant's response\.$",
        ),
        (
            bad_messages(conversation("a", "b"), category="poetry"),
            r"^line 3: unknown category 'poetry' \(use one of generation",
        ),
        (
            bad_messages([{"role": "user", "text": "a"}]),
            r"^line 3: message 1 in 'messages' has 'text'; a message has a role and a content \(or from and value\)\.$",
        ),
        (bad_messages(["hello"]), r"^line 3: message 1 in 'messages' must be an object"),
    ],
    ids=[
        "not-json",
        "not-object",
        "missing-field",
        "empty-text",
        "two-user-turns",
        "role-bot",
        "ends-with-user",
        "unknown-category",
        "wrong-keys",
        "message-not-object",
    ],
)
def test_a_bad_line_imports_nothing_and_names_the_line(store, tmp_path, bad, message):
    path = jsonl_with_bad_line_3(tmp_path, bad)
    with pytest.raises(DataFileError, match=message):
        preview_import(store, path)
    with pytest.raises(DataFileError, match=message):
        import_demonstrations(store, path)
    assert count(store) == 1


def test_jsonl_lines_are_numbered_physically_across_blank_lines(store, tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text(f"{GOOD}\n\n   \n{bad_messages(conversation('a', ''))}\n")
    with pytest.raises(DataFileError, match=r"^line 4: message 2 \(assistant\) has empty text\.$"):
        import_demonstrations(store, path)
    assert count(store) == 1


def instruction_rows_with_bad_row_3(bad: dict) -> list[dict]:
    rows = [{"instruction": f"Task {i}.", "input": "", "output": "Done.", "category": "other"} for i in range(5)]
    rows[2] = bad
    return rows


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_a_row_missing_a_field_imports_nothing_and_names_the_row(store, tmp_path, suffix):
    rows = instruction_rows_with_bad_row_3({"instruction": "Do it.", "input": ""})
    with pytest.raises(DataFileError, match=r"^row 3: missing field 'output'\.$"):
        import_demonstrations(store, write(tmp_path / f"bad{suffix}", rows))
    assert count(store) == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"instruction": "Do it.", "input": "", "output": " "}, r"^row 3: 'output' is empty\.$"),
        (
            {"instruction": "Do it.", "input": "", "output": "Done.", "category": "nope"},
            r"^row 3: unknown category 'nope'",
        ),
    ],
    ids=["empty-field", "unknown-category"],
)
@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_a_bad_row_imports_nothing_and_names_the_row(store, tmp_path, suffix, bad, message):
    with pytest.raises(DataFileError, match=message):
        import_demonstrations(store, write(tmp_path / f"bad{suffix}", instruction_rows_with_bad_row_3(bad)))
    assert count(store) == 1


def test_csv_messages_cell_that_is_not_json(store, tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame(
        {"messages": [json.dumps(conversation("a", "b")), json.dumps(conversation("c", "d")), "[{oops"]}
    ).to_csv(path, index=False)
    with pytest.raises(DataFileError, match=r"^row 3: the 'messages' cell is not valid JSON \(.+\)\.$"):
        import_demonstrations(store, path)
    assert count(store) == 1


def test_unknown_format_names_the_columns_found_and_expected(store, tmp_path):
    path = write(tmp_path / "odd.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(
        DataFileError,
        match=r"the columns are 'question', 'answer'\. The lab imports these shapes: unpaired \(.*sharegpt",
    ):
        import_demonstrations(store, path)
    assert count(store) == 1


def test_unsupported_extension(store, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(GOOD)
    with pytest.raises(
        DataFileError, match=r"^Cannot import 'notes\.txt': use a \.jsonl, \.json, \.csv or \.parquet file\.$"
    ):
        import_demonstrations(store, path)
    assert count(store) == 1


def test_missing_file(store, tmp_path):
    with pytest.raises(DataFileError, match=r"^There is no file at .*nowhere\.jsonl\.$"):
        import_demonstrations(store, tmp_path / "nowhere.jsonl")
    assert count(store) == 1


@pytest.mark.parametrize(
    ("name", "text"), [("e.jsonl", ""), ("b.jsonl", "\n  \n"), ("e.csv", ""), ("h.csv", "messages\n"), ("e.json", "[]")]
)
def test_empty_file(store, tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataFileError, match=rf"^'{name}' has no rows\.$"):
        import_demonstrations(store, path)
    assert count(store) == 1


def test_empty_parquet_file(store, tmp_path):
    path = tmp_path / "e.parquet"
    pd.DataFrame({"messages": pd.Series([], dtype=object)}).to_parquet(path)
    with pytest.raises(DataFileError, match=r"^'e\.parquet' has no rows\.$"):
        import_demonstrations(store, path)


def test_json_that_is_not_a_list_or_not_json(store, tmp_path):
    path = tmp_path / "obj.json"
    path.write_text(json.dumps({"data": [json.loads(GOOD)]}, indent=2))
    with pytest.raises(DataFileError, match=r"^Unknown format: the columns are 'data'\."):
        import_demonstrations(store, path)
    path.write_text('[\n  {"messages": []},\n  oops\n]')
    with pytest.raises(
        DataFileError, match=r"^'obj\.json' is not valid JSON \(Expecting value at line 3, column 3\)\.$"
    ):
        import_demonstrations(store, path)
    path.write_text(json.dumps([json.loads(GOOD), "text"]))
    with pytest.raises(DataFileError, match=r"^row 2: expected a JSON object, got str\.$"):
        import_demonstrations(store, path)
    assert count(store) == 1


def test_files_that_are_not_text_or_not_parquet(store, tmp_path):
    path = tmp_path / "binary.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataFileError, match=r"^'binary\.jsonl' is not UTF-8 text"):
        import_demonstrations(store, path)
    path = tmp_path / "fake.parquet"
    path.write_text(GOOD)
    with pytest.raises(DataFileError, match=r"^'fake\.parquet' is not a readable Parquet file"):
        import_demonstrations(store, path)
    assert count(store) == 1
