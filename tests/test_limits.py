"""Every limit in lab.limits: the largest allowed input works, one more is refused with a message, nothing is
stored; a compressed file that unpacks past the limit is refused before it is unpacked."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lab import limits
from lab.data import DataFileError, import_demonstrations
from lab.store import Comparison, Demonstration, Store

ROOT = Path(__file__).resolve().parent.parent


def conversation(chars: int) -> list[dict]:
    return [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a" * (chars - 1)}]


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "ws")


def write_jsonl(path: Path, rows: int) -> Path:
    path.write_text("".join(json.dumps({"messages": conversation(10 + n)}) + "\n" for n in range(rows)))
    return path


def test_a_conversation_and_a_name_at_the_limit_are_stored_one_more_is_not(store):
    store.add_demonstrations([Demonstration(conversation(limits.CONVERSATION_CHARS), author="a" * limits.NAME_CHARS)])
    with pytest.raises(ValueError, match="characters; the limit is"):
        store.add_demonstrations([Demonstration(conversation(limits.CONVERSATION_CHARS + 1))])
    with pytest.raises(ValueError, match="author's name"):
        store.add_demonstrations([Demonstration(conversation(20), author="a" * (limits.NAME_CHARS + 1))])
    vote = Comparison([{"role": "user", "content": "q"}], [{"text": "x"}, {"text": "y"}], [0, 1], [1, 2])
    vote.annotator = "b" * (limits.NAME_CHARS + 1)
    with pytest.raises(ValueError, match="annotator's name"):
        store.add_comparison(vote)
    assert len(store.list_demonstrations()) == 1 and store.list_comparisons() == []


def test_rows_per_import_and_file_size_are_bounded(store, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "IMPORT_ROWS", 3)
    assert import_demonstrations(store, write_jsonl(tmp_path / "three.jsonl", 3)).imported == 3
    with pytest.raises(DataFileError, match="4 rows; one import takes up to 3"):
        import_demonstrations(store, write_jsonl(tmp_path / "four.jsonl", 4))
    monkeypatch.setattr(limits, "FILE_MB", 0.0001)
    with pytest.raises(DataFileError, match="the lab imports files up to"):
        import_demonstrations(store, write_jsonl(tmp_path / "big.jsonl", 3))
    assert len(store.list_demonstrations()) == 3


def test_a_run_name_is_bounded(store, tiny_model_dir):
    from lab import jobs
    from lab.train.sft import SFTRunConfig

    signoff = ROOT / "assets" / "demonstrations" / "signoff.jsonl"
    with pytest.raises(ValueError, match="run's name"):
        jobs.prepare(store, "sft", SFTRunConfig(model=str(tiny_model_dir)), "n" * 201, data_file=str(signoff))
    assert store.list_runs() == []


BOMB = textwrap.dedent(
    """
    import resource, sys
    from lab.data import DataFileError, read_records

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_records(sys.argv[1])
        print("read")
    except DataFileError as err:
        print("refused", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, err)
    """
)


def test_a_parquet_file_that_unpacks_past_the_limit_is_refused_before_it_is_unpacked(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bomb = tmp_path / "bomb.parquet"
    size = (limits.DECOMPRESSED_MB + 50) * 2**20
    pq.write_table(pa.table({"messages": ["a" * size]}), bomb, compression="zstd")
    assert bomb.stat().st_size < 2**20  # a few kilobytes on disk
    out = subprocess.run([sys.executable, "-c", BOMB, str(bomb)], cwd=ROOT, capture_output=True, text=True, check=True)
    verdict, grown_mb, message = out.stdout.split(" ", 2)
    assert verdict == "refused" and "unpacks to more than" in message
    assert int(grown_mb) < limits.DECOMPRESSED_MB


def test_an_experiment_is_bounded_in_name_questions_and_prompts():
    from lab.experiments import new_experiment

    variant = {"name": "plain", "system": "", "template": "{question}"}
    settings = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 0}
    at_limit = new_experiment("n" * limits.NAME_CHARS, [variant], ["q"] * limits.QUESTIONS, settings)
    assert len(at_limit.questions) == limits.QUESTIONS
    for name, questions, variants, says in [
        ("n" * (limits.NAME_CHARS + 1), ["q"], [variant], "name"),
        ("n", ["q"] * (limits.QUESTIONS + 1), [variant], "questions"),
        ("n", ["q" * (limits.MESSAGE_CHARS + 1)], [variant], "characters"),
        ("n", ["q"], [{**variant, "system": "s" * (limits.SYSTEM_PROMPT_CHARS + 1)}], "system"),
        ("n", ["q"], [{**variant, "name": f"v{i}"} for i in range(limits.VARIANTS + 1)], "variants"),
    ]:
        with pytest.raises(ValueError, match=says):
            new_experiment(name, variants, questions, settings)


def test_an_id_beyond_64_bits_is_not_found_rather_than_a_crash(store):
    [demo_id] = store.add_demonstrations([Demonstration(conversation(20))])
    assert store.delete_demonstrations([demo_id, 2**70]) == [demo_id]
    with pytest.raises(KeyError, match="No demonstration"):
        store.get_demonstration(2**70)


def test_nan_never_reaches_the_stored_json(store):
    from lab.store import Run

    with pytest.raises(ValueError, match="not finite"):
        store.add_run(Run("r1", "sft", {"learning_rate": float("nan")}))
    assert store.list_runs() == []
