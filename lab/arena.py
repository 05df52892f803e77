"""How good are the votes, and who wins: rater agreement, careless raters, position bias, and a
Bradley-Terry leaderboard with bootstrap intervals (fitted as Chatbot Arena does, by logistic regression).

`arena_report` gathers all of it for a workspace, and refits only when a vote was added or withdrawn.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from lab.preferences import preference_rows
from lab.scenarios import STARTER_SOURCE
from lab.store import Comparison, Store

IMPORT_SOURCE = "import:"  # comparisons read from a file: no annotator on screen, and no known display order
LEADERBOARD_COLUMNS = ["model", "score", "low", "high", "battles"]
ANNOTATOR_COLUMNS = ["annotator", "votes", "shared items", "agreement with majority", "flagged"]


def is_imported(c: Comparison) -> bool:
    """Read from a file rather than voted in this lab: an imported preference file, or a scenario's starter votes."""
    return c.source.startswith(IMPORT_SOURCE) or c.source == STARTER_SOURCE


def counted_votes(comparisons: list[Comparison]) -> list[Comparison]:
    """The votes every Arena figure counts: all but skips (a skip says nothing about the answers)."""
    return [c for c in comparisons if c.verdict != "skipped"]


def rated_here(comparisons: list[Comparison]) -> list[Comparison]:
    """Votes cast in this lab, the ones rater quality and position bias can judge: imported comparisons have
    no rater who saw them and no known display order, so they are left out of both."""
    return [c for c in counted_votes(comparisons) if not is_imported(c)]


def label(c: Comparison) -> str:
    """What a vote says about its item, comparable across raters: the winning answer's text, 'tie' or 'both-bad'."""
    if c.verdict in ("tie", "both-bad"):
        return c.verdict
    best = min(c.ranks)
    winners = sorted(" ".join(c.candidates[i]["text"].split()) for i, r in enumerate(c.ranks) if r == best)
    return winners[0] if len(winners) == 1 else "tie"


def _votes_by_item(comparisons: list[Comparison]) -> dict[str, dict[str, str]]:
    """item → annotator → label (an annotator's latest vote on the item counts)."""
    items: dict[str, dict[str, str]] = defaultdict(dict)
    for c in rated_here(comparisons):
        if c.annotator:
            items[c.item][c.annotator] = label(c)
    return {item: votes for item, votes in items.items() if len(votes) >= 2}


def agreement(comparisons: list[Comparison]) -> dict:
    """Percent agreement over rater pairs on shared items, Cohen's kappa per rater pair, Fleiss' kappa overall."""
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    items = _votes_by_item(comparisons)
    same = [a == b for votes in items.values() for a, b in combinations(votes.values(), 2)]
    pairs = defaultdict(lambda: ([], []))
    for votes in items.values():
        for x, y in combinations(sorted(votes), 2):
            pairs[(x, y)][0].append(votes[x])
            pairs[(x, y)][1].append(votes[y])
    cohen = {
        pair: float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 else 1.0
        for pair, (a, b) in pairs.items()
        if len(a) >= 2
    }
    fleiss = None
    counts = Counter(len(v) for v in items.values())
    if counts:
        raters = counts.most_common(1)[0][0]  # Fleiss' kappa needs the same number of raters per item
        same_size = [list(v.values()) for v in items.values() if len(v) == raters]
        codes = {value: n for n, value in enumerate({x for row in same_size for x in row})}
        if len(same_size) >= 2 and len(codes) > 1:
            table, _ = aggregate_raters(np.array([[codes[x] for x in row] for row in same_size]))
            fleiss = float(fleiss_kappa(table))
    return {"items": len(items), "percent": float(np.mean(same)) if same else None, "cohen": cohen, "fleiss": fleiss}


def annotator_report(comparisons: list[Comparison], min_items: int = 5, margin: float = 0.25) -> pd.DataFrame:
    """Per annotator: votes, items shared with others, agreement with the others' majority, and a flag.

    An annotator is flagged when, over at least `min_items` shared items, their agreement with the
    majority of the other raters is more than `margin` below the median annotator's: a careless or
    adversarial rater, whose votes the export can leave out.
    """
    items = _votes_by_item(comparisons)
    votes = Counter(c.annotator for c in rated_here(comparisons))
    hits: dict[str, list[bool]] = defaultdict(list)
    for item_votes in items.values():
        for annotator, value in item_votes.items():
            others = Counter(v for a, v in item_votes.items() if a != annotator).most_common()
            if len(others) == 1 or (len(others) > 1 and others[0][1] > others[1][1]):  # a clear majority
                hits[annotator].append(value == others[0][0])
    rows = [
        {
            "annotator": name,
            "votes": votes[name],
            "shared items": len(hits[name]),
            "agreement with majority": float(np.mean(hits[name])) if hits[name] else None,
        }
        for name in sorted(votes)
    ]
    frame = pd.DataFrame(rows, columns=ANNOTATOR_COLUMNS[:-1])
    scored = frame[frame["shared items"] >= min_items]
    median = scored["agreement with majority"].median() if len(scored) else None
    frame["flagged"] = [
        bool(
            median is not None and row["shared items"] >= min_items and row["agreement with majority"] < median - margin
        )
        for _, row in frame.iterrows()
    ]
    return frame


