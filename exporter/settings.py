"""Runtime settings: environment variables, overridden by command-line flags.

One table (`SETTINGS`) names each setting's variable, flag and help text, so the
CLI, the environment reader and the README's reference cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from exporter.durations import parse_duration
from exporter.run_links import RunLinks, check_dashboard_url

SIGNATURE_MAX_AGE_SECONDS = 300
"""A signed request older than this is refused as a possible replay (fixed by the contract)."""
CLOUD_API_ORIGIN = "https://api.inngest.com"
DEV_SERVER_ORIGIN = "http://127.0.0.1:8288"
"""Where the Inngest SDK finds the dev server when INNGEST_DEV is a flag rather than its URL."""


@dataclass(frozen=True)
class SettingSpec:
    """How one setting is named in the environment and on the command line."""

    field: str
    env: str
    help: str
    flag: str | None = None
    secret: bool = False


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("host", "EXPORTER_HOST", "Address `serve` listens on.", "--host"),
    SettingSpec("port", "EXPORTER_PORT", "Port `serve` listens on.", "--port"),
    SettingSpec("config", "EXPORTER_CONFIG", "Path of the YAML config file.", "--config"),
    SettingSpec("state_dir", "EXPORTER_STATE_DIR", "Directory for durable state (dedupe record, Datadog outbox).", "--state-dir"),
    SettingSpec("ingest_token", "EXPORTER_INGEST_TOKEN", "Bearer token accepted on POST /events.", secret=True),
    SettingSpec("signing_key", "INNGEST_SIGNING_KEY", "Inngest signing key: verifies X-Inngest-Signature.", secret=True),
    SettingSpec("signing_key_fallback", "INNGEST_SIGNING_KEY_FALLBACK", "Previous signing key, accepted during a rotation.", secret=True),
    SettingSpec("dev", "INNGEST_DEV", "Development mode (1/true or the dev server URL): signatures are not required."),
    SettingSpec(
        "api_base_url", "INNGEST_API_BASE_URL",
        "Inngest REST API origin, for polling bulk cancellations (default: Inngest Cloud; in development mode the dev server).",
    ),
    SettingSpec("dd_api_key", "DD_API_KEY", "Datadog API key; Datadog forwarding is on when set.", secret=True),
    SettingSpec("dd_site", "DD_SITE", "Datadog site, e.g. datadoghq.eu."),
    SettingSpec("datadog_url", "EXPORTER_DATADOG_URL", "Full base URL of the Datadog API, overriding DD_SITE (proxies, tests)."),
    SettingSpec(
        "inngest_dashboard_url", "EXPORTER_INNGEST_DASHBOARD_URL",
        "Base URL of the Inngest dashboard, to link each Datadog event and span to the run's page: for Inngest Cloud "
        "the environment's URL (https://app.inngest.com/env/<environment slug>), else the dev or self-hosted server's "
        "(e.g. http://localhost:8288). Default: no links.",
        "--inngest-dashboard-url",
    ),
    SettingSpec("max_body_bytes", "EXPORTER_MAX_BODY_BYTES", "Largest accepted request body, in bytes (413 above).", "--max-body-bytes"),
    SettingSpec("max_batch_events", "EXPORTER_MAX_BATCH_EVENTS", "Most events accepted in one POST /events array (400 above).", "--max-batch-events"),
    SettingSpec("max_functions", "EXPORTER_MAX_FUNCTIONS", "Distinct function_id label values before new ones fold into `_overflow`.", "--max-functions"),
    SettingSpec("dedupe_max_entries", "EXPORTER_DEDUPE_MAX_ENTRIES", "Run ids remembered for deduplication: at least the newest this many, at most twice as many."),
    SettingSpec("dedupe_max_age", "EXPORTER_DEDUPE_MAX_AGE", "How long a run id is remembered for deduplication: at least this long, at most twice (e.g. 7d)."),
    SettingSpec("datadog_give_up_after", "EXPORTER_DATADOG_GIVE_UP_AFTER", "How long a Datadog event is retried before it is given up (e.g. 24h)."),
    SettingSpec("datadog_timeout", "EXPORTER_DATADOG_TIMEOUT", "Timeout of one Datadog request (e.g. 10s); a timed-out event is retried."),
    SettingSpec("datadog_max_backoff", "EXPORTER_DATADOG_MAX_BACKOFF", "Longest wait between Datadog retries while it fails (e.g. 5m)."),
    SettingSpec(
        "attribution_grace", "EXPORTER_ATTRIBUTION_GRACE",
        "How long a cancellation with no evidence yet waits for late cancel signals, singleton triggers, bulk windows "
        "and its run lookup (e.g. 2m).",
        "--attribution-grace",
    ),
    SettingSpec(
        "run_lookups", "EXPORTER_RUN_LOOKUPS",
        "Ask Inngest (GET /v2/runs/{id}) when a run started, for the runs whose age admits a timeout; off: those are unknown.",
        "--run-lookups",
    ),
    SettingSpec("run_lookup_rate", "EXPORTER_RUN_LOOKUP_RATE", "Most run lookup requests per second to Inngest's REST API."),
    SettingSpec("run_lookup_concurrency", "EXPORTER_RUN_LOOKUP_CONCURRENCY", "Most run lookups in flight at once."),
    SettingSpec("run_lookup_timeout", "EXPORTER_RUN_LOOKUP_TIMEOUT", "Timeout of one run lookup request (e.g. 10s); a timed-out lookup is retried."),
    SettingSpec(
        "discovery", "EXPORTER_DISCOVERY",
        "Read the functions' definitions (cancelOn rules, timeouts, singletons, batching) from Inngest's REST API: on, "
        "off, or auto (the default: on in production, where a signing key is set; off in development mode).",
    ),
    SettingSpec("discovery_interval", "EXPORTER_DISCOVERY_INTERVAL", "How often the functions' definitions are read again (e.g. 1m)."),
    SettingSpec(
        "discovery_apps", "EXPORTER_DISCOVERY_APPS",
        "Comma-separated ids of the Inngest apps whose functions are read (default: every app the server lists).",
    ),
    SettingSpec("threads", "EXPORTER_THREADS", "Request threads of the one HTTP worker process (each forwards its requests to the core process).", "--threads"),
    SettingSpec("log_level", "EXPORTER_LOG_LEVEL", "Log level: debug, info, warning, error.", "--log-level"),
)


def _seconds(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(_seconds)]
"""Seconds, written as "30s", "2h" or "1h30m" (durations are how the config file writes them too)."""


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _truthy_dev(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    return True  # "1", "true", or the dev server's URL, as the Inngest SDK accepts


def _dev_server_origin(value: Any) -> str:
    """The dev server's origin as the Inngest SDK reads INNGEST_DEV: its URL (http when it names no scheme), or the default.

    Like the SDK, a value with neither a dot nor a colon (`1`, `true`) is a flag, not a host.
    """
    text = str(value).strip()
    if text.startswith(("http://", "https://")):
        return text
    return f"http://{text}" if "." in text or ":" in text else DEV_SERVER_ORIGIN


class Settings(BaseModel):
    """Validated settings; construct with `load_settings`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(default=9469, ge=1, le=65535)
    config: Path | None = None
    state_dir: Path = Path("state")
    ingest_token: str | None = None
    signing_key: str | None = None
    signing_key_fallback: str | None = None
    dev: bool = False
    api_base_url: str = CLOUD_API_ORIGIN
    dd_api_key: str | None = None
    dd_site: str = "datadoghq.com"
    datadog_url: str | None = None
    inngest_dashboard_url: str | None = None
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_batch_events: int = Field(default=5000, ge=1)
    max_functions: int = Field(default=2000, ge=1)
    dedupe_max_entries: int = Field(default=1_000_000, ge=100)
    dedupe_max_age: Duration = 7 * 86400.0
    datadog_give_up_after: Duration = 24 * 3600.0
    datadog_timeout: Duration = 10.0
    datadog_max_backoff: Duration = 300.0
    attribution_grace: Duration = 120.0
    run_lookups: bool = True
    run_lookup_rate: float = Field(default=10.0, gt=0)
    run_lookup_concurrency: int = Field(default=4, ge=1, le=64)
    run_lookup_timeout: Duration = Field(default=10.0, gt=0)
    discovery: Literal["on", "off", "auto"] = "auto"
    discovery_interval: Duration = Field(default=60.0, gt=0)
    discovery_apps: tuple[str, ...] = ()
    threads: int = Field(default=8, ge=1, le=256)
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"

    @model_validator(mode="before")
    @classmethod
    def _api_origin(cls, values: Any) -> Any:
        """INNGEST_API_BASE_URL unset or empty: in development mode the dev server's origin, where the SDK talks too.

        Polling Inngest Cloud while the app is served to a dev server would read another environment's list.
        """
        if not isinstance(values, dict) or str(values.get("api_base_url") or "").strip():
            return values
        dev = values.get("dev", False)
        return {**values, "api_base_url": _dev_server_origin(dev) if _truthy_dev(dev) else CLOUD_API_ORIGIN}

    @field_validator("dev", mode="before")
    @classmethod
    def _dev(cls, value: Any) -> bool:
        return _truthy_dev(value)

    @field_validator(
        "ingest_token", "signing_key", "signing_key_fallback", "dd_api_key", "config", "datadog_url", "inngest_dashboard_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip() == "" else value

    @field_validator("inngest_dashboard_url")
    @classmethod
    def _dashboard_url(cls, value: str | None) -> str | None:
        return None if value is None else check_dashboard_url(value)

    @field_validator("discovery", mode="before")
    @classmethod
    def _discovery(cls, value: Any) -> Any:
        text = str(value).strip().lower()
        return {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off", "": "auto"}.get(text, text)

    @field_validator("discovery_apps", mode="before")
    @classmethod
    def _app_list(cls, value: Any) -> Any:
        return tuple(name.strip() for name in value.split(",") if name.strip()) if isinstance(value, str) else value

    @property
    def discovers(self) -> bool:
        """Whether function definitions are read from Inngest (`auto`: in production with a signing key)."""
        if self.discovery == "auto":
            return not self.dev and self.signing_key is not None
        return self.discovery == "on"

    @property
    def run_links(self) -> RunLinks | None:
        """Links to the runs' pages in the Inngest dashboard, or None when EXPORTER_INNGEST_DASHBOARD_URL is not set."""
        return None if self.inngest_dashboard_url is None else RunLinks.for_dashboard(self.inngest_dashboard_url)

    @property
    def datadog_enabled(self) -> bool:
        return self.dd_api_key is not None

    @property
    def signing_keys(self) -> list[str]:
        """The signing keys in use: the current one, then the fallback during a rotation."""
        return [key for key in (self.signing_key, self.signing_key_fallback) if key]


class SettingsError(Exception):
    """Settings that cannot be used; `problems` holds one line per problem, naming the variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_BY_FIELD = {spec.field: spec for spec in SETTINGS}


def load_settings(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from `environ`, with non-None `overrides` (command-line flags) taking precedence."""
    values: dict[str, Any] = {spec.field: environ[spec.env] for spec in SETTINGS if spec.env in environ}
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as err:
        problems = []
        for item in err.errors():
            field = str(item["loc"][0]) if item["loc"] else "?"
            spec = _BY_FIELD.get(field)
            name = f"{spec.env}" + (f" / {spec.flag}" if spec and spec.flag else "") if spec else field
            problems.append(f"{name}: {item['msg'].removeprefix('Value error, ')}")
        raise SettingsError(problems) from None
