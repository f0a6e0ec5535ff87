"""Links to a cancelled run's page in the Inngest dashboard, for the Datadog event and the span.

The user gives the dashboard's base URL (EXPORTER_INNGEST_DASHBOARD_URL); the run's page is
a path under it, which differs between Inngest Cloud and the dev/self-hosted server. The
patterns are the dashboards' own, read from Inngest's source (inngest/inngest, commit 253303cd):

- Inngest Cloud (host app.inngest.com): `/env/<environment slug>/runs/<run id>`, built by
  `runPopout` in ui/apps/dashboard/src/utils/urls.ts, served by the route
  ui/apps/dashboard/src/routes/_authed/env/$envSlug/runs/$runID/. A cancellation does not
  name its environment, so the base URL is the environment's: https://app.inngest.com/env/production.
- The dev server and self-hosted Inngest (`inngest dev`, `inngest start`; any other host):
  `/run?runID=<run id>`, built by `runPopout` in ui/apps/dev-server-ui/src/utils/pathCreator.ts,
  served by the route ui/apps/dev-server-ui/src/routes/_dashboard/run/. The base URL is the
  server's own, e.g. http://localhost:8288 (or a reverse proxy's path to it).

Cloud is told from a server by the host alone: the dashboard of Inngest Cloud is served from
that one host, and a self-hosted server can be reached under any name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

CLOUD_DASHBOARD_HOST = "app.inngest.com"
_CLOUD_ENVIRONMENT_PATH = re.compile(r"/env/[^/]+/?")


@dataclass(frozen=True, slots=True)
class RunLinks:
    """Builds the URL of a run's page; plain data, so it crosses to the span export process as it is."""

    prefix: str
    """Everything before the run id: the base URL, its trailing slashes dropped, and the page's path."""

    @classmethod
    def for_dashboard(cls, base_url: str) -> RunLinks:
        """The links under a dashboard's base URL, as `check_dashboard_url` admits it."""
        base = base_url.rstrip("/")
        if urlsplit(base).hostname == CLOUD_DASHBOARD_HOST:
            return cls(f"{base}/runs/")
        return cls(f"{base}/run?runID=")

    def url(self, run_id: str) -> str:
        """The run's page; the id is percent-encoded (Inngest's are ULIDs, which need none; a forged one must not
        break out of the path or the query)."""
        return self.prefix + quote(run_id, safe="")


def check_dashboard_url(value: str) -> str:
    """The base URL, stripped, or ValueError saying what the setting must be.

    An http(s) URL with a host and no query or fragment (the run's page is appended to it); for
    Inngest Cloud, an environment's URL, as only that says which environment the runs are in.
    """
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected the http(s) URL of the Inngest dashboard, got {value!r}")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"expected a base URL without a query or fragment, got {value!r}")
    if parts.hostname == CLOUD_DASHBOARD_HOST and not _CLOUD_ENVIRONMENT_PATH.fullmatch(parts.path):
        raise ValueError(
            f"for Inngest Cloud, expected the environment's URL, https://{CLOUD_DASHBOARD_HOST}/env/<environment slug> "
            f"(e.g. https://{CLOUD_DASHBOARD_HOST}/env/production), got {value!r}"
        )
    return text
