"""The console's pages and guards, in process (Starlette's test client) on the real embedded
ClickHouse: CSRF, the token, the reviewer's name, verdict validation, both pages rendering."""

from __future__ import annotations

import re

import orjson
import pytest
from starlette.testclient import TestClient

from console.app import Console, build_app
from console.security import is_loopback
from kernel.tasks import parse_task
from streams.review.service import Record, ReviewService
from tests.helpers.console import canary_pairs, registry, route
from tests.helpers.review import item, run

TASK = parse_task({"name": "tx", "labels": ["food", "travel", "rent"], "slice": "meta.country"})


@pytest.fixture
def console(store):
    sent = []

    async def publish(msg):
        sent.append(msg)

    run(ReviewService({"tx": TASK}, store), [item("a", "TESCO STORES 1"), item("b", "UBER <b>TRIP</b> 2"),
                                             Record(orjson.dumps({"id": "c", "task": "tx", "kind": "canary_disagreement",
                                                    "input": "SHELL 9", "output": "travel", "reason": "canary",
                                                    "answers": {"incumbent": "travel", "candidate": "food"},
                                                    "schema_version": 1}), "review.queue", 0, 3, 1_700_000_100.0)])
    c = Console({"tx": TASK}, store, publish)
    return c, sent


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_review_flow_with_name_csrf_and_validation(console):
    c, sent = console
    client = TestClient(build_app(c), base_url="http://127.0.0.1")
    page = client.get("/review/tx")
    assert page.status_code == 200 and "Your name" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    token = csrf_of(page.text)
    assert client.post("/reviewer", data={"reviewer": "ann", "next": "/review/tx"}).status_code == 403  # no CSRF
    r = client.post("/reviewer", data={"reviewer": "ann", "next": "/review/tx", "csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get("/review/tx")
    assert "TESCO STORES 1" in page.text and 'data-key="1"' in page.text and "teacher" in page.text
    form = {"csrf": token, "item_id": "a", "cursor": re.search(r'name="cursor" value="([^"]+)"', page.text).group(1)}
    bad = client.post("/review/tx/verdict", data={**form, "action": "submit", "other": "pizza"})
    assert bad.status_code == 400 and "not a label" in bad.text and sent == []
    assert client.post("/review/tx/verdict", data={**form, "answer": "food", "csrf": "forged"}).status_code == 403
    ok = client.post("/review/tx/verdict", data={**form, "action": "submit", "answer": "food", "other": "rent"})
    assert ok.status_code == 200 and "saved a: rent" in ok.text  # typed label wins over the radio
    assert sent[-1]["reviewer"] == "ann" and sent[-1]["answer"] == "rent" and sent[-1]["item_id"] == "a"
    assert "UBER &lt;b&gt;TRIP&lt;/b&gt; 2" in ok.text  # next item, escaped
    cross = client.post("/review/tx/verdict", data={**form, "answer": "food"}, headers={"origin": "http://evil.example"})
    assert cross.status_code == 403


def test_overview_renders_every_panel(console, store, tmp_path):
    c, _ = console
    client = TestClient(build_app(c), base_url="http://127.0.0.1")
    page = client.get("/overview/tx")
    assert page.status_code == 200
    for text in ("Curation outcome rates", "Gold versions by source", "no gate verdict yet", "3 pending",
                 "Promotion history (model_config)", "no promotions yet"):  # the serving DDL made the table
        assert text in page.text, text
    assert "http" not in re.sub(r'(xmlns|href="/)[^"]*"', "", page.text.split("<main>")[1]).replace("http://127.0.0.1", "")
    assert client.get("/overview/nope").status_code == 404


def test_token_guards_everything_but_login(console):
    c, _ = console
    c.token = "s3cret-token-long-enough"
    client = TestClient(build_app(c), base_url="http://10.0.0.5")
    assert client.get("/review/tx", headers={"accept": "text/html"}, follow_redirects=False).status_code == 303
    assert client.get("/overview/tx").status_code == 401
    login = client.get("/login")
    token = csrf_of(login.text)
    assert client.post("/login", data={"csrf": token, "token": "wrong"}).status_code == 401
    assert client.post("/login", data={"csrf": token, "token": "s3cret-token-long-enough"},
                       follow_redirects=False).status_code == 303
    assert client.get("/overview/tx").status_code == 200
    assert TestClient(build_app(c)).get("/overview/tx", headers={"authorization": "Bearer s3cret-token-long-enough"}).status_code == 200


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


# ---------------------------------------------------------------- rollback button, canary panel

def _registry(store, version, status, seq):
    registry(store, "tx", version, status, seq)


def _route(store, revision, serving, previous=None, canary=None, share=0.0, action="promote"):
    route(store, "tx", revision, serving, previous, canary, share, action)


def test_rollback_button_is_guarded_and_uses_the_promotion_rules(console, store, settings):
    from serving import history

    c, _ = console
    c.kafka = settings.kafka
    _registry(store, "tx-v1", "retired", 1)
    _registry(store, "tx-v2", "serving", 2)
    _route(store, 1, "tx-v1")
    _route(store, 2, "tx-v2", previous="tx-v1")
    client = TestClient(build_app(c), base_url="http://127.0.0.1")
    page = client.get("/overview/tx")
    assert 'id="rollback"' in page.text and "roll back to tx-v1" in page.text
    token = csrf_of(page.text)
    form = {"csrf": token, "operator": "ann", "reason": "bad answers on GB", "confirm": "tx"}
    assert client.post("/promote/tx/rollback", data={**form, "csrf": "forged"}).status_code == 403
    wrong = client.post("/promote/tx/rollback", data={**form, "confirm": "yes"})
    assert wrong.status_code == 400 and "type the task name" in wrong.text
    noname = client.post("/promote/tx/rollback", data={**form, "operator": "<script>"})
    assert noname.status_code == 400 and "needs your name" in noname.text
    assert history.current(store, "tx").serving == "tx-v2"  # nothing changed so far
    ok = client.post("/promote/tx/rollback", data=form)
    assert ok.status_code == 200 and "rolled back to tx-v1 (revision 3) by ann" in ok.text
    cur = history.current(store, "tx")
    assert (cur.serving, cur.previous, cur.action, cur.decided_by) == ("tx-v1", None, "rollback", "ann (console)")
    assert cur.reason == "bad answers on GB"
    status = {r["version"]: r["status"] for r in store.rows("SELECT version, status FROM model_registry FINAL")}
    assert status == {"tx-v1": "serving", "tx-v2": "rolled_back"}
    assert 'id="rollback"' not in ok.text and "nothing to roll back to" in ok.text  # no previous any more
    again = client.post("/promote/tx/rollback", data=form)  # the rules are checked again on the server
    assert again.status_code == 409 and "rollback refused: nothing to roll back to" in again.text
    assert history.current(store, "tx").revision == 3


def test_rollback_refusal_from_the_lifecycle_is_a_message(console, store, settings):
    c, _ = console
    c.kafka = settings.kafka
    _registry(store, "tx-v1", "rejected", 1)  # rejected versions can never serve again
    _registry(store, "tx-v2", "serving", 2)
    _route(store, 2, "tx-v2", previous="tx-v1")
    client = TestClient(build_app(c), base_url="http://127.0.0.1")
    token = csrf_of(client.get("/overview/tx").text)
    r = client.post("/promote/tx/rollback", data={"csrf": token, "operator": "ann", "confirm": "tx"})
    assert r.status_code == 409 and "rollback refused" in r.text and "rejected" in r.text


def test_rollback_without_a_broker_is_a_message_not_a_500(console, store):
    c, _ = console
    _registry(store, "tx-v1", "retired", 1)
    _registry(store, "tx-v2", "serving", 2)
    _route(store, 2, "tx-v2", previous="tx-v1")
    client = TestClient(build_app(c), base_url="http://127.0.0.1")
    page = client.get("/overview/tx")
    assert 'id="rollback" class="danger" disabled' in page.text
    r = client.post("/promote/tx/rollback", data={"csrf": csrf_of(page.text), "operator": "ann", "confirm": "tx"})
    assert r.status_code == 503 and "flywheel rollback --task tx" in r.text


def test_canary_panel_from_the_canary_tables(console, store):
    from streams.canary.judge import SliceCounts, judge
    from streams.canary.store import record_decision

    c, _ = console
    _route(store, 1, "tx-v1")
    _route(store, 2, "tx-v1", canary="tx-v2", share=0.1, action="canary_start")
    rows = canary_pairs(store, "tx", "tx-v2", "tx-v1", {"GB": (80, 8), "FR": (40, 10)})
    store.insert("canary_pairs", rows[:10])  # replayed pairs count once
    v = judge({"GB": SliceCounts(80, 8), "FR": SliceCounts(40, 10)}, 600, min_pairs=500, min_duration=3600,
              max_disagreement=0.05, slice_tolerance=0.05, alpha=0.05)
    record_decision(store, "tx", "tx-v2", "tx-v1", v, "none")
    client = TestClient(build_app(c), base_url="http://127.0.0.1")
    page = client.get("/overview/tx")
    assert page.status_code == 200
    html = page.text.split('id="canary"')[1].split("</section>")[0]
    assert "tx-v2" in html and "vs serving tx-v1" in html and "running" in html and "10% of live requests" in html
    assert "120 of min_pairs 500" in html and 'id="canary-pairs" value="0.24"' in html
    assert "INCONCLUSIVE" in html and "fewer than min_pairs = 500" in html
    # task-wide: 18 of 120 disagree; Wilson 95% interval 0.097 - 0.225
    assert "<td>all slices</td><td>120</td><td>18</td>" in html and "0.150" in html and "0.097 – 0.225" in html
    assert "<td>FR</td><td>40</td><td>10</td>" in html and "<td>GB</td><td>80</td><td>8</td>" in html
    assert "Canary disagreement rate per minute" in html


def test_wilson_interval():
    from console.canary import progress, wilson

    assert wilson(0, 0) is None
    lo, hi = wilson(18, 120)
    assert round(lo, 3) == 0.097 and round(hi, 3) == 0.225  # (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.27 < hi < 0.28  # not empty at k = 0 (a normal interval would be [0, 0])
    lo, hi = wilson(10, 10)
    assert hi == 1.0 and 0.72 < lo < 0.73
    assert wilson(50, 100)[0] < 0.5 < wilson(50, 100)[1]
    for k, n in ((18, 120), (3, 40), (97, 100), (0, 7)):  # the ends are where the score test sits exactly at z
        for p in wilson(k, n):
            assert p in (0.0, 1.0) and k in (0, n) or abs((k - n * p) ** 2 - 1.959963984540054 ** 2 * n * p * (1 - p)) < 1e-6
    with pytest.raises(ValueError):
        wilson(3, 2)
    assert progress(120, 500) == 0.24 and progress(900, 500) == 1.0 and progress(5, 0) == 1.0


def test_redirect_targets_never_leave_the_console():
    from console.app import _local_path

    assert _local_path("/review/tx?cursor=a") == "/review/tx?cursor=a"
    for outside in ("//evil.example/", "/\\evil.example/", "/ok\\..\\x", "https://evil.example/", "/a\r\nb", ""):
        assert _local_path(outside) == "/", outside
