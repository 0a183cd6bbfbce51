"""End to end in a real browser (headless Chromium from Debian, driven by Selenium) on the real
broker and ClickHouse, with the console that `flywheel up` starts: low-confidence items -> the
review page -> three verdicts by keyboard -> verdict rows -> gold growth with the contamination
check -> the next gate uses the new version (a fresh baseline pinned for it) -> the canary panel
-> a guarded rollback from the promotion history. Screenshots of each page are saved (FLYWHEEL_TEST_ARTIFACTS,
else the test's tmp dir)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest

from schemas.events import teacher_log_message
from streams.canary.judge import SliceCounts, judge
from streams.canary.store import record_decision
from tests.conftest import free_port
from tests.helpers.console import canary_pairs, registry, route
from tests.helpers.kafka import publish
from tests.helpers.testing import add_sections
from tests.worker import WorkerProcess, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                 reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")]


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
              "--disable-gpu", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def press(driver, keys):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()


def current_item(driver):
    """The id of the item on the page, or None while a page is loading."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.ID, "item").get_attribute("data-item")
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def test_label_three_items_by_keyboard_then_grow_and_gate(settings, tasks_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    add_sections(tasks_dir, "[review]\nlow_conf_gold_share = 1.0\n\n[gate]\nmin_slice_examples = 1\n"
                            "insufficient_slice = \"warn\"\n")
    shots = Path(os.environ.get("FLYWHEEL_TEST_ARTIFACTS") or tmp_path / "screens")
    shots.mkdir(parents=True, exist_ok=True)
    servers = settings.kafka.servers
    env = {**os.environ, "FLYWHEEL_KAFKA_BOOTSTRAP": servers, "FLYWHEEL_DATA_DIR": str(settings.data_dir),
           "FLYWHEEL_TASKS_DIR": str(settings.tasks_dir)}
    cli = [sys.executable, "-c", "from flywheel.cli import main; main()"]
    port = free_port()
    with WorkerProcess(settings, tmp_path / "worker.log", extra_env={"FLYWHEEL_CONSOLE_PORT": str(port)}) as w:
        gold = tmp_path / "gold.jsonl"
        gold.write_bytes(b"\n".join(orjson.dumps(g) for g in [
            {"id": "g1", "input": "MONTHLY RENT FLAT 4B", "output": "rent", "slice": "GB", "teacher_output": "rent"},
            {"id": "g2", "input": "TFL TRAVEL CHARGE", "output": "transport", "slice": "GB", "teacher_output": "transport"}]))
        assert subprocess.run(cli + ["gold", "import", "--task", "transactions", str(gold)], env=env,
                              capture_output=True).returncode == 0
        logs = [teacher_log_message(id="k-1", task="transactions", input="SAINSBURYS SUPERSTORE CAMDEN 0412",
                                    output="groceries", confidence=0.95, teacher="t", meta={"country": "GB"},
                                    ts="2026-11-21T10:00:00Z")]
        inputs = ["SAINSBURYS SUPERSTORE CAMDEN 0413",   # near duplicate of the kept k-1: refused from gold
                  "PRET A MANGER 118 HOLBORN", "THAMES WATER DD 55190", "UNKNOWN MERCHANT 77"]
        logs += [teacher_log_message(id=f"lc-{i}", task="transactions", input=text, output="groceries",
                                     confidence=0.3 + i / 100, teacher="t", meta={"country": "GB" if i % 2 else "FR"},
                                     ts=f"2026-11-21T10:00:1{i}Z") for i, text in enumerate(inputs)]
        asyncio.run(publish(servers, logs))
        store = w.store()
        wait_for(lambda: store.scalar("SELECT count() FROM review_items FINAL WHERE status = 'pending'") == 4,
                 60, what="4 pending review items")

        base = f"http://127.0.0.1:{port}"
        driver = None
        try:
            wait_for(lambda: urllib.request.urlopen(f"{base}/healthz", timeout=2).read() == b"ok", 30, what="console")
            driver = browser()
            wait = WebDriverWait(driver, 20)
            driver.get(f"{base}/review/transactions")
            name = wait.until(ec.presence_of_element_located((By.ID, "reviewer-input")))
            name.send_keys("ann", Keys.ENTER)
            wait.until(ec.presence_of_element_located((By.ID, "item")))
            assert current_item(driver) == "lc-0"
            driver.save_screenshot(str(shots / "review.png"))
            press(driver, "1")                                          # lc-0: the teacher's answer
            wait.until(lambda d: current_item(d) == "lc-1")
            assert "saved lc-0: groceries" in driver.find_element(By.ID, "saved").text
            press(driver, "o")                                          # lc-1: type another label
            press(driver, "dining" + Keys.ENTER)
            wait.until(lambda d: current_item(d) == "lc-2")
            press(driver, "5")                                          # lc-2: the 5th option (a label)
            wait.until(lambda d: current_item(d) == "lc-3")
            option5 = "utilities"  # options: groceries (teacher), then transport, dining, rent, utilities
            driver.save_screenshot(str(shots / "review-after-three.png"))
            press(driver, "n")                                          # skip lc-3: it stays pending
            wait.until(lambda d: current_item(d) == "lc-3" or d.find_elements(By.ID, "empty"))

            wait_for(lambda: store.scalar("SELECT count() FROM review_verdicts FINAL WHERE reviewer = 'ann'") == 3,
                     30, what="3 verdict rows")
            got = {r["item_id"]: r["answer"] for r in store.rows("SELECT item_id, answer FROM review_verdicts FINAL")}
            assert got == {"lc-0": "groceries", "lc-1": "dining", "lc-2": option5}
            wait_for(lambda: store.scalar("SELECT count() FROM review_items FINAL WHERE status = 'submitted'") == 3,
                     30, what="3 completed items")

            driver.get(f"{base}/overview/transactions")
            driver.find_element(By.ID, "grow").click()                  # grow the gold set (CSRF-protected form)
            flash = wait.until(ec.presence_of_element_located((By.ID, "grown"))).text
            assert "v2" in flash and "2 added, 1 refused" in flash, flash
            rows = [r.text for r in driver.find_elements(By.CSS_SELECTOR, "tr.gold-row")]
            assert rows[0].startswith("v2") and "low_conf 2" in rows[0] and "seed 2" in rows[0], rows
            refusal = store.rows("SELECT item_id, reason FROM review_routing FINAL WHERE outcome = 'refused'")
            assert refusal[0]["item_id"] == "lc-0" and "near duplicate" in refusal[0]["reason"] \
                and "'k-1'" in refusal[0]["reason"]

            # the next gate uses gold v2, with a baseline pinned for it
            preds = tmp_path / "preds.jsonl"
            preds.write_bytes(b"\n".join(orjson.dumps({"id": i, "output": o}) for i, o in
                                         [("g1", "rent"), ("g2", "transport"), ("lc-1", "dining"), ("lc-2", "groceries")]))
            out = subprocess.run(cli + ["gate", "--task", "transactions", "--predictions", str(preds), "--json",
                                        "--no-publish"], env=env, capture_output=True)
            verdict = json.loads(out.stdout)
            assert verdict["gold_version"] == 2 and verdict["n"] == 4, out.stderr.decode()[-2000:]
            by_source = {s["source"]: s for s in verdict["sources"]}
            assert by_source["seed"]["score"] == 1.0 and by_source["low_conf"]["score"] == 0.5
            assert by_source["low_conf"]["baseline"] == 0.0  # the teacher said groceries to both
            assert store.scalar("SELECT count() FROM gate_baselines WHERE gold_version = 2") == 1
            # a canary in progress and a promotion history with a previous version
            registry(store, "transactions", "transactions-v1", "retired", 1)
            registry(store, "transactions", "transactions-v2", "serving", 2)
            registry(store, "transactions", "transactions-v3", "canary", 3)
            route(store, "transactions", 1, "transactions-v1")
            route(store, "transactions", 2, "transactions-v2", previous="transactions-v1")
            route(store, "transactions", 3, "transactions-v2", previous="transactions-v1", canary="transactions-v3",
                  share=0.1, action="canary_start")
            canary_pairs(store, "transactions", "transactions-v3", "transactions-v2",
                         {"GB": (260, 9), "FR": (140, 11), "DE": (30, 1)})
            v = judge({"GB": SliceCounts(260, 9), "FR": SliceCounts(140, 11), "DE": SliceCounts(30, 1)}, 1500,
                      min_pairs=500, min_duration=3600, max_disagreement=0.05, slice_tolerance=0.05, alpha=0.05)
            record_decision(store, "transactions", "transactions-v3", "transactions-v2", v, "none")

            driver.get(f"{base}/overview/transactions")
            assert "on gold v2" in driver.find_element(By.ID, "gate").text
            canary = driver.find_element(By.ID, "canary").text
            assert "transactions-v3" in canary and "430 of min_pairs 500" in canary and "INCONCLUSIVE" in canary
            driver.save_screenshot(str(shots / "overview.png"))
            driver.execute_script("document.getElementById('canary').scrollIntoView()")
            driver.save_screenshot(str(shots / "overview-canary.png"))
            driver.set_window_size(1280, 3400)
            driver.save_screenshot(str(shots / "overview-full.png"))
            driver.set_window_size(1280, 1000)

            # rollback: a wrong confirmation is refused with a message, the right one rolls back
            form = driver.find_element(By.ID, "rollback-form")
            driver.execute_script("arguments[0].scrollIntoView()", form)
            form.find_element(By.NAME, "reason").send_keys("GB answers got worse")
            form.find_element(By.ID, "rollback-confirm").send_keys("yes")
            driver.find_element(By.ID, "rollback").click()
            err = wait.until(ec.presence_of_element_located((By.ID, "error"))).text
            assert "type the task name 'transactions'" in err, err
            driver.save_screenshot(str(shots / "overview-rollback-refused.png"))
            form = driver.find_element(By.ID, "rollback-form")
            assert form.find_element(By.NAME, "operator").get_attribute("value") == "ann"  # the reviewer's name
            form.find_element(By.ID, "rollback-confirm").send_keys("transactions")
            driver.find_element(By.ID, "rollback").click()
            flash = wait.until(ec.presence_of_element_located((By.ID, "rolled"))).text
            assert "rolled back to transactions-v1 (revision 4) by ann" in flash, flash
            hist = driver.find_element(By.ID, "history").text.splitlines()
            assert hist[1].startswith("4 rollback transactions-v1") and "ann (console)" in hist[1], hist
            assert "GB answers got worse" in hist[1]  # the reason typed before the refusal was kept
            driver.execute_script("document.getElementById('history').scrollIntoView()")
            driver.save_screenshot(str(shots / "overview-rolled-back.png"))
        finally:
            if driver is not None:
                driver.quit()
        assert "console    starting on" in w.log()
