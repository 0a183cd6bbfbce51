"""CLI command of the drift stage: `flywheel drift`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
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
    from kernel.table import render
    from streams.trigger import store as tstore
    from streams.trigger.config import trigger_config
    from streams.trigger.policy import PastRequest, explain_alert

    task = ctx().task(task_name)
    tcfg = trigger_config(task)
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
            f"SELECT toString(requested_at) AS requested_at, request_id, reason_kind, alert_ids, watermark, "
            f"gold_version FROM retrain_requests FINAL WHERE task = {sql_str(task_name)} ORDER BY requested_at DESC")
        last = tstore.last_request(store, task_name)
        new_kept, _ = tstore.kept_since(store, task_name, last.watermark if last else None)
        series = None
        if chart is not None:
            series = store.rows(f"SELECT toString(window_start) AS t, value, reference, verdict, alerts "
                                f"FROM drift_windows FINAL WHERE {cond} ORDER BY window_start")
    from schemas.timefmt import parse_ch_time

    past = [PastRequest(r["request_id"], r["reason_kind"], tuple(r["alert_ids"]), parse_ch_time(r["requested_at"]))
            for r in requests]
    title = f"drift windows of {task_name}" + (f" ({metric})" if metric else "")
    if windows:
        click.echo(render(("window_start", "metric", "detector", "n", "value", "reference", "statistic", "verdict",
                           "alerts"),
                          [(r["window_start"], r["metric"], r["detector"], r["n"], _num(r["value"]),
                            _num(r["reference"]), _num(r["statistic"]), r["verdict"], r["alerts"])
                           for r in reversed(windows)], title=title,
                          numeric=(False, False, False, True, True, True, True, False, True)))
    else:
        click.echo(f"no drift windows for {task_name} yet (is `flywheel up` running?)")
    click.echo("")
    if alerts:
        click.echo(render(("detected_at", "alert_id", "metric", "before", "after", "severity", "trigger"),
                          [(r["detected_at"], r["alert_id"], r["metric"], _num(r["reference"]), _num(r["value"]),
                            r["severity"], explain_alert(tcfg, r["alert_id"], r["metric"],
                                                         parse_ch_time(r["detected_at"]), past, new_kept))
                           for r in alerts], title="alerts (trigger: what the retrain trigger did with each)",
                          numeric=(False, False, False, True, True, False, False)))
    else:
        click.echo("no alerts")
    if requests:
        click.echo("")
        click.echo(render(("requested_at", "request_id", "reason", "watermark", "gold_version"),
                          [(r["requested_at"], r["request_id"], r["reason_kind"], r["watermark"],
                            r["gold_version"]) for r in requests[:5]], title="retrain requests"))
    if chart is not None:
        write_chart(chart, task_name, metric, series or [])
        click.echo(f"chart of {metric} ({len(series or [])} windows) written to {chart}")


def _num(v) -> str:
    return "" if v is None else f"{v:.4g}"


def write_chart(path: Path, task: str, metric: str, rows: list[dict]) -> None:
    if path.suffix.lower() == ".html":
        import orjson

        data = orjson.dumps([[r["t"], r["value"], r["reference"],
                              "drift" if r.get("alerts") else r["verdict"]] for r in rows]).decode()
        path.write_text(_HTML.replace("__TITLE__", f"{task}: {metric}").replace("__DATA__", data))
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException("a PNG chart needs matplotlib: pip install flywheel[charts] "
                                   "(or write --chart FILE.html, which needs nothing)") from None

    import matplotlib.dates as mdates

    ts = [datetime.fromisoformat(r["t"]).replace(tzinfo=timezone.utc) for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4))
    if not rows:
        ax.text(0.5, 0.5, f"no drift windows of {metric} yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        xs, values, refs = _break_gaps(ts, [r["value"] for r in rows], [r["reference"] for r in rows])
        ax.plot(xs, values, marker="o", markersize=3, linewidth=1.2, label=metric)
        ax.plot(xs, refs, linestyle="--", color="gray", linewidth=1, label="reference (training data)")
        alerted = [(t, r["value"]) for t, r in zip(ts, rows) if r.get("alerts") or r["verdict"] == "drift"]
        for t, _ in alerted:
            ax.axvline(t, color="red", alpha=0.25, linewidth=1)
        if alerted:
            ax.scatter(*zip(*alerted), color="red", zorder=3, s=30, label="alert")
        step = _step(ts)
        ax.set_xlim(ts[0] - step / 2, ts[-1] + step / 2)  # one window: a narrow axis, not five years
        locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
    ax.set_xlabel("window start (UTC)")
    ax.set_ylabel(metric)
    ax.set_title(f"{task}: {metric} per window")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _step(ts: list) -> timedelta:
    """The usual spacing of the windows (their median gap), one minute when there is one window."""
    gaps = sorted(b - a for a, b in zip(ts, ts[1:]) if b > a)
    return gaps[len(gaps) // 2] if gaps else timedelta(minutes=1)


def _break_gaps(ts: list, *series: list) -> tuple:
    """Insert a gap marker (None -> NaN) where windows are missing, so that a line never joins
    points across hours without data: a gap is more than twice the usual spacing."""
    step = _step(ts)
    xs: list = []
    out: list[list] = [[] for _ in series]
    for i, t in enumerate(ts):
        if i and t - ts[i - 1] > 2 * step:
            xs.append(ts[i - 1] + (t - ts[i - 1]) / 2)
            for o in out:
                o.append(float("nan"))
        xs.append(t)
        for o, s in zip(out, series):
            o.append(float("nan") if s[i] is None else s[i])
    return (xs, *out)


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
