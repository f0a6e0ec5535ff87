"""First-version attribution: timeouts and cancel signals, and `unknown` whenever evidence is missing or split."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from exporter.classify import EvidenceClassifier
from exporter.config import parse_config
from exporter.records import Cancellation, Signal, Source
from exporter.signals import SignalStore
from exporter.state import StateDB

SCHEDULED = 1_700_000_000_000
CONFIG = {
    "functions": {
        "app-import": {
            "cancel_on": [
                {"event": "import/cancelled", "if": "async.data.importId == event.data.importId", "timeout": "1h"}
            ],
            "timeouts": {"start": "30s", "finish": "2h"},
        },
        "app-plain": {"cancel_on": [{"event": "plain/stop"}]},
    }
}


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDB]:
    db = StateDB(tmp_path)
    yield db
    db.close()


def cancellation(function_id: str, age_s: float, import_id: str = "i-1") -> Cancellation:
    trigger = {"name": "import/requested", "id": "t", "ts": SCHEDULED, "data": {"importId": import_id}}
    return Cancellation(
        run_id="run", function_id=function_id, event_name="inngest/function.cancelled", event_id=None,
        cancelled_at_ms=SCHEDULED + int(age_s * 1000), scheduled_at_ms=SCHEDULED, trigger=trigger,
        received_at_ms=SCHEDULED + int(age_s * 1000),
    )


def classify(state: StateDB, item: Cancellation, signals: list[tuple[str, float, dict[str, Any]]] = [], config: dict[str, Any] = CONFIG) -> tuple[Source, list[str]]:
    errors: list[str] = []
    store = SignalStore(state, max_entries=1000, max_age_seconds=86400 * 30)
    classifier = EvidenceClassifier(parse_config(config, "test"), store, errors.append)
    with state.transaction() as tx:
        for name, offset_s, data in signals:
            store.record(tx, Signal(name, SCHEDULED + int(offset_s * 1000), {"name": name, "data": data}))
        return classifier.classify(tx, item), errors


def test_unconfigured_function_is_unknown(state: StateDB) -> None:
    assert classify(state, cancellation("other-fn", 7200))[0] is Source.UNKNOWN


def test_finish_and_start_timeouts(state: StateDB) -> None:
    assert classify(state, cancellation("app-import", 7200.2))[0] is Source.TIMEOUT
    assert classify(state, cancellation("app-import", 31))[0] is Source.TIMEOUT
    assert classify(state, cancellation("app-import", 600))[0] is Source.UNKNOWN


def test_matching_signal_before_the_cancellation_means_event(state: StateDB) -> None:
    signals = [("import/cancelled", 300, {"importId": "i-1"})]
    assert classify(state, cancellation("app-import", 600), signals)[0] is Source.EVENT


def test_signal_for_another_run_does_not_count(state: StateDB) -> None:
    signals = [("import/cancelled", 300, {"importId": "someone-else"})]
    assert classify(state, cancellation("app-import", 600), signals)[0] is Source.UNKNOWN


def test_signal_after_the_rule_timeout_or_after_the_cancellation_does_not_count(state: StateDB) -> None:
    assert classify(state, cancellation("app-import", 5000), [("import/cancelled", 3700, {"importId": "i-1"})])[0] is Source.UNKNOWN
    assert classify(state, cancellation("app-import", 600), [("import/cancelled", 900, {"importId": "i-1"})])[0] is Source.UNKNOWN


def test_rule_without_expression_matches_any_signal_of_its_name(state: StateDB) -> None:
    assert classify(state, cancellation("app-plain", 60), [("plain/stop", 10, {})])[0] is Source.EVENT


def test_evidence_for_two_sources_is_not_claimed(state: StateDB) -> None:
    signals = [("import/cancelled", 20, {"importId": "i-1"})]
    assert classify(state, cancellation("app-import", 30), signals)[0] is Source.UNKNOWN


def test_failing_expression_is_no_match_and_reported(state: StateDB) -> None:
    # the trigger has no importId: evaluation fails instead of comparing
    item = cancellation("app-import", 600)
    item = Cancellation(**{**{f: getattr(item, f) for f in item.__dataclass_fields__}, "trigger": {"data": {}}})
    source, errors = classify(state, item, [("import/cancelled", 300, {"importId": "i-1"})])
    assert source is Source.UNKNOWN and errors == ["app-import"]
