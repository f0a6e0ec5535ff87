#!/usr/bin/env python3
"""Render a PNG preview of the cancellations dashboard's main panels from a real Prometheus run.

The README shows what the dashboard looks like; a screenshot of a hand-made Grafana
would drift from the JSON. This draws the dashboard's own panel queries instead: it
starts the real exporter with examples/config.yaml, drives it with `simulate` in a
few waves of different rates, lets Debian's Prometheus scrape it (the same stack as
tests/test_prometheus_proof.py, exemplar storage on), runs each panel's query as Grafana
would, asks for the exemplars of the panels that show them, and plots the answers with
matplotlib.

    .venv/bin/pip install -e '.[preview]'
    .venv/bin/python scripts/render_dashboard_preview.py   # writes docs/cancellations-dashboard.png, docs/run-age-exemplars.png
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.dashboards import (  # noqa: E402
    CANCELLATIONS_UID,
    Query,
    builtin_values,
    evaluate,
    interpolate,
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


class Exemplar(NamedTuple):
    """One exemplar as Grafana draws it: where (seconds into the run, its value) and what hovering it shows."""

    at: float
    value: float
    labels: dict[str, str]
    """The series' labels and the exemplar's own (trace_id, run_id)."""


class Panel(NamedTuple):
    found: list[tuple[str, list[Series]]]
    """Each target's legend and series."""
    exemplars: list[Exemplar]
    """The exemplars of the targets that ask for them (`"exemplar": true`)."""


def panel_data(stack: DemoStack, end: float, title: str, max_data_points: int) -> Panel:
    """The panel titled `title`, run as Grafana would with every variable at All: its series and its exemplars."""
    dashboard = shipped()[CANCELLATIONS_UID]
    values = {
        **variable_values(dashboard, {}),
        **builtin_values(stack.started, end, stack.scrape_interval, max_data_points),
    }
    targets: list[Query] = [q for q in queries(dashboard) if q.panel["title"] == title]
    if not targets:
        raise SystemExit(f"the cancellations dashboard has no panel {title!r}")
    return Panel(
        [(str(q.target.get("legendFormat", "")), evaluate(stack.prometheus, q, values, stack.started, end)) for q in targets],
        [
            _exemplar(stack.started, series, exemplar)
            for q in targets if q.target.get("exemplar")
            for series, exemplar in stack.prometheus.exemplars(interpolate(q.expr, values), stack.started, end)
        ],
    )


def _exemplar(start: float, series: dict[str, str], exemplar: dict[str, Any]) -> Exemplar:
    return Exemplar(float(exemplar["timestamp"]) - start, float(exemplar["value"]), {**series, **exemplar["labels"]})


def colour(source: str) -> str:
    """The dashboard's colour of a source (grey for one it does not name)."""
    return SOURCE_COLOURS.get(source, "#888888")


def draw_exemplars(ax: Axes, exemplars: list[Exemplar], ys: list[float]) -> None:
    """Exemplars as Grafana marks them: a star each, in its source's colour, at (its time, `ys`)."""
    ax.scatter([e.at for e in exemplars], ys, marker="*", s=40, zorder=3, edgecolors="black", linewidths=0.4,
               color=[colour(e.labels.get("source", "")) for e in exemplars])


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


def draw_rate_by(label: str) -> Callable[[Axes, Panel, float], None]:
    """A time series panel of one series per `label` value, stacked for sources as the dashboard stacks them; its
    exemplars as Grafana draws them on a time series, at their value (1: one run) in their series' colour."""

    def draw(ax: Axes, panel: Panel, start: float) -> None:
        ((template, series),) = panel.found
        series = sorted(series, key=lambda s: s.labels.get(label, ""))
        if label == "source":
            times, stacks = aligned(start, series)
            colours = [colour(s.labels["source"]) for s in series]
            ax.stackplot(times, *stacks, labels=[legend(template, s.labels) for s in series], colors=colours, alpha=0.8)
            draw_exemplars(ax, panel.exemplars, [e.value for e in panel.exemplars])
        else:
            for s in series:
                ax.plot(*seconds_since(start, s.samples), label=legend(template, s.labels), linewidth=1.2)
        ax.set_xlabel("seconds")
        ax.set_ylabel("cancellations / s")
        ax.legend(fontsize=6, loc="upper left", ncol=2)

    return draw


def draw_top(ax: Axes, panel: Panel, start: float) -> None:
    ((template, series),) = panel.found
    series = sorted(series, key=lambda s: s.samples[-1][1])
    ax.barh([legend(template, s.labels) for s in series], [s.samples[-1][1] for s in series], color="#5794F2")
    ax.tick_params(axis="y", labelsize=6)
    ax.set_xlabel("cancellations in range")


