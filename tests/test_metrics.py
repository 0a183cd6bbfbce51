"""Operations: the metrics endpoint, health, lag arithmetic and fault classification (units),
and a scrape of a real stream worker after it curated events on the real broker."""

from __future__ import annotations

import asyncio
import errno
import urllib.error
import urllib.request

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kernel import metrics
from kernel.faults import classify
from kernel.settings import SettingsError, load_settings


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a /metrics page."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples, name, **labels) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == str(val) for k, val in labels.items()))


def test_lag_is_end_minus_committed_never_negative():
    ends = {("t", 0): 100, ("t", 1): 50, ("t", 2): 7}
    committed = {("t", 0): 90, ("t", 1): 53}          # the embedded broker's end can lag its real end
    assert metrics.lag_of(committed, ends) == {("t", 0): 10, ("t", 1): 0, ("t", 2): 7}


def test_faults_that_heal_are_retried_and_data_faults_are_not():
    from kernel.warehouse import WarehouseError
    from kernel.warehouse.remote import OwnerUnreachable

    assert classify(OwnerUnreachable("the owner did not answer")) == classify(ConnectionRefusedError())
    assert classify(ConnectionRefusedError()).heals and classify(ConnectionRefusedError()).kind == "store"
    assert classify(OSError(errno.ENOSPC, "No space left on device")).kind == "disk_full"
    assert classify(WarehouseError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. "
                                   "(NOT_ENOUGH_SPACE)")) .kind == "disk_full"
    data = classify(WarehouseError("Code: 41. DB::Exception: Cannot parse datetime: (CANNOT_PARSE_DATETIME)"))
    assert data.kind == "data" and not data.heals
    assert not classify(WarehouseError("Code: 252. DB::Exception: Too many partitions for single INSERT "
                                       "block (more than 100). (TOO_MANY_PARTS)")).heals
    assert classify(WarehouseError("Code: 159. DB::Exception: Timeout exceeded")).heals
    from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

    assert classify(KafkaConnectionError("no broker")).kind == "broker"
    assert not classify(MessageSizeTooLargeError()).heals


def test_metrics_port_setting():
    assert load_settings({}).metrics_port == 0
    assert load_settings({"FLYWHEEL_METRICS_PORT": "9464"}).metrics_port == 9464
    with pytest.raises(SettingsError, match="FLYWHEEL_TRAIN_METRICS_PORT"):
        load_settings({"FLYWHEEL_TRAIN_METRICS_PORT": "70000"})


def test_endpoint_serves_metrics_and_health():
    health = metrics.Health()
    progress = metrics.Progress(stall_after=0.0)
    health.add("curate", progress)
    server = metrics.MetricsServer("127.0.0.1", 0, health=health).start()
    try:
        metrics.RETRIES.labels("unit test op", "store").inc(3)
        s = scrape(server.url)
        assert total(s, "flywheel_retries_total", operation="unit test op", fault="store") == 3
        assert total(s, "process_resident_memory_bytes") > 0
        body = orjson.loads(urllib.request.urlopen(server.url + "/health", timeout=10).read())
        assert body["status"] == "ok" and body["checks"]["curate"]["ok"]
        progress.failing("write the batch: store unreachable")   # stalled at once (stall_after=0)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + "/health", timeout=10)
        assert err.value.code == 503
        assert "store unreachable" in orjson.loads(err.value.read())["checks"]["curate"]["detail"]
        progress.ok()
        assert urllib.request.urlopen(server.url + "/health", timeout=10).status == 200
    finally:
        server.stop()


def test_retry_counts_healing_faults_and_raises_data_faults():
    import logging

    from kernel.retry import retry_forever
    from kernel.warehouse import WarehouseError

    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("store down")
        return "done"

    before = metrics.RETRIES.labels("flaky op", "store")._value.get()
    assert asyncio.run(retry_forever("flaky op", flaky, log=logging.getLogger("t"), first_delay=0.01)) == "done"
    assert metrics.RETRIES.labels("flaky op", "store")._value.get() - before == 2

    async def bad_rows():
        raise WarehouseError("Code: 27. DB::Exception: Cannot parse input (CANNOT_PARSE_INPUT_ASSERTION_FAILED)")

    with pytest.raises(WarehouseError):
        asyncio.run(retry_forever("bad rows", bad_rows, log=logging.getLogger("t"), first_delay=0.01,
                                  data_faults="raise"))


@pytest.mark.integration
def test_lag_sampler_reads_committed_offsets_on_the_real_broker(settings):
    assert _lag_of_ten_in_one_batch_committed_at_4(settings.kafka) == 6


@pytest.mark.integration
def test_lag_sampler_is_right_on_the_memory_storage_too(memory_broker):
    from dataclasses import replace

    from kernel.broker import ensure_topics
    from kernel.settings import load_settings

    kafka = replace(load_settings({}).kafka, bootstrap=memory_broker.bootstrap)
    asyncio.run(ensure_topics(kafka))
    assert _lag_of_ten_in_one_batch_committed_at_4(kafka) == 6


