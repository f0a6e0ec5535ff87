"""`create_app()`: the Flask application factory, as in Flask's tutorial."""

from __future__ import annotations

import logging
import os
from typing import Mapping

from flask import Flask

from exporter import endpoints, ingress_events, ingress_inngest
from exporter.config import Config
from exporter.core_api import Core
from exporter.refusals import SDK_REFUSALS, RefusalLog
from exporter.settings import Settings


def create_app(
    settings: Settings,
    config: Config,
    environ: Mapping[str, str] = os.environ,
    *,
    start: bool = True,
    core: Core | None = None,
) -> Flask:
    """The exporter's WSGI app, in front of `core` (`serve` runs it in a process of its own).

    Without a core, an `Exporter` is built in this process (tests, embedding);
    `start=False` then leaves its background work to the caller.
    """
    app = Flask("exporter")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    if core is None:
        from exporter.core import Exporter  # the SDKs behind the sinks load only where the core runs

        exporter = Exporter(settings, config, environ)
        if start:
            exporter.start()
        core = exporter
    app.extensions["exporter"] = core
    app.extensions[endpoints.REFUSALS] = RefusalLog(logging.getLogger("exporter.refusals"))
    app.register_blueprint(endpoints.blueprint)
    app.register_blueprint(ingress_events.blueprint)
    ingress_inngest.register(app, core)
    ingress_inngest.log.addFilter(SDK_REFUSALS)  # the SDK logs through it: its refusals are told with ours
    return app
