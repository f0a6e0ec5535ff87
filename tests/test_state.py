"""Durable state: the dedupe record survives a restart and stays bounded, a generation at a time; state files of
earlier versions keep working."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

import ulid

from exporter import clock
from exporter.attribution.pending import PendingStore
from exporter.attribution.signals import SignalStore
from exporter.dedupe import Dedupe
from exporter.records import Signal
from exporter.state import StateDB
from tests.support.classified import make_classified


def test_run_is_claimed_once_even_across_a_restart(tmp_path: Path) -> None:
    db = StateDB(tmp_path)
    dedupe = Dedupe(db, max_entries=1000, max_age_seconds=3600)
    with db.transaction() as tx:
        assert dedupe.claim(tx, "run-1", 1000)
        assert not dedupe.claim(tx, "run-1", 1001)
    db.close()
    db = StateDB(tmp_path)
    dedupe = Dedupe(db, max_entries=1000, max_age_seconds=3600)
    with db.transaction() as tx:
        assert not dedupe.claim(tx, "run-1", 2000)
    db.close()


def test_a_rolled_back_claim_is_not_remembered(tmp_path: Path) -> None:
    db = StateDB(tmp_path)
    dedupe = Dedupe(db, max_entries=1000, max_age_seconds=3600)
    try:
        with db.transaction() as tx:
            dedupe.claim(tx, "run-1", 1000)
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    with db.transaction() as tx:
        assert dedupe.claim(tx, "run-1", 1000)


def claims(db: StateDB, dedupe: Dedupe, run_ids: Iterable[str], now_ms: int) -> list[bool]:
    with db.transaction() as tx:
        return [dedupe.claim(tx, run_id, now_ms) for run_id in run_ids]


def test_the_newest_max_entries_are_remembered_and_older_run_ids_forgotten_a_generation_at_a_time(tmp_path: Path) -> None:
    db = StateDB(tmp_path)
    dedupe = Dedupe(db, max_entries=100, max_age_seconds=3600)
    now_ms = clock.now_ms()
    first = [f"run-{i}" for i in range(150)]
    assert all(claims(db, dedupe, first, now_ms))
    assert dedupe.prune(now_ms) == 0  # the generation is full: it becomes the previous one, nothing forgotten
    assert dedupe.size() == 150
    assert not any(claims(db, dedupe, first, now_ms))  # still remembered, and not counted again
    assert dedupe.prune(now_ms) == 0  # the new generation is far from full
    newer = [f"newer-{i}" for i in range(100)]
    assert all(claims(db, dedupe, newer, now_ms))
    assert dedupe.prune(now_ms) == 150  # full again: the first generation goes, whole
    assert dedupe.size() == 100
    assert not any(claims(db, dedupe, newer, now_ms))
    assert all(claims(db, dedupe, first[:3], now_ms))  # forgotten: a redelivery now counts again


def test_a_run_id_is_remembered_at_least_max_age_and_at_most_twice_that(tmp_path: Path) -> None:
    start_ms = clock.now_ms()
    db = StateDB(tmp_path)
    dedupe = Dedupe(db, max_entries=1000, max_age_seconds=10, now_ms=lambda: start_ms)  # the first generation begins
    assert claims(db, dedupe, ["run-1"], start_ms) == [True]
    for now_ms in (start_ms + 9_999, start_ms + 10_000, start_ms + 19_999):
        dedupe.prune(now_ms)
        assert claims(db, dedupe, ["run-1"], now_ms) == [False], now_ms
    assert dedupe.prune(start_ms + 20_000) == 1
    assert claims(db, dedupe, ["run-1"], start_ms + 20_000) == [True]


def test_a_record_kept_in_one_table_by_an_earlier_version_keeps_its_run_ids_and_drops_its_time_index(tmp_path: Path) -> None:
    now_ms = clock.now_ms()
    db = StateDB(tmp_path)
    db.ensure_schema(
        "CREATE TABLE seen_runs (run_id TEXT PRIMARY KEY, seen_at_ms INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE INDEX seen_runs_by_time ON seen_runs (seen_at_ms);"
    )
    with db.transaction() as tx:
        tx.executemany("INSERT INTO seen_runs VALUES (?, ?)", [("old-1", now_ms - 5_000), ("old-2", now_ms - 1_000)])
    db.close()
    db = StateDB(tmp_path)
    dedupe = Dedupe(db, max_entries=1000, max_age_seconds=10)
    assert claims(db, dedupe, ["old-1", "old-2"], now_ms) == [False, False]
    with db.reading() as conn:
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "seen_runs_by_time" not in indexes
    db.close()
    db = StateDB(tmp_path)  # after a restart: the generation is dated by its oldest run id, seen 5 s before
    dedupe = Dedupe(db, max_entries=1000, max_age_seconds=10)
    assert dedupe.prune(now_ms + 5_000) == 0  # 10 s old: it becomes the previous generation
    assert dedupe.prune(now_ms + 14_999) == 0
    assert claims(db, dedupe, ["old-1", "old-2"], now_ms + 14_999) == [False, False]
    assert dedupe.prune(now_ms + 15_000) == 2
    assert claims(db, dedupe, ["old-1", "old-2"], now_ms + 15_000) == [True, True]
    db.close()


def test_runs_held_by_an_earlier_version_are_kept_and_new_ones_are_found_by_function(tmp_path: Path) -> None:
    """Held runs from a version that stored no function id still come out when due; runs held now are found by function."""
    state = StateDB(tmp_path)
    earlier = make_classified("01JDJKGTGDVV4DTXHY6XYB7BKK", function_id="app-fn").cancellation
    with state.transaction() as tx:
        tx.execute("CREATE TABLE pending (run_id TEXT PRIMARY KEY, due_at_ms INTEGER NOT NULL, record TEXT NOT NULL) WITHOUT ROWID")
        tx.execute("INSERT INTO pending VALUES (?, ?, ?)", (earlier.run_id, 100, json.dumps(dataclasses.asdict(earlier))))
    pending = PendingStore(state)
    now = make_classified("01JDJKGTGDVV4DTXHY6XYB7BKM", function_id="app-fn").cancellation
    with state.transaction() as tx:
        pending.hold(tx, now, 200)
        assert [held.run_id for held in pending.of_functions(tx, {"app-fn"}, 10)] == [now.run_id]
        assert [held.run_id for held in pending.due(tx, 1000, 10)] == [earlier.run_id, now.run_id]
    state.close()


def test_signals_kept_by_an_earlier_version_by_their_ts_are_found_by_when_inngest_received_them(tmp_path: Path) -> None:
    received_ms = clock.now_ms()
    db = StateDB(tmp_path)
    db.ensure_schema(
        "CREATE TABLE signals (id INTEGER PRIMARY KEY, name TEXT NOT NULL, ts_ms INTEGER NOT NULL, event TEXT NOT NULL);"
        "CREATE INDEX signals_by_name_time ON signals (name, ts_ms);"
    )
    inngest_id = {"name": "stop", "id": str(ulid.ULID.from_timestamp(received_ms / 1000)), "ts": received_ms - 60_000}
    own_id = {"name": "stop", "id": "stop-7", "ts": received_ms - 30_000}
    with db.transaction() as tx:
        tx.executemany(
            "INSERT INTO signals (name, ts_ms, event) VALUES (?, ?, ?)",
            [("stop", event["ts"], json.dumps(event)) for event in (inngest_id, own_id)],
        )
    db.close()
    db = StateDB(tmp_path)
    signals = SignalStore(db, max_entries=10, max_age_seconds=3600)
    with db.transaction() as tx:
        assert signals.received(tx, "stop", received_ms - 1, received_ms) == ([inngest_id], False)  # its id's time
        assert signals.received(tx, "stop", received_ms - 30_001, received_ms - 1) == ([own_id], False)  # its ts
        signals.record(tx, Signal("stop", received_ms + 1, {"name": "stop"}))
    assert signals.prune(received_ms + 3_600_000) == 1  # the upgraded rows age by their receipt too
    db.close()
