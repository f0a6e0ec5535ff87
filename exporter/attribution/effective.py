"""The functions the exporter uses: those discovered from Inngest, overridden field by field by the YAML's.

A function in the YAML's `functions:` and discovered takes each field the YAML writes
from the YAML and every other field from Inngest; a function in one of them only is
used as it is there; a function in neither stays `unknown`, as before discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import yaml
from pydantic import ValidationError

from exporter.attribution.definition_store import as_document
from exporter.config import Config, FunctionConfig


@dataclass(frozen=True)
class Origin:
    """Where a function's effective config comes from."""

    discovered: bool
    overridden: tuple[str, ...]
    """The fields the YAML sets (all of them for a function only declared)."""
    problem: str | None = None
    """Why the YAML's entry is used alone though the function was discovered (the two do not combine)."""

    def describe(self) -> str:
        if not self.discovered:
            return "declared in the config"
        if self.problem is not None:
            return f"declared in the config (the discovered definition does not combine with it: {self.problem})"
        if self.overridden:
            return f"discovered, overridden by the config: {', '.join(self.overridden)}"
        return "discovered"


def _field_names(declared: FunctionConfig) -> tuple[str, ...]:
    """The fields a YAML entry sets, as the file names them."""
    return tuple(sorted(FunctionConfig.model_fields[name].alias or name for name in declared.model_fields_set))


def merged(discovered: FunctionConfig, declared: FunctionConfig) -> FunctionConfig:
    """`discovered` with each field `declared` sets replaced; ValueError when the two make no valid function."""
    document = as_document(discovered) | declared.model_dump(
        mode="json", by_alias=True, include=declared.model_fields_set
    )
    try:
        return FunctionConfig.model_validate(document)
    except ValidationError as err:
        raise ValueError("; ".join(item["msg"].removeprefix("Value error, ") for item in err.errors())) from None


def effective_functions(
    declared: Config, discovered: Mapping[str, FunctionConfig]
) -> tuple[dict[str, FunctionConfig], dict[str, Origin]]:
    """Every function's effective config, and where each comes from, by function id."""
    functions: dict[str, FunctionConfig] = dict(discovered)
    origins = {function_id: Origin(True, ()) for function_id in discovered}
    for function_id, entry in declared.functions.items():
        found = discovered.get(function_id)
        if found is None:
            functions[function_id] = entry
            origins[function_id] = Origin(False, _field_names(entry))
            continue
        try:
            functions[function_id] = merged(found, entry)
            origins[function_id] = Origin(True, _field_names(entry))
        except ValueError as err:
            functions[function_id] = entry
            origins[function_id] = Origin(True, _field_names(entry), problem=str(err))
    return functions, origins


def effective_config(declared: Config, discovered: Mapping[str, FunctionConfig]) -> Config:
    """`declared` with its functions completed by the discovered ones."""
    functions, _ = effective_functions(declared, discovered)
    return Config(labels=declared.labels, functions=functions, bulk_cancellations=declared.bulk_cancellations)


def definitions_yaml(declared: Config, discovered: Mapping[str, FunctionConfig]) -> str:
    """The effective functions as a `functions:` section the config file accepts, each headed by where it comes from."""
    functions, origins = effective_functions(declared, discovered)
    if not functions:
        return "functions: {}\n"
    lines = ["functions:"]
    for function_id in sorted(functions):
        lines.append(f"  # {origins[function_id].describe()}")
        entry = yaml.safe_dump({function_id: as_document(functions[function_id])}, sort_keys=False, default_flow_style=False)
        lines += [f"  {line}" for line in entry.splitlines()]
    return "\n".join(lines) + "\n"
