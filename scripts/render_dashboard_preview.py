#!/usr/bin/env python3
"""Render a PNG preview of the cancellations dashboard's main panels from a real Prometheus run.

The README shows what the dashboard looks like; a screenshot of a hand-made Grafana
would drift from the JSON. This draws the dashboard's own panel queries instead: it
starts the real exporter with examples/config.yaml, drives it with `simulate` in a
few waves of different rates, lets Debian's Prometheus scrape it (the same stack as
tests/test_prometheus_proof.py), runs each panel's query as Grafana would, and plots
the answers with matplotlib.

    .venv/bin/pip install -e '.[preview]'
    .venv/bin/python scripts/render_dashboard_preview.py            # writes docs/cancellations-dashboard.png
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.dashboards import (  # noqa: E402
    CANCELLATIONS_UID,
    builtin_values,
    evaluate,
    queries,
    shipped,
    variable_values,
)
from tests.support.demo_stack import DemoStack  # noqa: E402
from tests.support.prometheus_server import Series  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.axes import Axes

WAVES = ((150, 10.0), (400, 25.0), (100, 4.0), (300, 15.0))
"""(count, rate per second) of each `simulate` run: changes of pace that the graphs can show."""
SOURCE_COLOURS = {
    "event": "#5794F2", "timeout": "#FF9830", "bulk": "#B877D9", "singleton": "#F2CC0C", "manual": "#73BF69", "unknown": "#8E8E8E",
}


def panel_series(stack: DemoStack, end: float, title: str, max_data_points: int) -> list[tuple[str, list[Series]]]:
    """Each target of the panel titled `title` with its legend, evaluated as Grafana would with every variable at All."""
    dashboard = shipped()[CANCELLATIONS_UID]
    values = {
        **variable_values(dashboard, {}),
        **builtin_values(stack.started, end, stack.scrape_interval, max_data_points),
    }
    found = [
        (str(q.target.get("legendFormat", "")), evaluate(stack.prometheus, q, values, stack.started, end))
        for q in queries(dashboard)
        if q.panel["title"] == title
    ]
    if not found:
        raise SystemExit(f"the cancellations dashboard has no panel {title!r}")
    return found


def legend(template: str, labels: dict[str, str]) -> str:
    for name, value in labels.items():
        template = template.replace("{{" + name + "}}", value)
    return template


def seconds_since(start: float, samples: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [t - start for t, _ in samples], [v for _, v in samples]


def aligned(start: float, series: list[Series]) -> tuple[list[float], list[list[float]]]:
    """The series on one time axis (a series absent at a step counts 0 there), for stacking and heatmaps."""
    steps = sorted({t for s in series for t, _ in s.samples})
    values = [dict(s.samples) for s in series]
    return [t - start for t in steps], [[v.get(t, 0.0) for t in steps] for v in values]


def draw_rate_by(label: str) -> Callable[[Axes, list[tuple[str, list[Series]]], float], None]:
    """A time series panel of one series per `label` value, stacked for sources as the dashboard stacks them."""

    def draw(ax: Axes, found: list[tuple[str, list[Series]]], start: float) -> None:
        ((template, series),) = found
        series = sorted(series, key=lambda s: s.labels.get(label, ""))
        if label == "source":
            times, stacks = aligned(start, series)
            colours = [SOURCE_COLOURS.get(s.labels["source"], "#888888") for s in series]
            ax.stackplot(times, *stacks, labels=[legend(template, s.labels) for s in series], colors=colours, alpha=0.8)
        else:
            for s in series:
                ax.plot(*seconds_since(start, s.samples), label=legend(template, s.labels), linewidth=1.2)
        ax.set_xlabel("seconds")
        ax.set_ylabel("cancellations / s")
        ax.legend(fontsize=6, loc="upper left", ncol=2)

    return draw


def draw_top(ax: Axes, found: list[tuple[str, list[Series]]], start: float) -> None:
    ((template, series),) = found
    series = sorted(series, key=lambda s: s.samples[-1][1])
    ax.barh([legend(template, s.labels) for s in series], [s.samples[-1][1] for s in series], color="#5794F2")
    ax.tick_params(axis="y", labelsize=6)
    ax.set_xlabel("cancellations in range")


def draw_share(ax: Axes, found: list[tuple[str, list[Series]]], start: float) -> None:
    ((template, series),) = found
    series = sorted(series, key=lambda s: s.labels["source"])
    ax.pie(
        [s.samples[-1][1] for s in series],
        labels=[legend(template, s.labels) for s in series],
        colors=[SOURCE_COLOURS.get(s.labels["source"], "#888888") for s in series],
        autopct="%1.0f%%", pctdistance=0.78, wedgeprops={"width": 0.45}, textprops={"fontsize": 7},
    )


def draw_heatmap(ax: Axes, found: list[tuple[str, list[Series]]], start: float) -> None:
    """Grafana's "heatmap" format: cumulative `le` buckets turned into per-bucket rates."""
    ((_, series),) = found
    by_bound = sorted(series, key=lambda s: float(s.labels["le"]))
    bounds = [float(s.labels["le"]) for s in by_bound]
    times, cumulative = aligned(start, by_bound)
    rows = [[hi - lo for lo, hi in zip(below, above)] for below, above in zip([[0.0] * len(times), *cumulative], cumulative)]
    labels = [_age(b) for b in bounds]
    ax.imshow(rows, aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest",
              extent=(times[0], times[-1], -0.5, len(rows) - 0.5))
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("seconds")
    ax.set_ylabel("run age (≤)")


def draw_percentiles(ax: Axes, found: list[tuple[str, list[Series]]], start: float) -> None:
    for template, series in found:
        for s in series:
            points = [(t, v) for t, v in s.samples if math.isfinite(v)]
            ax.plot(*seconds_since(start, points), label=legend(template, s.labels), linewidth=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("run age (s)")
    ax.legend(fontsize=7, loc="upper left")


def _age(seconds: float) -> str:
    if math.isinf(seconds):
        return "+Inf"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


PANELS: list[tuple[str, Callable[[Axes, list[tuple[str, list[Series]]], float], None]]] = [
    ("Cancellation rate by function", draw_rate_by("function_id")),
    ("Cancellation rate by source", draw_rate_by("source")),
    ("Top functions", draw_top),
    ("Share by source", draw_share),
    ("Run age at cancellation", draw_heatmap),
    ("Run age p50 / p90 / p99", draw_percentiles),
]


def render(stack: DemoStack, end: float, output: Path, max_data_points: int) -> None:
    import matplotlib  # only here: the `preview` extra, which the tests (they check PANELS) do without

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, 2, figsize=(14, 13))
    for ax, (title, draw) in zip(axes.flat, PANELS):
        draw(ax, panel_series(stack, end, title, max_data_points), stack.started)
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
    sent = sum(stack.sent.values())
    figure.suptitle(
        f"Inngest cancellations dashboard (uid {CANCELLATIONS_UID}): its panel queries on a real Prometheus, "
        f"{sent} cancellations from `simulate` over {int(end - stack.started)} s",
        fontsize=11,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "cancellations-dashboard.png")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--max-data-points", type=int, default=120, help="the panel's width in points, as in Grafana")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dashboard-preview-") as workdir, DemoStack(Path(workdir)) as stack:
        for wave, (count, rate) in enumerate(WAVES):
            print(f"simulate: {count} cancellations at {rate}/s", flush=True)
            stack.simulate(count=count, rate=rate, seed=args.seed + wave)
        end = stack.settle()
        render(stack, end, args.output, args.max_data_points)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
