"""The `inngest-cancellation-exporter` command: serve, simulate, check-config.

Every problem with settings or the config file ends the command at once with
one clear line per problem and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, NoReturn

import click

from exporter.config import Config, ConfigError, load_config
from exporter.settings import SETTINGS, Settings, SettingsError, load_settings
from exporter.sinks.otel import check_otel_settings
from exporter.state import StateDB, StateUnavailable

EXAMPLE_CONFIG = resources.files("exporter") / "examples" / "config.yaml"
"""`simulate`'s default config: package data, so the command finds it from any directory after `pip install .`
(examples/config.yaml at the repository root, which `make run` serves, links to it)."""
LOOKUPS_AWAITED_SECONDS = 60.0
"""How long `simulate` waits, after its last event, for the exporter to look up the runs it timed out."""


def _fail(problems: list[str]) -> NoReturn:
    for line in problems:
        click.echo(f"error: {line}", err=True)
    sys.exit(1)


def _setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One flag per setting that has one, named and documented by the SETTINGS table."""
    for spec in reversed(SETTINGS):
        if spec.flag:
            command = click.option(spec.flag, spec.field, default=None, help=f"{spec.help} [env: {spec.env}]")(command)
    return command


def _preflight(settings: Settings) -> Config:
    """Everything `serve` can check before it listens, so a bad setup fails at once and clearly."""
    problems: list[str] = []
    try:
        config = load_config(settings.config)
    except ConfigError as err:
        problems.extend(err.problems)
        config = Config()
    if not settings.dev and not (settings.signing_key or settings.ingest_token):
        problems.append(
            "INNGEST_SIGNING_KEY (or EXPORTER_INGEST_TOKEN for /events only) is required in production; "
            "set INNGEST_DEV=1 for local development"
        )
    try:
        check_otel_settings(os.environ)
    except ValueError as err:
        problems.append(str(err))
    if settings.datadog_enabled:
        from exporter.sinks.datadog_sender import client_configuration

        try:
            client_configuration(settings, request_timeout=10.0)
        except ValueError as err:
            problems.append(str(err))
    try:
        state = StateDB(settings.state_dir)
        writable = state.writable()
        state.close()
        if not writable:
            problems.append(f"EXPORTER_STATE_DIR: {settings.state_dir} is not writable")
    except StateUnavailable as err:
        problems.append(f"EXPORTER_STATE_DIR: {err}")
    if problems:
        _fail(problems)
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Export Inngest function cancellations, with their inferred source and run age."""


@main.command()
@_setting_options
def serve(**flags: Any) -> None:
    """Run the production HTTP server until SIGTERM or SIGINT."""
    try:
        settings = load_settings(os.environ, flags)
    except SettingsError as err:
        _fail(err.problems)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    config = _preflight(settings)
    from exporter.server import ExporterServer  # gunicorn is only needed by serve

    ExporterServer(settings, config).run()


@main.command("check-config")
@click.argument("file", type=click.Path(path_type=Path))
def check_config(file: Path) -> None:
    """Validate a config file: exit 0, or exit 1 with one line per problem."""
    try:
        config = load_config(file)
    except ConfigError as err:
        _fail(err.problems)
    click.echo(
        f"{file}: ok ({len(config.functions)} functions, {len(config.signal_names)} cancel signals,"
        f" {len(config.singleton_triggers)} singleton triggers)"
    )


@main.command()
@_setting_options
def definitions(**flags: Any) -> None:
    """Print the functions the exporter attributes with, as a YAML `functions:` section: each discovered from Inngest,
    overridden by the config or declared in it."""
    from exporter.attribution.discovery import latest_definitions
    from exporter.attribution.effective import definitions_yaml
    from exporter.ingress_inngest import APP_ID

    try:
        settings = load_settings(os.environ, flags)
        config = load_config(settings.config)
    except (SettingsError, ConfigError) as err:
        _fail(err.problems)
    found, problem = latest_definitions(settings, APP_ID)
    if problem is not None:
        click.echo(f"note: {problem}; showing the definitions last saved in {settings.state_dir}", err=True)
    click.echo(definitions_yaml(config, found.functions), nl=False)
    for slug, why in sorted(found.skipped.items()):
        click.echo(f"note: {slug} left out ({why}): unknown unless declared", err=True)


@main.command()
@click.option("--url", required=True, help="Base URL of a running exporter, e.g. http://127.0.0.1:9469.")
@click.option("--rate", type=click.FloatRange(min=0.1), default=5.0, show_default=True, help="Events per second.")
@click.option("--count", type=click.IntRange(min=1), default=200, show_default=True, help="Cancellations to send.")
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), default=None, show_default=str(EXAMPLE_CONFIG),
    help="Config describing the simulated functions (the one the exporter runs with); "
    "the default is examples/config.yaml, as shipped in the package.",
)
@click.option("--seed", type=int, default=None, help="Random seed, for a repeatable run.")
@click.option(
    "--api-port", type=click.IntRange(0, 65535), default=9470, show_default=True,
    help="Port of the stand-in Inngest REST API serving the simulated bulk cancellations and when timed-out runs "
    "started (run the exporter with INNGEST_API_BASE_URL=http://127.0.0.1:<port>); 0 turns it off, and no run "
    "is planned to time out.",
)
def simulate(url: str, rate: float, count: int, config_path: Path | None, seed: int | None, api_port: int) -> None:
    """Send realistic, correctly signed cancellation traffic to a running exporter.

    Signs with INNGEST_SIGNING_KEY when set, else sends EXPORTER_INGEST_TOKEN as a bearer
    token, else sends unsigned (for an exporter in INNGEST_DEV mode). After the last event the
    stand-in API keeps serving until the exporter has looked up every timed-out run (a minute
    at most) and, when the config polls bulk cancellations, for two poll intervals, so the
    exporter sees every window before it settles the held runs.
    """
    from exporter.simulate import StandInApi, Simulator

    try:
        if config_path is None:
            with resources.as_file(EXAMPLE_CONFIG) as example:
                config = load_config(example)
        else:
            config = load_config(config_path)
    except ConfigError as err:
        _fail(err.problems)
    try:
        api = StandInApi(api_port) if api_port else None
    except OSError as err:
        _fail([f"simulate: cannot serve the stand-in Inngest API on port {api_port}: {err.strerror}"])
    simulator = Simulator(
        url,
        config,
        signing_key=os.environ.get("INNGEST_SIGNING_KEY") or None,
        token=os.environ.get("EXPORTER_INGEST_TOKEN") or None,
        seed=seed,
        api=api,
    )
    try:
        totals = simulator.run(count=count, rate=rate)
        if api is not None:
            asked_by = time.monotonic() + LOOKUPS_AWAITED_SECONDS
            while not api.all_asked() and time.monotonic() < asked_by:
                time.sleep(0.1)
            if config.bulk_cancellations is not None and config.bulk_cancellations.polled:
                time.sleep(2 * config.bulk_cancellations.poll_interval + 1)
    except Exception as err:  # connection refused, 4xx: say what happened, no traceback
        _fail([f"simulate: {err}"])
    finally:
        if api is not None:
            api.close()
    click.echo("sent " + ", ".join(f"{source}: {n}" for source, n in sorted(totals.items())))
