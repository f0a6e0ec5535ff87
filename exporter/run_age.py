"""Run-age buckets: the histogram's boundaries and the coarse `run_age:` tag on Datadog events.

Runs can sleep for days, so the buckets reach from one second to two weeks.
"""

from __future__ import annotations

HISTOGRAM_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 345600, 604800, 1209600,
)

_TAG_BOUNDS: tuple[tuple[float, str], ...] = (
    (60, "under_1m"),
    (3600, "1m_to_1h"),
    (86400, "1h_to_1d"),
    (604800, "1d_to_1w"),
)


def age_tag(age_seconds: float | None) -> str:
    """The `run_age` tag value: under_1m, 1m_to_1h, 1h_to_1d, 1d_to_1w, over_1w, or unknown."""
    if age_seconds is None:
        return "unknown"
    for bound, tag in _TAG_BOUNDS:
        if age_seconds < bound:
            return tag
    return "over_1w"