def position_bias(comparisons: list[Comparison]) -> dict:
    """How often the answer shown first (left) wins a decisive vote cast here; 0.5 is no bias."""
    decisive = [c for c in rated_here(comparisons) if c.verdict == "ranked" and c.ranks.count(min(c.ranks)) == 1]
    first_wins = sum(c.ranks[c.shown[0]] == min(c.ranks) for c in decisive)
    chance = float(np.mean([1 / len(c.candidates) for c in decisive])) if decisive else None
    return {
        "decisive": len(decisive),
        "first_wins": first_wins,
        "rate": first_wins / len(decisive) if decisive else None,
        "chance": chance,
    }


def battles(comparisons: list[Comparison]) -> pd.DataFrame:
    """One row per pair of answers from different models: model_a, model_b, winner ('a', 'b' or 'tie')."""
    rows = []
    for c in comparisons:
        if c.verdict not in ("ranked", "tie"):
            continue
        for i, j in combinations(range(len(c.candidates)), 2):
            a, b = c.candidates[i]["model"], c.candidates[j]["model"]
            if a == b:
                continue
            winner = "tie" if c.ranks[i] == c.ranks[j] else ("a" if c.ranks[i] < c.ranks[j] else "b")
            rows.append({"model_a": a, "model_b": b, "winner": winner})
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def _scores(frame: pd.DataFrame, models: list[str]) -> np.ndarray:
    """Bradley-Terry strengths on an Elo-like scale (400·log10 odds, mean 1000).

    Each decisive battle is one row (+1 for model_a, −1 for model_b; label: did a win); a tie is two
    half-weight rows, one won by each side, as Chatbot Arena counts them. Every row also appears
    mirrored (b against a), which leaves the fit unchanged and always gives both labels.
    """
    from sklearn.linear_model import LogisticRegression

    index = {m: n for n, m in enumerate(models)}
    x, y, weight = [], [], []
    for a, b, winner in frame[["model_a", "model_b", "winner"]].itertuples(index=False):
        row = np.zeros(len(models))
        row[index[a]], row[index[b]] = 1.0, -1.0
        outcomes = [(1.0, 0.5), (0.0, 0.5)] if winner == "tie" else [(1.0 if winner == "a" else 0.0, 1.0)]
        for won, w in outcomes:
            x += [row, -row]
            y += [won, 1.0 - won]
            weight += [w, w]
    model = LogisticRegression(fit_intercept=False, C=1e4, max_iter=1000)
    model.fit(np.array(x), np.array(y), sample_weight=np.array(weight))
    strengths = model.coef_[0] * 400 / np.log(10)
    return strengths - strengths.mean() + 1000


def leaderboard(frame: pd.DataFrame, rounds: int = 200, seed: int = 0) -> pd.DataFrame:
    """Models ranked by Bradley-Terry score, with 95% bootstrap intervals over the battles."""
    if frame.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    models = sorted(set(frame["model_a"]) | set(frame["model_b"]))
    rng = np.random.default_rng(seed)
    boots = [_scores(frame.iloc[rng.integers(0, len(frame), len(frame))], models) for _ in range(rounds)]
    low, high = np.percentile(np.array(boots), [2.5, 97.5], axis=0)
    counts = Counter(frame["model_a"]) + Counter(frame["model_b"])
    table = pd.DataFrame(
        {
            "model": models,
            "score": _scores(frame, models),
            "low": low,
            "high": high,
            "battles": [counts[m] for m in models],
        }
    )
    return table.sort_values("score", ascending=False, ignore_index=True).round({"score": 1, "low": 1, "high": 1})


