"""Inngest's expressions (CEL), compiled once and evaluated on events.

`cancel_on` rules, triggers and bulk cancellations carry an `if` expression, and a
singleton its key; this module is the one place that compiles and evaluates them, with the CEL
library's errors turned into messages a user can act on.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import cel


@functools.lru_cache(maxsize=1024)
def _compile(expression: str) -> Any:
    return cel.compile(expression)


def check(expression: str) -> None:
    """ValueError("invalid CEL expression: <first line of the reason>") when it does not compile."""
    try:
        _compile(expression)
    except Exception as err:  # the CEL library raises ValueError or its own errors
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"invalid CEL expression: {reason}") from None


def value(expression: str, variables: Mapping[str, Mapping[str, Any]]) -> Any:
    """What `expression` evaluates to for `variables`; raises when it cannot be evaluated."""
    return _compile(expression).execute({name: dict(event) for name, event in variables.items()})

