"""Where the exporter's processes log, and in what form: one line per record on stderr."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    """Log `level` and above to stderr; called by `serve` and by the core process it starts."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