def leaderboard_figure(board: pd.DataFrame):
    """The scores as dots with their 95% intervals, best on top (a plotly figure); None before any battle."""
    import plotly.graph_objects as go

    if board.empty:
        return None
    fig = go.Figure(
        go.Scatter(
            x=board["score"],
            y=board["model"],
            mode="markers",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": board["high"] - board["score"],
                "arrayminus": board["score"] - board["low"],
            },
            marker={"size": 10, "color": "#ea580c"},
        )
    )
    fig.update_layout(
        height=80 + 40 * len(board),
        margin={"l": 10, "r": 10, "t": 10, "b": 30},
        yaxis={"autorange": "reversed"},
        xaxis_title="score (Elo scale)",
    )
    return fig


class Leaderboard(pd.DataFrame):
    """`Lab.leaderboard()`: the table as a DataFrame, shown in a notebook with its chart below it."""

    def figure(self):
        return leaderboard_figure(self)

    def _ipython_display_(self) -> None:
        from lab.notebook import show

        show(self._repr_html_(), self.figure())


def win_rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Share of battles the row model won against the column model (ties count half).

    The row labels are a first column named "model" (not the index), since a table on screen drops the index.
    """
    models = sorted(set(frame["model_a"]) | set(frame["model_b"]))
    wins = pd.DataFrame(0.0, index=models, columns=models)
    games = pd.DataFrame(0.0, index=models, columns=models)
    for a, b, winner in frame[["model_a", "model_b", "winner"]].itertuples(index=False):
        score = {"a": 1.0, "b": 0.0, "tie": 0.5}[winner]
        wins.loc[a, b] += score
        wins.loc[b, a] += 1 - score
        games.loc[a, b] += 1
        games.loc[b, a] += 1
    rates = (wins / games.replace(0, np.nan)).round(3)
    return rates.rename_axis("model").reset_index()


@dataclass(frozen=True)
class ArenaReport:
    """Everything the Arena shows about the live votes of a workspace; shared between callers, so never mutated."""

    votes: int  # counted votes: every comparison but skips, imported ones included
    imported: int  # of those, read from preference files
    skipped: int
    verdicts: dict[str, int]  # verdict → how many counted votes gave it
    pairs: int  # preference pairs the votes export as
    battles: pd.DataFrame
    leaderboard: pd.DataFrame
    win_rates: pd.DataFrame  # only the "model" column until two different models met
    agreement: dict
    position_bias: dict
    annotators: pd.DataFrame

    def summary(self) -> str:
        """One Markdown paragraph whose counts are the ones the tables and the export use, saying what is counted."""
        verdicts = ", ".join(f"{n} {v}" for v, n in self.verdicts.items()) or "none yet"
        lines = [
            f"**{self.votes} votes** ({verdicts}) → **{self.pairs} preference pairs**; "
            f"{len(self.battles)} battles between different models."
        ]
        if self.skipped:
            lines.append(f"{self.skipped} skipped prompts are not counted as votes.")
        if self.imported:
            lines.append(
                f"{self.imported} of the votes are imported: they count in the pairs, but not per annotator, in "
                "agreement or in position bias, since who rated them and the order the answers were shown in "
                "are not known."
            )
        return "  \n".join(lines)

    @property
    def flagged(self) -> list[str]:
        """Annotators whose agreement with the majority is far below the others'."""
        return self.annotators.loc[self.annotators["flagged"], "annotator"].tolist()


def votes_version(store: Store) -> tuple:
    """A key that changes whenever a vote is added or withdrawn (withdrawn votes stay in the table, marked)."""
    with store._read() as db:  # the Store has no public query for this; one read, no write
        row = db.execute("SELECT count(*), count(deleted_at), max(id), max(deleted_at) FROM comparisons").fetchone()
    return tuple(row)


_reports: dict[Path, tuple[tuple, ArenaReport]] = {}  # workspace database → (votes_version, its report)
_reports_lock = threading.Lock()


def arena_report(store: Store) -> ArenaReport:
    """The Arena's figures for the live votes; the bootstrap refits only after the votes changed."""
    version = votes_version(store)  # read before the votes: a vote cast in between only makes the next call refit
    with _reports_lock:
        cached = _reports.get(store.path)
    if cached and cached[0] == version:
        return cached[1]
    comparisons = store.list_comparisons()
    votes = counted_votes(comparisons)
    frame = battles(comparisons)
    report = ArenaReport(
        votes=len(votes),
        imported=sum(is_imported(c) for c in votes),
        skipped=len(comparisons) - len(votes),
        verdicts=dict(Counter(c.verdict for c in votes).most_common()),
        pairs=len(preference_rows(comparisons)),
        battles=frame,
        leaderboard=leaderboard(frame),
        win_rates=win_rates(frame),
        agreement=agreement(comparisons),
        position_bias=position_bias(comparisons),
        annotators=annotator_report(comparisons),
    )
    with _reports_lock:
        _reports[store.path] = (version, report)
    return report
