"""Inngest's own open-source server (`inngest start` or `inngest dev`), run for the real-server suite.

The binary is built from the Go module proxy by `scripts/install-inngest.sh` (which
`make test` runs) into `.tools/bin/inngest`. Each server gets loopback ports of its
own and SQLite in a temporary folder, and is driven only through its public HTTP
surface: the event API, REST v1 and v2, and the dashboard's GraphQL API.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

import requests

from tests.support.payloads import REPO
from tests.conftest import free_port

BINARY = REPO / ".tools" / "bin" / "inngest"
Mode = Literal["start", "dev"]


class InngestServer:
    """One Inngest server syncing the apps at `sdk_urls`; a context manager that stops it.

    `start` mode is self-hosted production: a signing key (hex, as the server
    requires) and an event key. `dev` mode checks no signatures.
    """

    def __init__(self, mode: Mode, workdir: Path, sdk_urls: list[str]) -> None:
        self.mode = mode
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.signing_key_hex = secrets.token_hex(32)
        self.event_key = "e2e-event-key"
        self.workdir = workdir
        self.log_path = workdir / f"inngest-{mode}.log"
        self.sdk_urls = sdk_urls
        self.session = requests.Session()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def signing_key(self) -> str:
        """The key as SDKs and the exporter take it: the server's hex with the `signkey-<env>-` prefix."""
        return f"signkey-test-{self.signing_key_hex}"

    def _command(self) -> list[str]:
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: run scripts/install-inngest.sh (make test does)")
        ports = [
            "--host", "127.0.0.1", "--port", str(self.port),
            "--connect-gateway-port", str(free_port()),
            "--connect-gateway-grpc-port", str(free_port()),
            "--connect-executor-grpc-port", str(free_port()),
            "--sqlite-dir", str(self.workdir / f"inngest-{self.mode}-db"),
            "--tick", "50",  # how often the executor polls its queue (ms): the server's own speed, not ours
        ]
        urls = [arg for url in self.sdk_urls for arg in ("--sdk-url", url)]
        if self.mode == "start":
            keys = ["--signing-key", self.signing_key_hex, "--event-key", self.event_key]
            return [str(BINARY), "start", *ports, *keys, *urls]
        return [str(BINARY), "dev", *ports, "--no-discovery", "--debug-api-port", str(free_port()), *urls]

    def __enter__(self) -> "InngestServer":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self._command(), stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"inngest {self.mode} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if self.session.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"inngest {self.mode} did not answer /health:\n{self.log()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        self.session.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # --- the public surface ---------------------------------------------------------------

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.signing_key}"} if self.mode == "start" else {}

    def _json(self, response: requests.Response) -> Any:
        if not response.ok:
            raise AssertionError(f"{response.request.method} {response.url}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def send(self, *events: dict[str, Any]) -> list[str]:
        """Send events as an app does (the event API, with the event key); their ids."""
        key = self.event_key if self.mode == "start" else "dev"
        body = self._json(self.session.post(f"{self.url}/e/{key}", json=list(events), timeout=10))
        return list(body["ids"])

    def event_runs(self, event_id: str) -> list[dict[str, Any]]:
        """The runs an event triggered (REST v1)."""
        body = self._json(self.session.get(f"{self.url}/v1/events/{event_id}/runs", headers=self._auth, timeout=10))
        return list(body.get("data") or [])

    def queued_runs(self, event_id: str) -> list[dict[str, Any]]:
        """The runs an event triggered, those still waiting in the queue included (API v2; REST v1 lists a run behind
        a busy concurrency slot only once that slot is free)."""
        body = self._json(self.session.get(f"{self.url}/v2/events/{event_id}/runs", headers=self._auth, timeout=10))
        return list(body.get("data") or [])

    def run(self, run_id: str) -> dict[str, Any]:
        """One run (REST v1): status, function, times."""
        body = self._json(self.session.get(f"{self.url}/v1/runs/{run_id}", headers=self._auth, timeout=10))
        return dict(body["data"])

    def cancel_v1(self, run_id: str) -> None:
        """`DELETE /v1/runs/{id}`: one run cancelled through the REST API."""
        self._json(self.session.delete(f"{self.url}/v1/runs/{run_id}", headers=self._auth, timeout=10))

    def cancel_v2(self, run_id: str) -> None:
        """`POST /v2/runs/{id}/cancel`: API v2's single-run cancel."""
        self._json(self.session.post(f"{self.url}/v2/runs/{run_id}/cancel", headers=self._auth, json={}, timeout=10))

    def cancel_graphql(self, run_id: str) -> None:
        """The dashboard's `cancelRun` mutation, as its Cancel button sends it."""
        self.graphql("mutation CancelRun($runID: ULID!) { cancelRun(runID: $runID) { id } }", {"runID": run_id})

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of a query to the dashboard's GraphQL API (apps, runs and their times); AssertionError on errors."""
        body = self._json(self.session.post(
            f"{self.url}/v0/gql", json={"query": query, "variables": variables or {}}, headers=self._auth, timeout=30,
        ))
        if body.get("errors"):
            raise AssertionError(f"GraphQL: {body['errors']}")
        return dict(body["data"])
