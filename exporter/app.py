"""`create_app()`: the Flask application factory, as in Flask's tutorial."""

from __future__ import annotations

import os
from typing import Mapping

from flask import Flask

from exporter import endpoints, ingress_events, ingress_inngest
from exporter.config import Config
from exporter.core import Exporter
from exporter.settings import Settings


def create_app(settings: Settings, config: Config, environ: Mapping[str, str] = os.environ, *, start: bool = True) -> Flask:
    """The exporter's WSGI app; `start=False` leaves background work to the caller (tests)."""
    app = Flask("exporter")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    exporter = Exporter(settings, config, environ)
    app.extensions["exporter"] = exporter
    app.register_blueprint(endpoints.blueprint)
    app.register_blueprint(ingress_events.blueprint)
    ingress_inngest.register(app, exporter)
    if start:
        exporter.start()
    return app
