"""Discovery of the functions' definitions: what Inngest's answers map to, how the YAML overrides them, what is kept.

The answers are those recorded from the real server (tests/fixtures/real-server,
rewritten by tests/test_real_discovery.py), served over HTTP by a stand-in for its
REST API; the whole loop against the real server is in tests/test_real_discovery.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from click.testing import CliRunner
from flask import Flask, jsonify
from prometheus_client import CollectorRegistry

from exporter import clock
from exporter.attribution.definition_store import DefinitionStore
from exporter.attribution.definitions import Definitions, Unmappable, function_config, parse_functions
from exporter.attribution.discovery import Discovery
from exporter.attribution.effective import definitions_yaml, effective_config
from exporter.cli import main
from exporter.config import Config, parse_config
from exporter.health import HealthMetrics
from exporter.ingress_inngest import APP_ID
from exporter.settings import load_settings
from tests.conftest import free_port
from tests.support import inngest_test_app as shop
from tests.support.http import serve_in_thread
from tests.support.inngest_driver import InngestDriver
from tests.support.payloads import SIGNING_KEY
from tests.support.waiting import eventually

FIXTURES = Path(__file__).parent / "fixtures" / "real-server"
FUNCTIONS = json.loads((FIXTURES / "app-functions-v1.json").read_text())
APPS = json.loads((FIXTURES / "apps-v2.json").read_text())


def shop_functions() -> list[dict[str, Any]]:
    return [item for item in FUNCTIONS if item["id"].startswith(f"{shop.APP_ID}-")]


def test_the_real_server_s_definitions_map_to_what_a_user_declares_for_the_shop() -> None:
    discovered, skipped = parse_functions(shop_functions())
    assert skipped == {}
    declared = parse_config(shop.EXPORTER_CONFIG, "shop").functions
    for function_id, entry in declared.items():
        found = discovered[function_id]
        for field in entry.model_fields_set:
            assert getattr(found, field) == getattr(entry, field), (function_id, field)
    # the trigger's `expression` is the exporter's `if`
    recorder = discovered[f"{shop.APP_ID}-{shop.RECORDER}"]
    assert [trigger.if_ for trigger in recorder.triggers] == [None, f"event.data.function_id != '{shop.APP_ID}-{shop.RECORDER}'"]


def test_a_listing_wrapped_in_data_reads_the_same() -> None:
    assert parse_functions({"data": shop_functions()}) == parse_functions(shop_functions())


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"triggers": [{"event": "a"}], "newWayToCancel": {"after": "1h"}}, "unrecognised setting(s) newWayToCancel"),
        ({"triggers": [{"event": "a"}], "cancel": [{"event": "b", "if": "event.data.x =="}]}, "cancel_on.0.if"),
        ({"triggers": [{"event": "a", "schedule": "x"}]}, "triggers: unrecognised schedule"),
        ({"triggers": [{"event": "a"}], "singleton": {"mode": "evict"}}, "singleton.mode"),
        ({"triggers": [{"event": "a"}], "timeouts": {"start": "soon"}}, "timeouts.start"),
    ],
    ids=["unknown-setting", "bad-expression", "unknown-trigger", "unknown-singleton-mode", "bad-duration"],
)
def test_a_definition_not_understood_is_left_out_saying_why(config: dict[str, Any], problem: str) -> None:
    with pytest.raises(Unmappable, match=problem.replace("(", r"\(").replace(")", r"\)")):
        function_config(config)
    _, skipped = parse_functions([{"id": "app-f", "config": config}])
    assert list(skipped) == ["app-f"]


def test_cron_triggers_and_go_durations_are_read() -> None:
    fn = function_config({
        "triggers": [{"cron": "0 * * * *"}], "timeouts": {"start": "1h30m0s", "finish": "90m"},
        "singleton": {"key": "event.data.a", "mode": "CANCEL"}, "concurrency": [{"limit": 1}],
    })
    assert fn.cron_triggered
    assert (fn.timeouts.start, fn.timeouts.finish) == (5400.0, 5400.0)
    assert fn.cancels_singleton


def test_the_config_overrides_a_discovered_function_field_by_field() -> None:
    discovered, _ = parse_functions(shop_functions())
    cancel_on = f"{shop.APP_ID}-{shop.CANCEL_ON}"
    declared = parse_config({
        "labels": {"team": "shop"},
        "functions": {cancel_on: {"timeouts": {"finish": "5m"}}, "other-app-declared-only": {"batch_events": True}},
    }, "test")
    effective = effective_config(declared, discovered).functions
    assert effective[cancel_on].timeouts.finish == 300.0
    assert effective[cancel_on].cancel_on == discovered[cancel_on].cancel_on  # not written in the YAML: discovered
    assert effective["other-app-declared-only"].batch_events
    assert set(effective) == set(discovered) | {"other-app-declared-only"}


def test_an_override_that_cannot_combine_with_the_discovered_function_uses_the_config_s_entry() -> None:
    discovered, _ = parse_functions(shop_functions())
    cancel_on = f"{shop.APP_ID}-{shop.CANCEL_ON}"
    declared = parse_config({"functions": {cancel_on: {"batch_events": True}}}, "test")
    assert effective_config(declared, discovered).functions[cancel_on] == declared.functions[cancel_on]
    assert "does not combine with it" in definitions_yaml(declared, discovered)


def test_the_definitions_yaml_says_where_each_function_comes_from_and_passes_check_config() -> None:
    discovered, _ = parse_functions(shop_functions())
    declared = parse_config({"functions": {f"{shop.APP_ID}-{shop.PLAIN}": {"timeouts": {"start": "1m"}}, "x-y": {}}}, "t")
    text = definitions_yaml(declared, discovered)
    assert "# discovered, overridden by the config: timeouts" in text
    assert "# declared in the config" in text
    assert "    timeouts:\n      start: 1m\n" in text  # durations as the file writes them, not 60.0
    assert "      finish: 4s\n" in text
    assert parse_config_text(text).functions == effective_config(declared, discovered).functions


def parse_config_text(text: str) -> Config:
    return parse_config(yaml.safe_load(text), "definitions")


def test_the_store_keeps_a_reading_across_restarts_and_ignores_a_damaged_one(tmp_path: Path) -> None:
    functions, _ = parse_functions(shop_functions())
    store = DefinitionStore(tmp_path)
    assert store.load() is None
    store.save(Definitions(functions, {"app-x": "why"}, "http://app/api/inngest"))
    assert DefinitionStore(tmp_path).load() == Definitions(functions, {"app-x": "why"}, "http://app/api/inngest")
    store.path.write_text("{not json")
    assert store.load() is None


class StandIn:
    """Inngest's REST API for discovery: `GET /v2/apps` and `GET /v1/apps/{app}/functions`, answering `apps`."""

    def __init__(self) -> None:
        self.apps: dict[str, list[dict[str, Any]]] = {}
        self.failing = False
        self.readings = 0
        self.port = free_port()
        app = Flask("stand-in")

        @app.get("/v2/apps")
        def apps() -> Any:
            self.readings += 1
            if self.failing:
                return jsonify(error="down"), 503
            listed = [{**APPS["data"][0], "id": name, "latestSync": {"url": f"http://{name}/api/inngest"}} for name in self.apps]
            return jsonify(data=listed, page={"limit": 100})

        @app.get("/v1/apps/<name>/functions")
        def functions(name: str) -> Any:
            return jsonify(self.apps.get(name, []))

        self._server, self._thread = serve_in_thread(app, self.port, "stand-in")

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    api = StandIn()
    yield api
    api.close()


