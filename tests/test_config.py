"""The config file and settings: valid files load, every problem is named with its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.payloads import REPO
from exporter.config import ConfigError, load_config
from exporter.settings import SettingsError, load_settings


def test_example_config_loads() -> None:
    config = load_config(REPO / "examples" / "config.yaml")
    assert len(config.functions) >= 5
    fn = config.functions["newsletter-app-import-all-contacts"]
    assert fn.timeouts.start == 30 and fn.timeouts.finish == 7200
    assert fn.cancel_on[0].timeout == 3600
    assert "contacts/import.cancelled" in config.signal_names


def test_every_problem_is_reported_with_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "labels: {bad-name: x, source: y}\n"
        "functions:\n"
        "  f:\n"
        "    cancel_on: [{event: a, if: 'a ==', timeout: 1x}]\n"
        "    timeouts: {finish: soon}\n"
        "    extra: 1\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = "\n".join(err.value.problems)
    assert all(line.startswith(f"{path}: ") for line in err.value.problems)
    for expected in (
        "labels: 'bad-name' is not a valid Prometheus label name",
        "functions.f.cancel_on.0.if: invalid CEL expression",
        "functions.f.cancel_on.0.timeout: invalid duration '1x'",
        "functions.f.timeouts.finish: invalid duration 'soon'",
        "functions.f.extra: unknown key",
    ):
        assert expected in text


def test_unreadable_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("functions: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_empty_file_is_a_valid_empty_config(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml").functions == {}


def test_flags_override_environment_and_errors_name_the_variable() -> None:
    settings = load_settings({"EXPORTER_PORT": "8000", "INNGEST_DEV": "http://localhost:8288"}, {"port": "9000"})
    assert settings.port == 9000 and settings.dev
    assert not load_settings({"INNGEST_DEV": "0"}).dev
    with pytest.raises(SettingsError) as err:
        load_settings({"EXPORTER_PORT": "http", "EXPORTER_DEDUPE_MAX_AGE": "forever"})
    assert any(line.startswith("EXPORTER_PORT / --port:") for line in err.value.problems)
    assert any(line.startswith("EXPORTER_DEDUPE_MAX_AGE: invalid duration") for line in err.value.problems)


def test_a_batched_function_is_declared_without_cancel_on_as_inngest_requires(tmp_path: Path) -> None:
    path = tmp_path / "batched.yaml"
    path.write_text("functions:\n  app-digest: {batch_events: true}\n")
    assert load_config(path).functions["app-digest"].batch_events
    path.write_text("functions:\n  app-digest: {batch_events: true, cancel_on: [{event: digest/stop}]}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == [
        f"{path}: functions.app-digest.cancel_on: not allowed with batch_events: Inngest refuses a batched function with cancelOn"
    ]


def test_a_cancelling_singleton_needs_its_triggers_and_each_problem_has_its_line(tmp_path: Path) -> None:
    path = tmp_path / "singletons.yaml"
    path.write_text(
        "functions:\n"
        "  app-sync: {singleton: {key: event.data.account, mode: cancel}, triggers: [sync/requested, {event: sync/forced, if: 'event.data.full'}]}\n"
        "  app-skip: {singleton: {mode: skip}}\n"
        "  app-hourly: {singleton: {mode: cancel}, triggers: [{cron: '0 * * * *'}]}\n"
    )
    config = load_config(path)
    assert config.functions["app-hourly"].cron_triggered
    assert config.functions["app-sync"].cancels_singleton and not config.functions["app-skip"].cancels_singleton
    assert config.singleton_triggers == {"sync/requested", "sync/forced"}
    path.write_text(
        "functions:\n"
        "  app-sync: {singleton: {key: 'event.data.', mode: cancel}, triggers: [{event: sync/requested, if: 'a =='}, 7]}\n"
        "  app-lone: {singleton: {mode: cancel}}\n"
        "  app-batched: {batch_events: true, singleton: {mode: skip}}\n"
        "  app-odd: {singleton: {mode: replace}}\n"
        "  app-cron: {singleton: {mode: cancel}, triggers: [{cron: '0 * * * *', if: 'true'}, {event: a, cron: '* * * * *'}]}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    problems = [line.removeprefix(f"{path}: ") for line in err.value.problems]
    assert [line.split(": ")[0] for line in problems] == [
        "functions.app-sync.singleton.key",
        "functions.app-sync.triggers.0.if",
        "functions.app-sync.triggers.1",
        "functions.app-lone.triggers",
        "functions.app-batched.singleton",
        "functions.app-odd.singleton.mode",
        "functions.app-cron.triggers.0",
        "functions.app-cron.triggers.1",
    ]
    assert "functions.app-lone.triggers: required when singleton.mode is cancel: the events (or cron) that trigger the function" in problems
    assert "functions.app-batched.singleton: not allowed with batch_events: Inngest refuses a batched function with a singleton" in problems
