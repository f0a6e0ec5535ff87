"""Durable state: the dedupe record survives a restart and stays bounded."""

from __future__ import annotations

from pathlib import Path

from exporter.dedupe import Dedupe
from exporter.state import StateDB


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


def test_record_is_bounded_in_age_and_size(tmp_path: Path) -> None:
    db = StateDB(tmp_path)
    dedupe = Dedupe(db, max_entries=100, max_age_seconds=10)
    with db.transaction() as tx:
        for i in range(150):
            dedupe.claim(tx, f"run-{i}", 100_000 + i)
        dedupe.claim(tx, "old", 1)
    dedupe.prune(now_ms=100_200)
    assert dedupe.size() == 100
    with db.transaction() as tx:
        assert dedupe.claim(tx, "old", 100_300)  # aged out
        assert dedupe.claim(tx, "run-0", 100_300)  # oldest, pushed out by size
        assert not dedupe.claim(tx, "run-149", 100_300)
