"""The one line `serve` logs at start: the setup in effect, so a user sees at once what the exporter will do.

Settings come from flags, the environment and defaults, the sinks from DD_* and OTEL_*;
a mistake among them (a Datadog site, an OTLP endpoint, polling against the wrong
Inngest) is otherwise seen only when something fails, if at all. Secrets are never
shown: only whether each is set.
"""

from __future__ import annotations

from typing import Mapping

from exporter.config import Config
from exporter.settings import Settings
from exporter.sinks.otel import otlp_destination


def summary(settings: Settings, config: Config, environ: Mapping[str, str]) -> str:
    """`serve`'s start-up line; call after the preflight, so every setting in it is known to be usable."""
    mode = "development mode (signatures not checked)" if settings.dev else "production mode"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    parts = [
        f"listening on {host}:{settings.port}",
        _config(settings, config),
        f"state in {settings.state_dir}",
        "sinks: " + ", ".join(_sinks(settings, environ)),
        _bulk(settings, config),
        f"run lookups: {'on, GET ' + settings.api_base_url if settings.run_lookups else 'off (EXPORTER_RUN_LOOKUPS)'}",
        _run_links(settings),
        "credentials: " + ", ".join(
            f"{name} {'set' if value else 'not set'}"
            for name, value in (("INNGEST_SIGNING_KEY", settings.signing_key), ("EXPORTER_INGEST_TOKEN", settings.ingest_token))
        ),
    ]
    return f"starting in {mode}: " + "; ".join(parts)


def _config(settings: Settings, config: Config) -> str:
    source = f"config {settings.config}" if settings.config else "no config file (EXPORTER_CONFIG)"
    return (
        f"{source}: {len(config.functions)} functions, {len(config.signal_names)} cancel signals, "
        f"{len(config.singleton_triggers)} singleton triggers"
    )


def _sinks(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    sinks = ["Prometheus on /metrics"]
    otlp = otlp_destination(environ)
    sinks.append(f"OTLP spans to {otlp}" if otlp else "OTLP spans off (OTEL_EXPORTER_OTLP_ENDPOINT)")
    if settings.datadog_enabled:
        from exporter.sinks.datadog_sender import client_configuration  # the Datadog client loads only when used

        sinks.append(f"Datadog events to {client_configuration(settings, request_timeout=10.0).host} (DD_API_KEY set)")
    else:
        sinks.append("Datadog off (DD_API_KEY)")
    return sinks


def _run_links(settings: Settings) -> str:
    """The run page's URL pattern, so a user sees at once whether Cloud's or a server's was chosen."""
    links = settings.run_links
    return f"links to runs: {links.prefix}<run id>" if links else "links to runs: off (EXPORTER_INNGEST_DASHBOARD_URL)"


def _bulk(settings: Settings, config: Config) -> str:
    bulk = config.bulk_cancellations
    if bulk is None or not bulk.polled:
        return "bulk cancellations: not polled (config bulk_cancellations)"
    return f"bulk cancellations: polled every {bulk.poll_interval:g}s from {settings.api_base_url}"