def _lag_of_ten_in_one_batch_committed_at_4(kafka) -> int:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    async def go():
        kw = kafka.aiokafka_kwargs()
        producer = AIOKafkaProducer(**kw, acks="all", linger_ms=50)
        await producer.start()
        # one record batch of 10: the embedded broker reports its end as 1 (base offset + 1)
        futs = [await producer.send("retrain.requests", b"x%d" % i, partition=0) for i in range(10)]
        for f in futs:
            await f
        await producer.stop()
        consumer = AIOKafkaConsumer(**kw, group_id="lag-test", enable_auto_commit=False)
        await consumer.start()
        tp = TopicPartition("retrain.requests", 0)
        consumer.assign([tp])
        await consumer.commit({tp: 4})
        await consumer.stop()
        admin = AIOKafkaAdminClient(**kw)
        await admin.start()
        reader = AIOKafkaConsumer(**kw, group_id=None, enable_auto_commit=False)
        await reader.start()
        try:
            return await metrics.sample_lag(admin, reader, "lag-test", ["retrain.requests"])
        finally:
            await reader.stop()
            await admin.close()

    lag = asyncio.run(go())
    assert metrics.COMMITTED_OFFSET.labels("lag-test", "retrain.requests", "0")._value.get() == 4
    return lag[("retrain.requests", 0)]


@pytest.mark.integration
def test_a_running_worker_reports_real_values(settings, tmp_path):
    from tests.conftest import free_port
    from tests.helpers.kafka import publish, tl
    from tests.worker import WorkerProcess, wait_for

    port = free_port()
    mix = [b"\x00\xff not json", tl("k1", "TESCO STORES 3341"), tl("k2", "UBER *TRIP", output="transport"),
           tl("d1", "tesco stores 3341"), tl("o1", "PAYPAL", output="crypto"), tl("l1", "CORNER SHOP", confidence=0.1),
           tl("k1", "A DIFFERENT INPUT FOR K1")]                                    # conflict
    env = {"FLYWHEEL_METRICS_PORT": str(port), "FLYWHEEL_LAG_SAMPLE_SECONDS": "0.5"}
    with WorkerProcess(settings, tmp_path / "worker.log", extra_env=env) as worker:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(publish(settings.kafka.servers, mix))
        store = worker.store()
        wait_for(lambda: store.scalar("SELECT count() FROM curation_events FINAL") == len(mix), what="curated")

        def settled():
            s = scrape(url)
            lag = [v for (n, ls), v in s.items() if n == "flywheel_consumer_lag" and dict(ls)["topic"] == "teacher.logs"]
            return s if (lag and sum(lag) == 0 and total(s, "flywheel_events_out_total") == len(mix)
                         and total(s, "flywheel_committed_offset", topic="teacher.logs") == len(mix)) else None

        s = wait_for(settled, timeout=30, what="offsets committed and lag 0 on the scrape")
        lags = {(dict(ls)["topic"], dict(ls)["partition"]) for (n, ls), v in s.items() if n == "flywheel_consumer_lag"}
        assert {t for t, _ in lags} == {"teacher.logs", "live.requests"}
        assert total(s, "flywheel_events_in_total", stage="curate", topic="teacher.logs") == len(mix)
        out = {dict(ls)["outcome"]: v for (n, ls), v in s.items()
               if n == "flywheel_events_out_total" and dict(ls)["stage"] == "curate"}
        assert out == {"invalid": 1, "kept": 2, "exact_dupe": 1, "off_schema": 1, "low_conf": 1, "conflict": 1}
        assert total(s, "flywheel_dead_letters_total", source_topic="teacher.logs") == 1
        assert total(s, "flywheel_conflicts_total", task="transactions") == 1
        assert total(s, "flywheel_batch_write_seconds_count", stage="curate") >= 1
        assert total(s, "flywheel_batch_write_seconds_sum", stage="curate") > 0
        assert total(s, "flywheel_committed_offset", topic="teacher.logs") == len(mix)
        assert total(s, "process_resident_memory_bytes") > 10e6
        health = orjson.loads(urllib.request.urlopen(url + "/health", timeout=10).read())
        assert health["status"] == "ok" and set(health["checks"]) >= {"curate", "broker"}


@pytest.mark.integration
def test_the_training_worker_serves_metrics_while_it_runs(settings, store, tasks_dir):
    import threading
    from dataclasses import replace

    from kernel.tasks import load_tasks
    from tests.conftest import free_port
    from training.train.worker import WorkerOptions, run_worker

    port = free_port()
    s = replace(settings, train_metrics_port=port, lag_sample_seconds=0.5)
    scraped = {}

    def scrape_while_running():
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                page = scrape(f"http://127.0.0.1:{port}")
                if total(page, "flywheel_training_runs_total", status="skipped") >= 1 and \
                        total(page, "flywheel_committed_offset", group="train-metrics-test") >= 1 and \
                        total(page, "flywheel_consumer_lag", group="train-metrics-test") == 0:
                    scraped.update(page)
                    return
            except OSError:
                pass
            time.sleep(0.2)

    async def publish_bad():
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(**s.kafka.aiokafka_kwargs(), acks="all")
        await p.start()
        await p.send_and_wait("retrain.requests", b'{"not": "a request"}')
        await p.stop()

    asyncio.run(publish_bad())
    t = threading.Thread(target=scrape_while_running)
    t.start()
    outcomes = asyncio.run(run_worker(s, load_tasks(tasks_dir), store,
                                      WorkerOptions(group="train-metrics-test", idle_exit_seconds=6)))
    t.join()
    assert [o.status for o in outcomes] == ["skipped"]
    assert scraped, "the training worker's endpoint never showed the request handled and committed"
    assert total(scraped, "flywheel_dead_letters_total", source_topic="retrain.requests") >= 1
    assert total(scraped, "flywheel_events_in_total", stage="train", topic="retrain.requests") >= 1
