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
