"""`flywheel drift`: the chart (one window, gaps, markers, labels, alerts) and why an alert
did or did not start a retrain (issue 12)."""

import math
from datetime import datetime, timedelta, timezone

import pytest

from streams.drift.commands import _break_gaps, write_chart
from streams.trigger.config import TriggerConfig
from streams.trigger.policy import PastRequest, explain_alert

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)


def test_gaps_are_not_joined():
    ts = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), T0 + timedelta(hours=3)]
    xs, vals = _break_gaps(ts, [0.1, 0.2, None, 0.4])
    assert len(xs) == 5 and math.isnan(vals[3]) and vals[4] == 0.4   # a NaN between 10:02 and 13:00
    assert math.isnan(vals[2])                                         # a missing value is no point
    xs, vals = _break_gaps(ts[:3], [0.1, 0.2, 0.3])
    assert vals == [0.1, 0.2, 0.3]


@pytest.mark.parametrize("n", [1, 6])
def test_png_chart_has_a_narrow_axis_labels_markers_and_alerts(tmp_path, n, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(fig, path, **kw):
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        seen.update(span_days=hi - lo, xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel(),
                    markers=[ln.get_marker() for ln in ax.get_lines()],
                    legend=[t.get_text() for t in ax.get_legend().get_texts()])
        return real_savefig(fig, path, **kw)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    rows = [{"t": (T0 + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S.000"), "value": 0.01 * i,
             "reference": 0.02, "verdict": "ok", "alerts": 1 if i == n - 1 and n > 1 else 0} for i in range(n)]
    write_chart(tmp_path / "c.png", "tx", "off_schema_rate", rows)
    plt.close("all")
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert seen["span_days"] < 1 / 24                     # minutes, not a five-year axis
    assert seen["xlabel"] == "window start (UTC)" and seen["ylabel"] == "off_schema_rate"
    assert "o" in seen["markers"]
    assert ("alert" in seen["legend"]) == (n > 1)


CFG = TriggerConfig("tx", metrics=("off_schema_rate", "label_mix"), min_new_examples=200, cooldown_s=3600)


def test_explain_alert():
    manual = PastRequest("rr-1", "manual", (), T0)
    by_alert = PastRequest("rr-2", "alert", ("a-9",), T0 + timedelta(hours=2))
    at = T0 + timedelta(minutes=10)
    assert explain_alert(CFG, "a-9", "label_mix", at, [manual, by_alert], 0) == "started retrain rr-2"
    assert explain_alert(CFG, "a-1", "label_mix", at, [manual], 0) == (
        "no retrain: cooldown (1h) after the manual request rr-1 at 2026-11-21 10:00:00")
    assert explain_alert(CFG, "a-1", "low_conf_rate", at, [manual], 0).startswith(
        "no retrain: low_conf_rate is not one of [trigger] metrics")
    assert explain_alert(CFG, "a-1", "label_mix", T0 + timedelta(hours=2), [manual], 50) == (
        "waiting: 50 new kept examples since the last request, min_new_examples = 200")
    off = TriggerConfig("tx", enabled=False)
    assert explain_alert(off, "a-1", "label_mix", at, [], 0) == "no retrain: the trigger is off ([trigger] enabled = false)"
