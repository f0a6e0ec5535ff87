"""Label values as the exposition formats quote them, shared by the series' labels and their exemplars'."""

from __future__ import annotations


def escape_label_value(value: str) -> str:
    """A label value as both formats quote it: backslash, newline and double quote escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
