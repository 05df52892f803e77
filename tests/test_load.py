"""A short load test in the suite: participants vote at once over HTTP on the real app (logged in, each with its own
gradio_client session) while one more session has answers generated; no request fails, every vote the app
acknowledged is in the database under its voter, and no item gets more votes than asked for (bench/load.py is the
minute-long version)."""

from __future__ import annotations

from bench.load import (
    App,
    Storm,
    made_on_demand,
    missing_votes,
    over_voted,
    prepare_pool,
    wait_for_model,
    write_logins,
)


def test_six_participants_vote_at_once_while_one_generates_and_no_vote_is_lost(tmp_path, tiny_model_dir):
    logins = write_logins(tmp_path / "logins", 6)
    queue = prepare_pool(tmp_path / "workspace", 150, str(tiny_model_dir), votes_per_item=2)
    app = App(tmp_path / "workspace", str(tiny_model_dir), tmp_path / "logins").start()
    try:
        wait_for_model(app.url, ("user01", logins["user01"]), timeout=60)
        storm = Storm(app.url, logins, queue).run(seconds=8)
    finally:
        app.stop()
    assert storm.errors == []
    assert set(storm.acknowledged.values()) == set(logins)  # every participant got items and voted on them
    assert missing_votes(tmp_path / "workspace", storm.acknowledged) == []
    assert over_voted(tmp_path / "workspace", queue) == 0  # the queue handed each item's two slots to two people
    assert storm.generation_s, "the generating session never got its answers"
    assert made_on_demand(tmp_path / "workspace", storm.acknowledged) == 0  # no voter waited for the model
