"""TruthfulQA's public CSV (Lin, Hilton and Evans, ACL 2022) in: typed questions, a question-level split, and TRL
preference pairs out.

The file has one row per question, with the columns Type, Category, Question, Best Answer, Correct Answers,
Incorrect Answers and Source; the answer lists are separated by "; ". A bad file is refused whole, in one sentence
naming the row and column; nothing half-read comes back.

    from lab.truthfulqa import read_questions, split_questions, preference_rows
    questions = read_questions("TruthfulQA.csv")
    train, held_out = split_questions(questions, held_out_fraction=0.2, seed=42)
    rows = preference_rows(train, pairs_per_question=1)  # TRL's conversational prompt / chosen / rejected
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source")
REQUIRED = ("Question", "Best Answer", "Incorrect Answers")  # the rest may be blank
SEPARATOR = ";"


class TruthfulQAError(ValueError):
    """A file that is not TruthfulQA's CSV shape; the message names the row (as a spreadsheet numbers it) and
    the column."""


@dataclass(frozen=True)
class Question:
    """One TruthfulQA question with its true and false answers (`best` is also in `correct`)."""

    question: str
    category: str
    best: str
    correct: list[str]
    incorrect: list[str]


def split_answers(cell: str) -> list[str]:
    """'A; B;C ;' -> ['A', 'B', 'C']: the answers of one cell, stripped, empty ones dropped."""
    return [answer.strip() for answer in cell.split(SEPARATOR) if answer.strip()]


def read_questions(path: str | Path) -> list[Question]:
    """Every question of a TruthfulQA CSV file, in file order. Raises TruthfulQAError for a missing or unreadable
    file, a missing column, or a row without a question, a best answer or an incorrect answer."""
    import warnings

    import pandas as pd

    path = Path(path)
    try:
        # dtype=str and keep_default_na=False: answers such as "None" or "NA" stay text, blanks stay "".
        # index_col=False and the warning as an error: a row with more fields than the header is refused (pandas
        # would otherwise take a first row's extra field as an index, or drop it).
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False, encoding="utf-8")
    except FileNotFoundError as err:
        raise TruthfulQAError(f"{path}: no such file.") from err
    except pd.errors.ParserWarning as err:
        raise TruthfulQAError(f"{path}, row 2: more fields than the header's columns.") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TruthfulQAError(f"{path} is not a readable CSV file: {first}.") from err
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise TruthfulQAError(
            f"{path} has no column {', '.join(repr(c) for c in missing)}: a TruthfulQA file has the columns "
            f"{', '.join(COLUMNS)}."
        )
    if table.empty:
        raise TruthfulQAError(f"{path} has a header but no questions.")
    questions = []
    for index, row in enumerate(table.to_dict("records")):
        line = index + 2  # the header is row 1
        for column in REQUIRED:
            if not row[column].strip() or (column == "Incorrect Answers" and not split_answers(row[column])):
                raise TruthfulQAError(f"{path}, row {line}: column '{column}' is empty.")
        best = row["Best Answer"].strip()
        correct = split_answers(row["Correct Answers"])
        questions.append(
            Question(
                question=row["Question"].strip(),
                category=row["Category"].strip(),
                best=best,
                correct=correct if best in correct else [best, *correct],
                incorrect=split_answers(row["Incorrect Answers"]),
            )
        )
    return questions


def split_questions(
    questions: list[Question], held_out_fraction: float, seed: int
) -> tuple[list[Question], list[Question]]:
    """(train, held-out) by question: a seeded shuffle, `held_out_fraction` of the questions (rounded down) held out,
    each part in file order, so no held-out question is ever seen in training."""
    if not 0 <= held_out_fraction < 1:
        raise ValueError(f"held_out_fraction must be in [0, 1), not {held_out_fraction}.")
    order = list(range(len(questions)))
    random.Random(seed).shuffle(order)
    held = set(order[: int(len(questions) * held_out_fraction)])
    train = [q for i, q in enumerate(questions) if i not in held]
    return train, [q for i, q in enumerate(questions) if i in held]


def preference_rows(questions: list[Question], pairs_per_question: int = 1) -> list[dict]:
    """TRL conversational preference rows: the question as the user's prompt, the best answer chosen, and each of
    the first `pairs_per_question` incorrect answers rejected (fewer where a question has fewer)."""
    if pairs_per_question < 1:
        raise ValueError(f"pairs_per_question must be at least 1, not {pairs_per_question}.")
    return [
        {
            "prompt": [{"role": "user", "content": q.question}],
            "chosen": [{"role": "assistant", "content": q.best}],
            "rejected": [{"role": "assistant", "content": wrong}],
        }
        for q in questions
        for wrong in q.incorrect[:pairs_per_question]
    ]