def discovery(
    stand_in: StandIn, state_dir: Path, applied: list[Config], declared: Config = Config(), interval: str = "1m"
) -> Discovery:
    settings = load_settings({
        "INNGEST_SIGNING_KEY": SIGNING_KEY, "INNGEST_API_BASE_URL": f"http://127.0.0.1:{stand_in.port}",
        "EXPORTER_STATE_DIR": str(state_dir), "EXPORTER_DISCOVERY_INTERVAL": interval,
    })
    return Discovery(settings, declared, DefinitionStore(state_dir), HealthMetrics(CollectorRegistry()), APP_ID, applied.append)


def test_discovery_applies_changes_logs_each_and_keeps_the_last_good_reading(
    stand_in: StandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    functions = shop_functions()
    stand_in.apps = {shop.APP_ID: functions, APP_ID: [{"id": f"{APP_ID}-record-cancellation", "config": {"triggers": []}}]}
    applied: list[Config] = []
    first = discovery(stand_in, tmp_path, applied)
    assert first.refresh()
    assert set(applied[-1].functions) == {item["id"] for item in functions}  # not the exporter's own functions
    assert first.definitions.own_url == f"http://{APP_ID}/api/inngest"
    assert f"function definitions: added {shop.APP_ID}-{shop.CANCEL_ON}" in caplog.text

    stand_in.apps[shop.APP_ID] = [
        {**item, "config": {**item["config"], "timeouts": {"finish": "9s"}}} if item["id"].endswith(shop.FINISH_TIMEOUT) else item
        for item in functions if item["id"] != f"{shop.APP_ID}-{shop.PLAIN}"
    ]
    assert first.refresh()
    assert f"function definitions: gone {shop.APP_ID}-{shop.PLAIN}" in caplog.text
    assert f"function definitions: changed {shop.APP_ID}-{shop.FINISH_TIMEOUT}: timeouts" in caplog.text
    count = len(applied)
    assert first.refresh() and len(applied) == count  # nothing changed: nothing applied

    stand_in.failing = True
    assert not first.refresh()
    assert len(applied) == count and first.definitions.functions  # the last good definitions stay
    # a restart while Inngest cannot be read: the saved reading is used from the start
    again = discovery(stand_in, tmp_path, [])
    assert not again.refresh()
    assert again.config.functions == first.config.functions


def test_serve_runs_without_inngest_with_discovery_on(make_app: Any) -> None:
    """Discovery failing never stops ingestion: the exporter answers and counts with the YAML alone."""
    app = make_app({"functions": {"a-f": {}}}, EXPORTER_DISCOVERY="on")
    assert app.test_client().get("/readyz").status_code == 200
    assert app.extensions["exporter"].config.functions.keys() == {"a-f"}


def test_the_definitions_command_prints_the_saved_definitions_when_inngest_cannot_be_read(tmp_path: Path) -> None:
    functions, _ = parse_functions(shop_functions())
    DefinitionStore(tmp_path).save(Definitions(functions))
    env = {"INNGEST_SIGNING_KEY": SIGNING_KEY, "INNGEST_API_BASE_URL": "http://127.0.0.1:9", "EXPORTER_STATE_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["definitions"], env=env)
    assert result.exit_code == 0, result.output
    assert parse_config_text(result.stdout).functions == functions
    assert "showing the definitions last saved" in result.stderr


@pytest.mark.parametrize(
    ("env", "on"),
    [({"INNGEST_SIGNING_KEY": SIGNING_KEY}, True), ({"INNGEST_DEV": "1"}, False),
     ({"INNGEST_DEV": "1", "EXPORTER_DISCOVERY": "on"}, True), ({"INNGEST_SIGNING_KEY": SIGNING_KEY, "EXPORTER_DISCOVERY": "off"}, False)],
)
def test_discovery_is_on_in_production_by_default_and_off_in_development(env: dict[str, str], on: bool) -> None:
    assert load_settings(env).discovers is on


def test_a_discovered_definition_is_trusted_only_for_runs_scheduled_while_it_was_known_to_hold(
    stand_in: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inngest gives a run the definition its function had when the run was scheduled: one read before and after."""
    now = [1_000_000]
    monkeypatch.setattr(clock, "now_ms", lambda: now[0])
    functions = shop_functions()
    stand_in.apps = {shop.APP_ID: functions}
    declared = parse_config({"functions": {"other-declared": {}}}, "t")
    found = discovery(stand_in, tmp_path, [], declared)
    timed = f"{shop.APP_ID}-{shop.FINISH_TIMEOUT}"
    assert found.refresh()
    now[0] = 1_060_000
    assert found.refresh()
    assert found.holds_for(timed, 1_030_000)
    assert not found.holds_for(timed, 999_000)  # scheduled before it was first read: perhaps another definition
    assert not found.holds_for(timed, 1_070_000)  # scheduled after the last reading: perhaps changed since
    assert not found.holds_for(timed, None)
    assert found.holds_for("other-declared", 1)  # the config's own word

    stand_in.apps[shop.APP_ID] = [
        {**item, "config": {**item["config"], "timeouts": {"finish": "9s"}}} if item["id"] == timed else item for item in functions
    ]
    now[0] = 1_120_000
    assert found.refresh()
    assert not found.holds_for(timed, 1_030_000)  # changed: no longer known for runs scheduled before this reading
    assert found.holds_for(f"{shop.APP_ID}-{shop.PLAIN}", 1_030_000)  # unchanged


def test_a_sync_registers_the_exporter_s_app_with_the_discovered_functions_signals(stand_in: StandIn, make_app: Any) -> None:
    """Inngest syncing the exporter gets the triggers of the definitions read, none declared in the config."""
    stand_in.apps = {shop.APP_ID: shop_functions()}
    app = make_app({}, EXPORTER_DISCOVERY="on", INNGEST_API_BASE_URL=f"http://127.0.0.1:{stand_in.port}")
    eventually(lambda: bool(app.extensions["exporter"].config.evidence_names), timeout=10)
    port = free_port()
    server, thread = serve_in_thread(app, port, "exporter")
    try:
        synced = InngestDriver(f"http://127.0.0.1:{port}", SIGNING_KEY).sync()
    finally:
        server.shutdown()
        thread.join(5)
    triggers = {name for function in synced.functions for name in function.triggers}
    assert {shop.CANCEL_SIGNAL, shop.TRIGGERS[shop.SINGLETON]} <= triggers


def test_a_run_scheduled_after_the_last_reading_asks_for_the_next_one_sooner_than_the_interval(
    stand_in: StandIn, tmp_path: Path
) -> None:
    stand_in.apps = {shop.APP_ID: shop_functions()}
    found = discovery(stand_in, tmp_path, [], interval="1h")
    found.start()
    try:
        plain = f"{shop.APP_ID}-{shop.PLAIN}"
        eventually(lambda: plain in found.definitions.functions, timeout=10)  # the first reading applied, not just begun
        assert stand_in.readings == 1
        scheduled = clock.now_ms() + 1
        assert not found.holds_for(plain, scheduled)
        eventually(lambda: found.holds_for(plain, scheduled), timeout=30)  # confirmed by a reading an hour early
        assert stand_in.readings == 2
    finally:
        found.stop(5)
