"""The HTML report: the text report's numbers plus plots (plotly, its JS inlined: the file works offline)."""

from __future__ import annotations

import datetime as dt
import html

import plotly.graph_objects as go

from ._report import LEVER_NAMES, Report, render_text, usd

__all__ = ["render_html"]


def _waterfall(report: Report) -> go.Figure:
    labels = ["baseline", *(LEVER_NAMES[lever] for lever in report.savings_nusd), "actual"]
    values = [float(usd(report.baseline_nusd)), *(-float(usd(v)) for v in report.savings_nusd.values()), 0.0]
    measure = ["absolute", *("relative" for _ in report.savings_nusd), "total"]
    figure = go.Figure(go.Waterfall(x=labels, y=values, measure=measure))
    return figure.update_layout(title="Savings waterfall: baseline → each lever → actual (USD)")


def _cost_per_query(report: Report) -> go.Figure:
    when = [dt.datetime.fromtimestamp(b.start_ms / 1000, tz=dt.UTC) for b in report.over_time]
    actual = [float(usd(b.actual_nusd) / b.requests) for b in report.over_time]
    baseline = [float(usd(b.baseline_nusd) / b.requests) for b in report.over_time]
    figure = go.Figure([go.Scatter(x=when, y=actual, name="actual"), go.Scatter(x=when, y=baseline, name="baseline")])
    return figure.update_layout(title="Cost per query over time (USD)")


def _paths(report: Report) -> go.Figure:
    figure = go.Figure(go.Pie(labels=list(report.sources), values=list(report.sources.values()), hole=0.4))
    return figure.update_layout(title="Share of traffic per path")


def render_html(report: Report) -> str:
    """A self-contained page: plotly's JS is inlined once, so it opens without a network."""
    figures = [_waterfall(report), _cost_per_query(report), _paths(report)]
    plots = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>costwise report</title></head><body>"
        f"<h1>costwise report</h1><pre>{html.escape(render_text(report))}</pre>{''.join(plots)}</body></html>"
    )
