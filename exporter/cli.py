"""The `inngest-cancellation-exporter` command: serve, simulate, check-config.

Every problem with settings or the config file ends the command at once with
one clear line per problem and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal, NoReturn, get_args, get_origin

import annotated_types
import click
from pydantic.fields import FieldInfo

from exporter import DISTRIBUTION, __version__, startup
from exporter.config import Config, ConfigError, load_config
from exporter.durations import format_duration
from exporter.settings import SETTINGS, Duration, Settings, SettingsError, load_settings
from exporter.sinks.otel import check_otel_settings
from exporter.state import StateDB, StateUnavailable

EXAMPLE_CONFIG = resources.files("exporter") / "examples" / "config.yaml"
"""`simulate`'s default config: package data, so the command finds it from any directory after `pip install .`
(examples/config.yaml at the repository root, which `make run` serves, links to it)."""


def _fail(problems: list[str]) -> NoReturn:
    for line in problems:
        click.echo(f"error: {line}", err=True)
    sys.exit(1)


class _Duration(click.ParamType):
    """A duration such as 30s, 5m or 1h30m (for help and completion: settings.py reads it)."""

    name = "duration"


class _SettingOption(click.Option):
    """An option that shows its setting's type, range and default but hands the value on as typed.

    settings.py validates flags and environment variables alike, so both give the same error
    line; the option's own default stays None, so a flag not given leaves the variable in force.
    """

    def __init__(self, *args: Any, setting_default: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setting_default = setting_default

    def type_cast_value(self, ctx: click.Context, value: Any) -> Any:
        return value

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        if self._setting_default is not None:
            extra["default"] = self._setting_default
        return extra


def _click_type(field: FieldInfo) -> click.ParamType:
    """The click type of a Settings field, read from its annotation and bounds."""
    annotation = field.annotation
    if get_origin(annotation) is Literal:
        return click.Choice(get_args(annotation), case_sensitive=False)
    if all(item in field.metadata for item in Duration.__metadata__):
        return _Duration()
    bounds: dict[str, Any] = {}
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["min"] = item.ge
        elif isinstance(item, annotated_types.Gt):
            bounds.update(min=item.gt, min_open=True)
        elif isinstance(item, annotated_types.Le):
            bounds["max"] = item.le
    if annotation is int:
        return click.IntRange(**bounds) if bounds else click.INT
    if annotation is float:
        return click.FloatRange(**bounds) if bounds else click.FLOAT
    if Path in (annotation, *get_args(annotation)):
        return click.Path(path_type=Path)
    return click.STRING


def _shown_default(field: FieldInfo, flag: str) -> str | None:
    """The default as a user writes it (a boolean as its flag), or None when the setting has none."""
    default = field.default
    if default is None:
        return None
    if isinstance(default, bool):
        return flag.removeprefix("--") if default else f"no-{flag.removeprefix('--')}"
    if isinstance(_click_type(field), _Duration):
        return format_duration(default)
    return str(default)


def _setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One flag per setting that has one, named and documented by the SETTINGS table, typed by the Settings model."""
    for spec in reversed(SETTINGS):
        if spec.flag:
            field = Settings.model_fields[spec.field]
            boolean = field.annotation is bool
            command = click.option(
                f"{spec.flag}/--no-{spec.flag.removeprefix('--')}" if boolean else spec.flag, spec.field,
                cls=_SettingOption, type=None if boolean else _click_type(field), default=None,
                setting_default=_shown_default(field, spec.flag), help=f"{spec.help} [env: {spec.env}]",
            )(command)
    return command


def _listen_problem(settings: Settings) -> str | None:
    """Why `serve` could not listen on its host and port, found by binding them a moment, as gunicorn will.

    Without it, a port already taken makes gunicorn retry for seconds and then say only
    "Can't connect to ('0.0.0.0', 9469)".
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds: a closing socket does not count
            probe.bind((settings.host, settings.port))
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            return (
                f"EXPORTER_PORT / --port: port {settings.port} on {settings.host} is already in use by another process: "
                "stop it, or choose another port"
            )
        return f"EXPORTER_HOST / --host: cannot listen on {settings.host} port {settings.port}: {err.strerror}"
    return None


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
    if (listen_problem := _listen_problem(settings)) is not None:
        problems.append(listen_problem)
    if problems:
        _fail(problems)
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=DISTRIBUTION)
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
    logging.getLogger(__name__).info(startup.summary(settings, config, os.environ))
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
    exporter sees every window before it settles the held runs. Progress, what it waits for
    and how many runs the exporter still holds for late evidence go to stderr.
    """
    from exporter.simulate import StandInApi, Simulator
    from exporter.simulate_progress import Progress, by_source, held_line, serve_until_seen

    def say(line: str) -> None:
        click.echo(line, err=True)

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
    say(f"simulate: sending {count} cancellations to {url} at {rate:g} a second (about {math.ceil(count / rate)} s)")
    try:
        totals = simulator.run(count=count, rate=rate, progress=Progress(count, say))
        if api is not None:
            serve_until_seen(api, config, say)
    except Exception as err:  # connection refused, 4xx: say what happened, no traceback
        _fail([f"simulate: {err}"])
    finally:
        if api is not None:
            api.close()
    click.echo("sent " + by_source(totals))
    say(held_line(url))
