"""`serve`: the production HTTP server, gunicorn with ONE worker process and a pool of threads, and the core beside it.

One worker, on purpose: it starts the one exporter core (`exporter.core_process`),
so Prometheus counters report exact totals without multiprocess mode and the
SQLite state (dedupe, outbox) has a single writer. The worker speaks HTTP; the
core, in a process of its own, does the event work, so the two do not queue for
one interpreter lock; the benchmark in `bench/` measures it. SIGTERM and SIGINT
both drain in-flight requests, then the core flushes spans and leaves
undelivered Datadog events in the outbox. If the core dies, the worker is
replaced (gunicorn starts a new one, which starts a new core).
"""

from __future__ import annotations

import gc
import os
import signal
from typing import Any, Mapping

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from exporter.app import create_app
from exporter.config import Config
from exporter.core_process import RemoteCore
from exporter.settings import Settings

GRACEFUL_TIMEOUT_SECONDS = 20
"""How long in-flight requests may take to finish after SIGTERM before the worker is stopped."""


class _DrainingArbiter(Arbiter):
    """Treats SIGINT like SIGTERM: Ctrl-C also lets in-flight requests finish."""

    def handle_int(self) -> None:
        self.handle_term()


def _stop_exporter(_arbiter: Any, worker: Any) -> None:
    app: Flask | None = getattr(worker, "wsgi", None)
    if app is not None:
        app.extensions["exporter"].stop()


def _replace_worker(_exit_code: int | None) -> None:
    """The core died: stop this worker gracefully (requests in flight get their 503s), gunicorn starts a new one."""
    os.kill(os.getpid(), signal.SIGTERM)


class ExporterServer(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn, configured from Settings instead of its own command line."""

    def __init__(self, settings: Settings, config: Config, environ: Mapping[str, str] = os.environ) -> None:
        self._settings = settings
        self._config = config
        self._environ = environ
        super().__init__()

    def load_config(self) -> None:
        options = {
            "bind": f"[{self._settings.host}]:{self._settings.port}" if ":" in self._settings.host
            else f"{self._settings.host}:{self._settings.port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": self._settings.threads,
            "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
            "keepalive": 5,
            "loglevel": self._settings.log_level,
            "accesslog": None,
            "errorlog": "-",
            "worker_exit": _stop_exporter,
            # gunicorn's control socket would be written under $HOME: not wanted on a read-only filesystem
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        """Start the core and build the app inside the worker, after the fork, so both belong to this worker.

        What exists once the app is built (modules, the SDKs, the config) lives as long as the
        process: frozen out of the cyclic garbage collector, so its full collections, which a
        busy worker runs every few hundred requests, do not walk those objects every time.
        """
        core = RemoteCore(self._settings, self._config, on_exit=_replace_worker)
        app = create_app(self._settings, self._config, self._environ, core=core)
        gc.freeze()
        return app

    def run(self) -> None:
        _DrainingArbiter(self).run()
