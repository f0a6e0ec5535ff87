"""The run behind a series' latest count: an OpenMetrics exemplar naming its run id and its span's trace id.

A panel's spike then leads to one cancelled run and its span (Grafana shows exemplars and links
their `trace_id` to the tracing backend). The trace id is the span's own (`trace_id_for_run`),
derived from the run id, so it is right whether or not spans are exported.

The run id is named only when it is written as it is and fits: Prometheus (2.42) keeps an exemplar
label value with its escapes (`\\"` stays two characters), and prometheus_client's parser fails on an
escaped quote in one, while Prometheus fails a whole scrape on an exemplar it cannot parse. Inngest's
run ids are ULIDs and always named; another sender's odd one is left out, and its trace id, which
still finds the span naming the run, kept.

An exemplar is kept as its facts and written when a scrape first needs it: counting stays
cheap, and a series whose latest run did not change since the last scrape is not formatted again.
"""

from __future__ import annotations

from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from exporter.run_ids import trace_id_for_run

MAX_LABEL_RUNES = 128
"""OpenMetrics' limit on an exemplar's label names and values together, in code points; Prometheus drops longer ones."""
RUN_ID = "run_id"
TRACE_ID = "trace_id"
TRACE_ID_DIGITS = 32
"""A trace id's 128 bits in hex, as OpenTelemetry writes them."""
_MAX_RUN_ID = MAX_LABEL_RUNES - len(RUN_ID) - len(TRACE_ID) - TRACE_ID_DIGITS


def names_run(run_id: str) -> bool:
    """Whether an exemplar can name the run: its id has nothing a label value escapes and fits beside the trace id."""
    return len(run_id) <= _MAX_RUN_ID and not ("\\" in run_id or '"' in run_id or "\n" in run_id)


class RunExemplar:
    """One observation's run, value and time (`time.time()`, as prometheus_client stamps its exemplars)."""

    __slots__ = ("run_id", "value", "timestamp", "_text")

    def __init__(self, run_id: str, value: float, timestamp: float) -> None:
        self.run_id = run_id
        self.value = value
        self.timestamp = timestamp
        self._text: str | None = None

    def labels(self) -> dict[str, str]:
        """`run_id` when it can be named, and `trace_id`."""
        trace_id = trace_id_for_run(self.run_id).hex()
        return {RUN_ID: self.run_id, TRACE_ID: trace_id} if names_run(self.run_id) else {TRACE_ID: trace_id}

    def sample(self) -> Exemplar:
        """As prometheus_client's own samples carry it."""
        return Exemplar(self.labels(), self.value, self.timestamp)

    @property
    def text(self) -> str:
        """What follows a sample's value in OpenMetrics, as prometheus_client writes it: ` # {labels} value timestamp`."""
        if self._text is None:  # two scrapes racing here write the same text
            run_id = f'{RUN_ID}="{self.run_id}",' if names_run(self.run_id) else ""  # nothing in it to escape
            trace_id = trace_id_for_run(self.run_id).hex()
            self._text = f' # {{{run_id}{TRACE_ID}="{trace_id}"}} {floatToGoString(self.value)} {self.timestamp}'
        return self._text