def draw_share(ax: Axes, panel: Panel, start: float) -> None:
    ((template, series),) = panel.found
    series = sorted(series, key=lambda s: s.labels["source"])
    ax.pie(
        [s.samples[-1][1] for s in series],
        labels=[legend(template, s.labels) for s in series],
        colors=[colour(s.labels["source"]) for s in series],
        autopct="%1.0f%%", pctdistance=0.78, wedgeprops={"width": 0.45}, textprops={"fontsize": 7},
    )


def draw_heatmap(ax: Axes, panel: Panel, start: float) -> None:
    """Grafana's "heatmap" format: cumulative `le` buckets turned into per-bucket rates; each exemplar in the row of
    the bucket its run's age falls in, the latest shown as hovering it shows it."""
    ((_, series),) = panel.found
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
    rows_of = [bisect.bisect_left(bounds, e.value) for e in panel.exemplars]
    draw_exemplars(ax, panel.exemplars, rows_of)
    sources = sorted({e.labels.get("source", "") for e in panel.exemplars})
    ax.legend(
        handles=[ax.scatter([], [], marker="*", s=40, color=colour(source), label=source) for source in sources],
        fontsize=6, loc="upper right", title="exemplar source", title_fontsize=6,
    )
    if panel.exemplars:
        row, latest = max(zip(rows_of, panel.exemplars), key=lambda pair: pair[1].at)
        shown = ("function_id", "source", "run_id", "trace_id")
        ax.annotate(
            "\n".join(f"{name}: {latest.labels[name]}" for name in shown if name in latest.labels)
            + f"\nrun age: {latest.value:,.0f} s",
            xy=(latest.at, row), xytext=(0.03, 0.97), textcoords="axes fraction", va="top", fontsize=6.5,
            family="monospace", bbox={"boxstyle": "round", "fc": "white", "alpha": 0.9},
            arrowprops={"arrowstyle": "->", "lw": 0.8},
        )


def draw_percentiles(ax: Axes, panel: Panel, start: float) -> None:
    for template, series in panel.found:
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


PANELS: list[tuple[str, Callable[[Axes, Panel, float], None]]] = [
    ("Cancellation rate by function", draw_rate_by("function_id")),
    ("Cancellation rate by source", draw_rate_by("source")),
    ("Top functions", draw_top),
    ("Share by source", draw_share),
    ("Run age at cancellation", draw_heatmap),
    ("Run age p50 / p90 / p99", draw_percentiles),
]


CLOSE_UP = "Run age at cancellation"
"""The panel drawn again on its own, larger, for the README's section on exemplars."""


def render(stack: DemoStack, end: float, output: Path, close_up: Path, max_data_points: int) -> None:
    """The dashboard's main panels into `output`; the CLOSE_UP panel alone into `close_up`."""
    import matplotlib  # only here: the `preview` extra, which the tests (they check PANELS) do without

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = {title: panel_data(stack, end, title, max_data_points) for title, _ in PANELS}
    sent = sum(stack.sent.values())
    about = f"its queries on a real Prometheus, {sent} cancellations from `simulate` over {int(end - stack.started)} s"
    figure, axes = plt.subplots(3, 2, figsize=(14, 13))
    for ax, (title, draw) in zip(axes.flat, PANELS):
        draw(ax, data[title], stack.started)
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
    figure.suptitle(f"Inngest cancellations dashboard (uid {CANCELLATIONS_UID}): {about}; stars: exemplars, single runs", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    _save(figure, output)
    figure, ax = plt.subplots(figsize=(10, 4.6))
    dict(PANELS)[CLOSE_UP](ax, data[CLOSE_UP], stack.started)
    ax.set_title(f"{CLOSE_UP}: each star is an exemplar, one cancelled run, coloured by source\n({about})", fontsize=9, loc="left")
    figure.tight_layout()
    _save(figure, close_up)


def _save(figure: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "cancellations-dashboard.png")
    parser.add_argument("--close-up", type=Path, default=REPO / "docs" / "run-age-exemplars.png")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--max-data-points", type=int, default=120, help="the panel's width in points, as in Grafana")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dashboard-preview-") as workdir, DemoStack(Path(workdir)) as stack:
        for wave, (count, rate) in enumerate(WAVES):
            print(f"simulate: {count} cancellations at {rate}/s", flush=True)
            stack.simulate(count=count, rate=rate, seed=args.seed + wave)
        end = stack.settle()
        render(stack, end, args.output, args.close_up, args.max_data_points)
    return 0


if __name__ == "__main__":
    sys.exit(main())
