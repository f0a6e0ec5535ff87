"""The last function definitions read from Inngest, kept in the state directory across restarts.

A JSON file beside the state database, replaced whole (written aside, then renamed), so a crash
leaves the previous reading or the new one. Discovery failing at start then still leaves the
definitions of the last reading in use, not none.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from exporter.attribution.definitions import Definitions
from exporter.config import FunctionConfig

log = logging.getLogger(__name__)

STORE_FILE = "discovered-functions.json"


def as_document(config: FunctionConfig) -> dict[str, Any]:
    """A function's config as the YAML file writes it (durations such as "15m"), without the defaults."""
    return config.model_dump(mode="json", by_alias=True, exclude_defaults=True)


class DefinitionStore:
    """Saves and loads one `Definitions` under `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STORE_FILE

    def save(self, definitions: Definitions) -> None:
        document = {
            "functions": {slug: as_document(config) for slug, config in sorted(definitions.functions.items())},
            "skipped": dict(sorted(definitions.skipped.items())),
            "own_url": definitions.own_url,
            "read_at_ms": definitions.read_at_ms,
            "since_ms": dict(sorted(definitions.since_ms.items())),
        }
        aside = self.path.with_name(self.path.name + ".new")
        aside.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(aside, self.path)

    def load(self) -> Definitions | None:
        """The saved definitions; None when there are none or they cannot be read (said in the log)."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            functions = {slug: FunctionConfig.model_validate(item) for slug, item in document["functions"].items()}
            skipped = {str(slug): str(why) for slug, why in document.get("skipped", {}).items()}
            own_url = document.get("own_url")
            read_at_ms = int(document.get("read_at_ms", 0))
            since_ms = {str(slug): int(at) for slug, at in document.get("since_ms", {}).items()}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ValidationError) as err:
            log.warning("function definitions: cannot read the saved copy %s (%s): waiting for Inngest's", self.path, err)
            return None
        return Definitions(functions, skipped, own_url if isinstance(own_url, str) else None, read_at_ms, since_ms)
