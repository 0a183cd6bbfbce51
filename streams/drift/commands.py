"""CLI command of the drift stage: `flywheel drift`."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from kernel.cli import ctx
from kernel.warehouse import sql_str
from streams.drift.config import METRICS


@click.command()
@click.option("--task", "task_name", required=True, help="Task name, as declared in its TOML file.")
@click.option("--metric", type=click.Choice(METRICS), default=None, help="Only this metric. [default: all]")
@click.option("--windows", "limit", type=click.IntRange(1, 100_000), default=20, show_default=True,
              help="How many recent windows to show (per metric with --metric, else overall).")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a chart of --metric over time: FILE.png (matplotlib) or FILE.html.")
def drift(task_name, metric, limit, chart):
    """Show the recent drift windows and alerts of a task; optionally chart a metric.

    \b
      flywheel drift --task transactions
      flywheel drift --task transactions --metric off_schema_rate --chart off_schema.png
    """
    from rich.console import Console
    from rich.table import Table

    ctx().task(task_name)
    if chart is not None:
        if metric is None:
            raise click.BadParameter("name the metric to chart, e.g. --metric off_schema_rate", param_hint="--chart")
        if chart.suffix.lower() not in (".png", ".html"):
            raise click.BadParameter(f"{chart.name}: the chart is written as .png or .html; "
                                     "use e.g. --chart drift.png", param_hint="--chart")
    cond = f"task = {sql_str(task_name)}" + (f" AND metric = {sql_str(metric)}" if metric else "")
    with ctx().store() as store:
        windows = store.rows(
            f"SELECT toString(window_start) AS window_start, metric, detector, n, value, reference, statistic, "
            f"verdict, alerts FROM drift_windows FINAL WHERE {cond} ORDER BY window_start DESC, metric LIMIT {limit}")
        alerts = store.rows(
            f"SELECT toString(detected_at) AS detected_at, alert_id, metric, detector, value, reference, severity "
            f"FROM drift_alerts FINAL WHERE {cond} ORDER BY detected_at DESC LIMIT {limit}")
        requests = store.rows(
            f"SELECT toString(requested_at) AS requested_at, request_id, reason_kind, watermark, gold_version "
            f"FROM retrain_requests FINAL WHERE task = {sql_str(task_name)} ORDER BY requested_at DESC LIMIT 5")
        series = None
        if chart is not None:
            series = store.rows(f"SELECT toString(window_start) AS t, value, reference, verdict FROM drift_windows "
                                f"FINAL WHERE {cond} ORDER BY window_start")
    console = Console()
    t = Table(title=f"drift windows of {task_name}" + (f" ({metric})" if metric else ""))
    for col in ("window_start", "metric", "detector", "n", "value", "reference", "statistic", "verdict", "alerts"):
        t.add_column(col, justify="right" if col in ("n", "value", "reference", "statistic", "alerts") else "left")
    for r in reversed(windows):
        t.add_row(r["window_start"], r["metric"], r["detector"], str(r["n"]), _num(r["value"]),
                  _num(r["reference"]), _num(r["statistic"]), r["verdict"], str(r["alerts"]))
    console.print(t if windows else f"no drift windows for {task_name} yet (is `flywheel up` running?)")
    a = Table(title="alerts")
    for col in ("detected_at", "alert_id", "metric", "detector", "before", "after", "severity"):
        a.add_column(col)
    for r in alerts:
        a.add_row(r["detected_at"], r["alert_id"], r["metric"], r["detector"], _num(r["reference"]),
                  _num(r["value"]), r["severity"])
    console.print(a if alerts else "no alerts")
    if requests:
        q = Table(title="retrain requests")
        for col in ("requested_at", "request_id", "reason", "watermark", "gold_version"):
            q.add_column(col)
        for r in requests:
            q.add_row(r["requested_at"], r["request_id"], r["reason_kind"], r["watermark"], str(r["gold_version"]))
        console.print(q)
    if chart is not None:
        write_chart(chart, task_name, metric, series or [])
        click.echo(f"chart of {metric} ({len(series or [])} windows) written to {chart}")


def _num(v) -> str:
    return "" if v is None else f"{v:.4g}"


def write_chart(path: Path, task: str, metric: str, rows: list[dict]) -> None:
    if path.suffix.lower() == ".html":
        import orjson

        data = orjson.dumps([[r["t"], r["value"], r["reference"], r["verdict"]] for r in rows]).decode()
        path.write_text(_HTML.replace("__TITLE__", f"{task}: {metric}").replace("__DATA__", data))
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException("a PNG chart needs matplotlib: pip install flywheel[charts] "
                                   "(or write --chart FILE.html, which needs nothing)") from None
    ts = [datetime.fromisoformat(r["t"]).replace(tzinfo=timezone.utc) for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(ts, [r["value"] for r in rows], label=metric)
    ax.plot(ts, [r["reference"] for r in rows], label="reference", linestyle="--")
    drifts = [(t, r["value"]) for t, r in zip(ts, rows) if r["verdict"] == "drift"]
    if drifts:
        ax.scatter(*zip(*drifts), color="red", zorder=3, label="alert")
    ax.set_title(f"{task}: {metric}")
    ax.legend()
    fig.autofmt_xdate()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


_HTML = """<!doctype html><meta charset="utf-8"><title>__TITLE__</title>
<h3>__TITLE__</h3><svg id="c" width="900" height="300" style="border:1px solid #ccc"></svg>
<script>
const rows = __DATA__, svg = document.getElementById('c'), W = 900, H = 300, P = 30;
const vals = rows.flatMap(r => [r[1], r[2]]).filter(v => v !== null);
const lo = Math.min(...vals, 0), hi = Math.max(...vals, 1e-9);
const x = i => P + i * (W - 2 * P) / Math.max(rows.length - 1, 1), y = v => H - P - (v - lo) * (H - 2 * P) / (hi - lo || 1);
const line = (k, color, dash) => { const p = rows.map((r, i) => r[k] === null ? '' : `${x(i)},${y(r[k])}`).join(' ');
  svg.innerHTML += `<polyline fill="none" stroke="${color}" stroke-dasharray="${dash}" points="${p}"/>`; };
line(1, 'steelblue', ''); line(2, 'gray', '4');
rows.forEach((r, i) => { if (r[3] === 'drift') svg.innerHTML += `<circle cx="${x(i)}" cy="${y(r[1])}" r="4" fill="red"/>`; });
svg.innerHTML += `<text x="2" y="12" font-size="10">${hi.toPrecision(3)}</text><text x="2" y="${H - 2}" font-size="10">${lo.toPrecision(3)}</text>`;
svg.innerHTML += `<text x="${P}" y="${H - 2}" font-size="10">${rows.length ? rows[0][0] : ''}</text><text x="${W - 150}" y="${H - 2}" font-size="10">${rows.length ? rows[rows.length - 1][0] : ''}</text>`;
</script>
"""


commands: list = [drift]
