"""`/metrics`' body: the registry in the format the scraper asked for."""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.registry import Collector

from exporter.sinks.cancellation_series import SeriesFamily


def render(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """(body, Content-Type) for a scrape whose Accept header is `accept`."""
    encoder, content_type = choose_encoder(accept)
    return exposition(registry, encoder, content_type), content_type


def exposition(registry: CollectorRegistry, encoder: Callable[[Collector], bytes], content_type: str) -> bytes:
    """The registry in the negotiated format: the cancellation families written by themselves, the rest by prometheus_client.

    prometheus_client's rendering comes last, so OpenMetrics' `# EOF` ends the whole answer. The
    cancellation families write metric and label names as they are, which is what the
    `underscores` and `allow-utf-8` escapings make of them; for the others (`dots`, `values`)
    prometheus_client renders everything, slowly but right.
    """
    if content_type.partition("escaping=")[2] not in ("", UNDERSCORES, ALLOWUTF8):
        return encoder(registry)
    openmetrics = content_type.startswith("application/openmetrics-text")
    own: list[str] = []
    others: list[Metric] = []
    for family in registry.collect():
        if isinstance(family, SeriesFamily):
            own.append(family.exposition(openmetrics))
        else:
            others.append(family)
    return "".join(own).encode() + encoder(_Families(others))


class _Families:
    """Families already collected, as the collector prometheus_client's encoders take."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families

